"""Hostile use: subscription bombing, per-IP floods, the honeypot, open redirects, header
injection, HTML injection into pages, and constant-time comparison of secrets."""

from __future__ import annotations

import ast
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from mailing.web.app import create_app
from tests.conftest import drain_worker
from tests.support.helpers import count, subscribe, table_snapshot

VICTIM = "victim@example.org"
SCRIPT = "<script>alert(1)</script>"


def test_one_address_hammered_from_many_ips_gets_at_most_three_emails(
    database, smtp, worker, settings_env
):
    settings_env(rate_limit_per_ip=5)
    app = create_app()
    answers = []
    for n in range(12):
        with TestClient(app, client=(f"198.51.100.{n + 1}", 40000 + n)) as c:
            # Case and spacing variants are the same address.
            email = VICTIM.upper() if n % 2 else f"  {VICTIM} "
            answers += [subscribe(c, email) for _ in range(2)]
    assert {a.status_code for a in answers} == {202}
    assert len(smtp.outbox.wait_for(3)) >= 3
    drain_worker()  # every task the 24 requests queued has run
    assert len(smtp.outbox.messages()) == 3
    assert count("subscriber") == 1


def test_one_ip_hammering_many_addresses_gets_429_with_retry_after(client, settings_env, smtp):
    settings_env(rate_limit_per_ip=5)
    answers = [subscribe(client, f"target{i}@example.org") for i in range(15)]
    assert [a.status_code for a in answers] == [202] * 5 + [429] * 10
    for refused in answers[5:]:
        assert 1 <= int(refused.headers["retry-after"]) <= 60
    form = client.post(
        "/subscriptions",
        data={"email": "form-target@example.org", "consent": "yes"},
        follow_redirects=False,
    )
    assert form.status_code == 429 and form.headers["retry-after"]
    assert count("subscriber") == 5
    drain_worker()
    assert len(smtp.outbox.messages()) == 5


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "form"])
def test_a_filled_honeypot_gets_the_same_answer_and_nothing_happens(client, smtp, as_json):
    before = table_snapshot()
    if as_json:
        bot = subscribe(client, "bot@example.org", website="http://spam.example")
        human = subscribe(client, "human@example.org")
        assert (
            (bot.status_code, bot.json())
            == (human.status_code, human.json())
            == (
                202,
                {"status": "pending"},
            )
        )
    else:
        bot = client.post(
            "/subscriptions",
            data={"email": "bot@example.org", "consent": "yes", "website": "spam"},
            follow_redirects=False,
        )
        assert bot.status_code == 303 and bot.headers["location"] == "/check-your-email"
    drain_worker()
    stored = {"subscriber": 1, "subscriber_theme": 5} if as_json else {}
    after = table_snapshot()
    assert count("subscriber", "WHERE email_key = 'bot@example.org'") == 0
    assert after["subscriber"] == before["subscriber"] + stored.get("subscriber", 0)
    assert all(
        m.to != ["bot@example.org"] and "bot@example.org" not in m.to
        for m in (smtp.outbox.messages())
    )
    assert len(smtp.outbox.messages()) == (1 if as_json else 0)


HOSTILE_TARGETS = [
    "//evil.example",
    "//evil.example/",
    "/\\evil.example",
    "/%2F%2Fevil.example",
    "///evil.example/%2e%2e",
    "/admin/login?next=//evil.example",
    "/admin/login?next=https://evil.example/admin",
    "/admin/login?next=/\\evil.example",
    "/admin/login?next=/admin//evil.example",
    "/admin/login?next=%2F%2Fevil.example",
    "/admin?next=//evil.example",
    "/admin/drafts?next=https://evil.example",
    "/check-your-email?next=//evil.example",
    "/?next=https://evil.example",
]


