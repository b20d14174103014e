"""schemathesis against the app's own OpenAPI schema: every operation, fuzzed in-process over
ASGI, never answers 5xx. Staff operations are called with a real admin token, so they are
fuzzed past their 401."""

from __future__ import annotations

import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
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
