"""The support desk (issue 24, part 2): admins find one subscriber by their exact address and act
for them with a reason, through the resident's own code paths; every look-up and action audited
with the subscriber's id, never the address."""

from __future__ import annotations

import pytest
from sqlmodel import select

from mailing.db import session_scope
from mailing.models import AuditLog, ErasureLog
from tests.conftest import drain_worker
from tests.support.helpers import count, only_link, subscribe, table_snapshot
from tests.support.residents import confirmed
from tests.support.sending import api_staff as make_staff

MINDS, PLACES = "healthy-minds", "healthy-places"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def audit_details() -> list[str]:
    with session_scope() as s:
        return [row.detail or "" for row in s.exec(select(AuditLog).order_by(AuditLog.id)).all()]


def find(client, token: str, email: str):
    return client.get("/admin/subscribers", params={"email": email}, headers=bearer(token))


def act(client, token: str, sid: int, action: str, **body):
    return client.post(f"/admin/subscribers/{sid}/{action}", json=body, headers=bearer(token))


def test_production_an_admin_finds_one_subscriber_in_any_case_and_unsubscribes_them(
    client, smtp, settings_env
):
    """Every setting at its default but MAILING_ENV=production."""
    from fastapi.testclient import TestClient

    from mailing.web.app import create_app

    settings_env(env="production")
    with TestClient(create_app(), raise_server_exceptions=False) as prod:
        confirmed(prod, smtp, "Resident@Example.net", [MINDS])
        admin = make_staff("admin")
        found = find(prod, admin, "resident@EXAMPLE.NET")
        assert found.status_code == 200
        body = found.json()
        assert body["status"] == "active" and body["themes"] == [MINDS]
        assert body["frequency"] == "immediate"
        assert [e["event"] for e in body["consent"]] == ["requested", "confirmed"]
        assert body["counts"] == {"updates_sent": 0, "summaries_sent": 0}
        assert "Resident@Example.net".lower() not in str(body).lower()
        reason = "Phoned on 3 Dec; wants no more email; she said write to resident@example.net"
        done = act(prod, admin, body["id"], "unsubscribe", reason=reason)
        assert done.status_code == 200 and done.json()["status"] == "unsubscribed"
        assert done.json()["consent"][-1]["channel"] == "support-desk"
    details = audit_details()
    assert details[-2] == f"look-up: subscriber {body['id']}"
    assert details[-1] == (
        f"unsubscribe: subscriber {body['id']}; reason: Phoned on 3 Dec; wants no more email; "
        "she said write to [address removed]"
    )
    assert not any("@" in d for d in details)


@pytest.mark.parametrize(
    ("typed", "status"),
    [
        ("esident@example.net", 404),  # a partial address
        ("resident@example.ne", 404),
        ("%@example.net", 404),  # wildcards are only characters
        ("*@example.net", 404),
        ("resident", 422),
        ("", 422),
    ],
)
def test_only_the_exact_address_finds_anyone_and_every_look_up_is_audited(
    client, smtp, typed, status
):
    confirmed(client, smtp, "resident@example.net", [MINDS])
    admin = make_staff("admin")
    before = len(audit_details())
    answer = find(client, admin, typed)
    assert answer.status_code == status
    assert "id" not in answer.json()
    details = audit_details()
    assert len(details) == before + 1
    assert details[-1].startswith("look-up: ") and "nobody found" in details[-1]
    assert "@" not in details[-1]


@pytest.mark.parametrize("role", ["editor", "sender"])
def test_any_role_but_admin_gets_403_and_nothing_changes(client, smtp, role):
    confirmed(client, smtp, "resident@example.net", [MINDS])
    admin = make_staff("admin")
    sid = find(client, admin, "resident@example.net").json()["id"]
    token = make_staff(role)
    before = table_snapshot()
    assert find(client, token, "resident@example.net").status_code == 403
    assert act(client, token, sid, "erase", reason="asked").status_code == 403
    assert client.get("/admin/subscribers", params={"email": "x@example.net"}).status_code == 401
    assert table_snapshot() == before


@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "   \n "}, {"reason": 5}])
def test_an_action_without_a_reason_is_422_and_changes_nothing(client, smtp, body):
    confirmed(client, smtp, "resident@example.net", [MINDS])
    admin = make_staff("admin")
    sid = find(client, admin, "resident@example.net").json()["id"]
    before = table_snapshot()
    answer = client.post(f"/admin/subscribers/{sid}/erase", json=body, headers=bearer(admin))
    assert answer.status_code == 422
    assert table_snapshot() == before


def test_an_unknown_id_is_404(client):
    admin = make_staff("admin")
    assert act(client, admin, 99999, "unsubscribe", reason="asked").status_code == 404


@pytest.mark.parametrize("subscriber_id", [2**31, 10**30, 0, -1])
def test_an_id_outside_the_tables_range_is_422_not_a_500(client, subscriber_id):
    """PostgreSQL's integer ends at 2**31 - 1: a bigger id never reaches the database."""
    admin = make_staff("admin")
    assert act(client, admin, subscriber_id, "unsubscribe", reason="asked").status_code in {
        404,
        422,
    }