def _assert_local(location: str) -> None:
    parts = urlsplit(location)
    assert parts.netloc in ("", "testserver"), location
    assert not location.startswith(("//", "/\\", "\\")), location
    assert "evil.example" not in parts.netloc, location


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
def test_no_open_redirect_on_get(client, target):
    answer = client.get(target, follow_redirects=False)
    assert answer.status_code < 500
    if 300 <= answer.status_code < 400:
        _assert_local(answer.headers["location"])


PAGES = ["/", "/check-your-email", "/erasure-requests", "/admin", "/admin/login"]
REDIRECT_PARAMS = "next=//evil.example&redirect=https://evil.example&url=/\\evil.example"


def _get_paths() -> list[str]:
    """Every GET route in the schema (path parameters filled in) and every page."""
    paths = create_app().openapi()["paths"]
    found = [p for p, ops in paths.items() if "get" in ops]
    filled = [p.replace("{", "").replace("}", "") if "{" in p else p for p in found]
    return sorted(set(filled) | set(PAGES))


@pytest.mark.parametrize("path", _get_paths())
def test_no_route_follows_a_redirect_parameter_off_site(client, path):
    for method in ("GET", "POST"):
        answer = client.request(method, f"{path}?{REDIRECT_PARAMS}", follow_redirects=False)
        assert answer.status_code < 500, (method, path)
        if 300 <= answer.status_code < 400:
            _assert_local(answer.headers["location"])


@pytest.mark.parametrize(
    "next_value",
    ["//evil.example", "https://evil.example", "/\\evil.example", "/admin//evil.example", ""],
)
def test_signing_in_never_redirects_off_site(client, session, next_value):
    from mailing.staff.members import create_staff
    from mailing.states import StaffRole

    create_staff(session, "staffer@example.org", StaffRole.EDITOR, password="a long passphrase 1")
    session.commit()
    form = client.get(f"/admin/login?next={next_value}")
    csrf = client.cookies.get("login_csrf") or next(
        (v for k, v in client.cookies.items() if "csrf" in k), ""
    )
    answer = client.post(
        "/admin/login",
        data={
            "email": "staffer@example.org",
            "password": "a long passphrase 1",
            "next": next_value,
            "csrf_token": csrf,
        },
        follow_redirects=False,
    )
    assert form.status_code == 200
    assert answer.status_code == 303, answer.text
    _assert_local(answer.headers["location"])
    assert answer.headers["location"].startswith("/admin")


