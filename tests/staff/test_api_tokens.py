"""Staff API tokens expire after MAILING_API_TOKEN_DAYS, can be replaced from the command line
and revoked in the console, and record their last use (issue 14)."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from click.testing import CliRunner

from mailing.cli import main
from mailing.models import Staff, utcnow
from tests.staff.test_console import csrf_of, sign_in
from tests.support.helpers import count
from tests.support.sending import api_staff as make_staff
from tests.support.staff import make_staff as make_console_staff


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _issued(days_ago: float) -> None:
    from mailing.db import session_scope

    with session_scope() as s:
        s.execute(sa.update(Staff).values(token_created_at=utcnow() - timedelta(days=days_ago)))


def test_a_token_past_its_days_gets_401_saying_it_expired(client):
    token = make_staff("editor")
    assert client.get("/admin/stats", headers=bearer(token)).status_code == 200
    _issued(89.9)
    assert client.get("/admin/stats", headers=bearer(token)).status_code == 200
    _issued(90.01)
    answer = client.get("/admin/stats", headers=bearer(token))
    assert answer.status_code == 401
    assert "expired" in answer.json()["detail"]
    assert answer.headers["www-authenticate"].startswith("Bearer")


def test_the_token_lifetime_follows_the_setting(client, settings_env):
    settings_env(api_token_days=7)
    token = make_staff("editor")
    _issued(6.9)
    assert client.get("/admin/stats", headers=bearer(token)).status_code == 200
    _issued(7.1)
    assert client.get("/admin/stats", headers=bearer(token)).status_code == 401


def test_using_a_token_records_when_it_was_last_used(client, session):
    token = make_staff("editor")
    assert session.exec(sa.select(Staff.token_last_used_at)).scalar_one() is None
    client.get("/admin/stats", headers=bearer(token))
    session.expire_all()
    assert session.exec(sa.select(Staff.token_last_used_at)).scalar_one() is not None


def test_staff_token_issues_a_new_token_and_the_old_one_stops(client):
    old = make_staff("editor", "editor@gla.example")
    _issued(200)  # even an expired token's owner can be given a new one
    result = CliRunner().invoke(main, ["staff", "token", "Editor@gla.example"])
    assert result.exit_code == 0, result.output
    new = result.output.strip().splitlines()[-1]
    assert new and " " not in new and new != old
    assert client.get("/admin/stats", headers=bearer(old)).status_code == 401
    assert client.get("/admin/stats", headers=bearer(new)).status_code == 200
    assert count("audit_log", "WHERE action = 'api-token-issued'") == 1
    unknown = CliRunner().invoke(main, ["staff", "token", "nobody@gla.example"])
    assert unknown.exit_code == 1
    assert "nobody" not in unknown.output


def test_an_admin_sees_token_dates_and_revokes_a_token_in_the_console(client, session):
    token = make_staff("editor", "editor@gla.example")
    client.get("/admin/stats", headers=bearer(token))
    make_console_staff(session, "admin@gla.example", "admin")
    sign_in(client, "admin@gla.example")
    page = client.get("/admin/staff")
    assert "Expires" in page.text and "Last used" in page.text
    editor_id = session.exec(
        sa.select(Staff.id).where(Staff.email == "editor@gla.example")
    ).scalar_one()
    answer = client.post(
        f"/admin/staff/{editor_id}/revoke-token",
        data={"csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert client.get("/admin/stats", headers=bearer(token)).status_code == 401
    assert "Revoked" in client.get("/admin/staff").text
    assert "api-token-revoked" in client.get("/admin/audit").text


def test_revoking_needs_an_admin_and_the_csrf_token(client, session):
    token = make_staff("editor", "other@gla.example")
    make_console_staff(session, "sender@gla.example", "sender")
    sign_in(client, "sender@gla.example")
    csrf = csrf_of(client.get("/admin").text)
    other = session.exec(sa.select(Staff.id).where(Staff.email == "other@gla.example")).scalar_one()
    assert (
        client.post(f"/admin/staff/{other}/revoke-token", data={"csrf_token": csrf}).status_code
        == 403
    )
    assert client.post(f"/admin/staff/{other}/revoke-token", data={}).status_code == 403
    assert client.get("/admin/stats", headers=bearer(token)).status_code == 200