def test_erase_for_them_erases_as_their_own_link_does(client, smtp):
    confirmed(client, smtp, "resident@example.net", [MINDS])
    admin = make_staff("admin")
    sid = find(client, admin, "resident@example.net").json()["id"]
    answer = act(client, admin, sid, "erase", reason="Letter of 1 Dec asking to be forgotten")
    assert answer.status_code == 200 and answer.json() == {"id": sid, "status": "erased"}
    assert count("subscriber") == 0 and count("consent_event") == 0
    assert count("suppression") == 1
    with session_scope() as s:
        assert [e.reason for e in s.exec(select(ErasureLog)).all()] == ["request"]
    assert find(client, admin, "resident@example.net").status_code == 404
    # The same as the resident's own erasure: a fresh sign-up is only asked to confirm.
    assert act(client, admin, sid, "erase", reason="again").status_code == 404


def test_links_are_emailed_to_their_own_address(client, smtp):
    confirmed(client, smtp, "resident@example.net", [MINDS])
    admin = make_staff("admin")
    sid = find(client, admin, "resident@example.net").json()["id"]
    assert act(client, admin, sid, "send-export-link", reason="Asked by phone").status_code == 200
    [mail] = smtp.outbox.wait_for(1)
    assert mail.to == ["resident@example.net"]
    assert client.get(only_link(mail, "my-data")).json()["subscriber"]["email"] == (
        "resident@example.net"
    )
    smtp.outbox.clear()
    assert act(client, admin, sid, "send-erase-link", reason="Asked by phone").status_code == 200
    [mail] = smtp.outbox.wait_for(1)
    assert mail.to == ["resident@example.net"] and only_link(mail, "erase")


def test_resend_confirmation_only_for_a_pending_sign_up(client, smtp):
    assert subscribe(client, "pending@example.net", [PLACES]).status_code == 202
    smtp.outbox.wait_for(1)
    drain_worker()
    smtp.outbox.clear()
    admin = make_staff("admin")
    sid = find(client, admin, "pending@example.net").json()["id"]
    answer = act(client, admin, sid, "resend-confirmation", reason="Lost the first email")
    assert answer.status_code == 200
    [mail] = smtp.outbox.wait_for(1)
    assert mail.to == ["pending@example.net"]
    confirm = client.post(only_link(mail, "confirm"), headers={"accept": "application/json"})
    assert confirm.json()["status"] == "active"
    again = act(client, admin, sid, "resend-confirmation", reason="again")
    assert again.status_code == 409


def test_change_themes_for_them(client, smtp):
    confirmed(client, smtp, "resident@example.net", [MINDS])
    admin = make_staff("admin")
    sid = find(client, admin, "resident@example.net").json()["id"]
    answer = act(client, admin, sid, "themes", reason="Asked by letter", themes=[PLACES])
    assert answer.status_code == 200 and answer.json()["themes"] == [PLACES]
    assert act(client, admin, sid, "themes", reason="x", themes=["nope"]).status_code == 422


def _console(client, session, role: str = "admin"):
    from tests.staff.test_console import signed_in_client

    return signed_in_client(client, session, email=f"{role}@gla.example", role=role)


def test_the_console_page_finds_and_acts_with_a_required_reason(client, smtp, session):
    from tests.staff.test_console import csrf_of

    confirmed(client, smtp, "resident@example.net", [MINDS])
    _console(client, session)
    page = client.get("/admin/subscribers", headers={"accept": "text/html"})
    assert page.status_code == 200 and "Support desk" in page.text
    csrf = csrf_of(page.text)
    found = client.post(
        "/admin/subscribers",
        data={"action": "find", "email": "RESIDENT@example.net", "csrf_token": csrf},
    )
    assert found.status_code == 200 and "Consent history" in found.text
    assert 'name="reason" required' in found.text
    with session_scope() as s:
        from mailing.subscribers import records

        sid = records.by_key(s, "resident@example.net").id
    no_reason = client.post(
        "/admin/subscribers",
        data={"action": "unsubscribe", "subscriber_id": str(sid), "csrf_token": csrf},
    )
    assert no_reason.status_code == 422
    done = client.post(
        "/admin/subscribers",
        data={
            "action": "unsubscribe",
            "subscriber_id": str(sid),
            "reason": "Rang the helpline",
            "csrf_token": csrf,
        },
    )
    assert done.status_code == 200 and "Done: unsubscribe" in done.text
    details = audit_details()
    assert f"unsubscribe: subscriber {sid}; reason: Rang the helpline" in details
    assert not any("@" in d for d in details if d.startswith(("look-up", "unsubscribe")))
    missing = client.post(
        "/admin/subscribers",
        data={"action": "find", "email": "esident@example.net", "csrf_token": csrf},
    )
    assert missing.status_code == 404


def test_the_console_page_is_for_admins_only(client, session):
    _console(client, session, "sender")
    page = client.get("/admin/subscribers", headers={"accept": "text/html"})
    assert page.status_code == 403
