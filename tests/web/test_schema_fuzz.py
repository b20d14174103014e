"""schemathesis against the app's own OpenAPI schema: every operation, fuzzed in-process over
ASGI, never answers 5xx. Staff operations are called with a real admin token, so they are
fuzzed past their 401. Every operation that takes a body is also sent hostile JSON: nested
tens of thousands deep, huge numbers, lone surrogates, NaN, and random shapes of the right keys."""

from __future__ import annotations

import json
import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from mailing.web.app import create_app

schema = schemathesis.openapi.from_asgi("/openapi.json", create_app())


def _admin_token() -> str:
    from mailing.db import session_scope
    from mailing.staff.members import create_staff
    from mailing.states import StaffRole

    with session_scope() as session:
        _, token = create_staff(session, f"fuzz-{uuid.uuid4().hex}@example.org", StaffRole.ADMIN)
    return token


def test_the_schema_lists_every_public_and_staff_operation():
    # Guards the test below against fuzzing an empty or partial schema.
    paths = {result.ok().path for result in schema.get_all_operations()}
    assert {"/subscriptions", "/erasure-requests", "/admin/updates"} <= paths
    assert any(p.startswith("/confirm/") for p in paths)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_operation_answers_5xx_to_any_input(case, database, smtp, worker):
    headers = {"Authorization": f"Bearer {_admin_token()}"}  # public operations ignore it
    case.call_and_validate(headers=headers, checks=[not_a_server_error])


KEYS = ["email", "themes", "consent", "action", "subject", "body", "to", "website", "source"]
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50)


def _deep(depth: int, opening: bytes, closing: bytes, leaf: bytes = b"") -> bytes:
    return opening * depth + leaf + closing * depth


HOSTILE_JSON = st.one_of(
    st.integers(33, 30_000).map(lambda d: _deep(d, b"[", b"]")),
    st.integers(33, 6_000).map(lambda d: _deep(d, b'{"themes":', b"}", b"1")),
    st.integers(33, 20_000).map(
        lambda d: (
            b'{"email": "a@example.org", "consent": true, "themes": ' + _deep(d, b"[", b"]") + b"}"
        )
    ),
    st.recursive(
        SCALARS,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner),
        max_leaves=20,
    ).map(lambda value: json.dumps(value).encode()),
    st.sampled_from(
        [
            b"[" * 50_000,
            b"1e999999",
            b"NaN",
            b'"\\ud800"',
            b'{"email": "\\ud800@example.org", "consent": true}',
            b'{"email": "a@example.org\\u0000", "consent": true}',
            b'{"themes": ' + b"9" * 5_000 + b"}",
            b'{"email": "a@example.org", "email": ["b@example.org"], "consent": true}',
            b'{"action": {"action": "export"}}',
            b"\xef\xbb\xbf{}",
        ]
    ),
)


@pytest.mark.slow
@schema.include(method=["POST", "PATCH"]).parametrize()
@schema.given(hostile=HOSTILE_JSON)
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    phases=[Phase.generate],  # the schema's own examples are sent by the test above
)
def test_no_operation_answers_5xx_to_nested_or_hostile_json(case, hostile, database, smtp, worker):
    case.body = hostile
    case.media_type = "application/json"
    headers = {"Authorization": f"Bearer {_admin_token()}", "Content-Type": "application/json"}
    case.call_and_validate(headers=headers, checks=[not_a_server_error])