def test_a_foreign_referer_never_becomes_a_redirect(client):
    answer = client.post(
        "/subscriptions",
        data={"email": "ref@example.org", "consent": "yes"},
        headers={"referer": "https://evil.example/page"},
        follow_redirects=False,
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/check-your-email"


INJECTIONS = ["\r\nBcc: spam@evil.example", "\nSubject: hacked", "x\rTo: spam@evil.example"]


@pytest.mark.parametrize("injection", INJECTIONS, ids=["crlf", "lf", "cr"])
@pytest.mark.parametrize("field", ["email", "source", "website", "themes"])
@pytest.mark.parametrize("as_json", [True, False], ids=["json", "form"])
def test_a_line_break_in_any_signup_field_is_refused_and_nothing_is_sent(
    client, smtp, field, injection, as_json
):
    body: dict = {"email": "injected@example.org", "consent": True if as_json else "yes"}
    value = f"injected@example.org{injection}" if field == "email" else f"x{injection}"
    body[field] = [f"healthy-minds{injection}"] if field == "themes" else value
    before = table_snapshot()
    if as_json:
        answer = client.post("/subscriptions", json=body)
    else:
        answer = client.post("/subscriptions", data=body, follow_redirects=False)
    assert answer.status_code == 422, (field, answer.status_code)
    drain_worker()
    assert table_snapshot() == before
    assert smtp.outbox.messages() == []


@pytest.mark.parametrize("injection", INJECTIONS, ids=["crlf", "lf", "cr"])
def test_a_line_break_in_an_erasure_request_sends_nothing(client, smtp, injection):
    subscribe(client, "erasable@example.org")
    smtp.outbox.wait_for(1)
    drain_worker()
    smtp.outbox.clear()
    answer = client.post("/erasure-requests", json={"email": f"erasable@example.org{injection}"})
    assert answer.status_code == 422
    drain_worker()
    assert smtp.outbox.messages() == []


def test_the_re_rendered_signup_form_escapes_what_was_typed(client):
    answer = client.post(
        "/subscriptions",
        data={"email": f"{SCRIPT}@example.org", "source": SCRIPT},  # no consent: re-shown
        headers={"accept": "text/html"},
    )
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("text/html")
    assert SCRIPT not in answer.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;@example.org" in answer.text


def test_the_erasure_form_escapes_what_was_typed(client):
    answer = client.post(
        "/erasure-requests", data={"email": f"{SCRIPT}@x"}, headers={"accept": "text/html"}
    )
    assert answer.status_code == 422
    assert SCRIPT not in answer.text


@pytest.mark.parametrize(
    "path",
    [
        f"/confirm/{SCRIPT}",
        f"/unsubscribe/{SCRIPT}",
        f"/preferences/{SCRIPT}",
        f"/erase/{SCRIPT}",
        f"/my-data/{SCRIPT}",
        f"/{SCRIPT}",
        f"/admin/login?next={SCRIPT}",
        f"/?source={SCRIPT}",
    ],
)
def test_no_page_echoes_a_path_or_query_unescaped(client, path):
    answer = client.get(path)
    assert answer.status_code < 500
    assert SCRIPT not in answer.text
    assert "<script>alert" not in answer.text


def test_a_staff_login_form_escapes_the_address_typed(client):
    client.get("/admin/login")
    csrf = next((v for k, v in client.cookies.items() if "csrf" in k), "")
    answer = client.post(
        "/admin/login",
        data={"email": f"{SCRIPT}@example.org", "password": "wrong", "csrf_token": csrf},
    )
    assert answer.status_code in (401, 403, 422)
    assert SCRIPT not in answer.text


# --- Constant-time comparisons --------------------------------------------------------------

MAILING = Path(__file__).resolve().parents[2] / "mailing"
# (file, function, names holding a secret or a digest of one) for every place a value from a
# request is checked against a secret.
SECRET_CHECKS = [
    ("subscribers/records.py", "matches_link_check", {"check", "c"}),
    ("staff/apitokens.py", "staff_for_token", {"wanted", "token_hash"}),
    ("staff/sessions.py", "csrf_ok", {"supplied", "csrf_token"}),
    ("web/routes/console/signin.py", "login", {"expected", "supplied"}),
]


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)
    }


def _is_sql(node: ast.AST) -> bool:
    # col(Model.field) == value builds a SQL WHERE clause, not a Python comparison.
    return isinstance(node, ast.Call) and getattr(node.func, "id", "") == "col"


@pytest.mark.parametrize(
    ("module", "function", "secrets"), SECRET_CHECKS, ids=[f for _, f, _ in SECRET_CHECKS]
)
def test_secrets_and_token_digests_are_compared_in_constant_time(module, function, secrets):
    tree = ast.parse((MAILING / module).read_text())
    funcs = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == function
    ]
    assert len(funcs) == 1, f"{module}: {function} not found; update SECRET_CHECKS"
    constant_time = [
        call
        for call in ast.walk(funcs[0])
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr == "compare_digest"
        and any(_names(arg) & secrets for arg in call.args)
    ]
    assert constant_time, f"{module}:{function} must compare with hmac.compare_digest"
    for cmp in ast.walk(funcs[0]):
        if isinstance(cmp, ast.Compare) and not _is_sql(cmp.left):
            plain = any(isinstance(op, ast.Eq | ast.NotEq) for op in cmp.ops)
            operands = [cmp.left, *cmp.comparators]
            compares_secret = any(_names(o) & secrets for o in operands)
            against_constant = any(isinstance(o, ast.Constant) for o in operands)
            assert not (plain and compares_secret and not against_constant), (
                f"{module}:{function} line {cmp.lineno} compares a secret with ==/!="
            )
