"""Staff accounts the organisation's way (issue 25): invitations by email with a one-time set-up
link, roles and disabling in the console and through the API, the last-admin and own-role rules,
set-up links after a second-factor reset, and passwords for provisioning scripts."""

from __future__ import annotations

import re
from datetime import timedelta

import sqlalchemy as sa
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlmodel import select

from mailing.cli import main
from mailing.models import AuditLog, Staff, StaffInvitation, utcnow
from mailing.staff import totp
from mailing.states import StaffRole
from tests.staff.test_console import csrf_of, signed_in_client
from tests.staff.test_two_factor import _age_factor, _password_only
from tests.support.helpers import count, table_snapshot
from tests.support.staff import PASSWORD, make_staff

WELCOME = re.compile(r"http://testserver(/admin/welcome/[A-Za-z0-9._-]+)")
NEW_PASSWORD = "a long and new pass phrase"


def _admin_token(session, email: str = "admin@gla.example") -> tuple[Staff, dict[str, str]]:
    from mailing.staff.members import create_staff

    admin, token = create_staff(session, email, StaffRole.ADMIN, password=PASSWORD)
    session.commit()
    return admin, {"Authorization": f"Bearer {token}"}


def _link_for(smtp, address: str, number: int = 1) -> str:
    messages = [m for m in smtp.outbox.wait_for(number) if address in m.to]
    assert messages, f"no email to {address}"
    found = WELCOME.findall(messages[-1].part("plain"))
    assert len(set(found)) == 1, found
    assert WELCOME.search(messages[-1].part("html")), "the HTML part has the link too"
    return found[0]


def _choose_password(web, link: str, password: str = NEW_PASSWORD):
    assert web.get(link).status_code == 200
    return web.post(
        link,
        data={"password": password, "password_again": password},
        follow_redirects=False,
    )


def _enrol_totp(web) -> None:
    setup = web.get("/admin/account/totp")
    assert setup.status_code == 200, setup.text
    secret = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', setup.text).group(1).replace(" ", "")
    done = web.post(
        "/admin/account/totp",
        data={
            "csrf_token": csrf_of(setup.text),
            "secret": secret,
            "code": totp.code_at(secret, totp.step_at(utcnow())),
        },
    )
    assert done.status_code == 200, done.text


def _actions() -> list[str]:
    from mailing.db import session_scope

    with session_scope() as s:
        return [a for (a,) in s.execute(sa.select(AuditLog.action).order_by(AuditLog.id))]


# ---------------------------------------------------------------------------------------------
# Invitations


def test_an_invitation_emails_a_one_time_link_to_set_a_password_and_a_factor_in_one_sitting(
    client, session, smtp
):
    _admin, bearer = _admin_token(session)
    answer = client.post(
        "/admin/staff", json={"email": "New.Person@GLA.example", "role": "sender"}, headers=bearer
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["role"] == "sender" and isinstance(body["id"], int)
    link = _link_for(smtp, "new.person@gla.example")
    message = smtp.outbox.messages()[-1]
    assert "password" not in message.part("plain").split("choose a password")[0].lower()
    assert "72 hours" in message.part("plain")

    web = TestClient(client.app)
    chosen = _choose_password(web, link)
    assert chosen.status_code == 303 and chosen.headers["location"] == "/admin/account"
    assert web.get("/admin/staff", follow_redirects=False).status_code == 303  # not yet open
    _enrol_totp(web)
    assert web.get("/admin", follow_redirects=False).status_code == 200

    # Used once: the same link again is refused, and nothing about the account changes.
    again = TestClient(client.app)
    assert again.get(link).status_code == 400
    refused = again.post(link, data={"password": "x" * 20, "password_again": "x" * 20})
    assert refused.status_code == 400
    assert "used" in refused.text
    assert refused.headers["cache-control"] == "no-store"
    assert "staff-invited" in _actions() and "staff-link-used" in _actions()


def test_a_set_up_link_older_than_72_hours_is_refused(client, session, smtp):
    _admin, bearer = _admin_token(session)
    client.post(
        "/admin/staff", json={"email": "late@gla.example", "role": "editor"}, headers=bearer
    )
    link = _link_for(smtp, "late@gla.example")
    session.execute(sa.update(StaffInvitation).values(expires_at=utcnow() - timedelta(seconds=1)))
    session.commit()
    answer = client.post(link, data={"password": NEW_PASSWORD, "password_again": NEW_PASSWORD})
    assert answer.status_code == 400
    assert session.exec(select(Staff).where(Staff.email == "late@gla.example")).one()
    assert count("staff", "WHERE password_hash IS NOT NULL AND email = 'late@gla.example'") == 0


def test_a_forged_link_gets_400_and_a_page_saying_what_to_do(client):
    answer = client.get("/admin/welcome/eyJzIjoxLCJpIjoxfQ.forged")
    assert answer.status_code == 400
    assert "Ask an admin" in answer.text


def test_a_weak_or_mismatched_password_keeps_the_link_usable(client, session, smtp):
    _admin, bearer = _admin_token(session)
    client.post("/admin/staff", json={"email": "w@gla.example", "role": "editor"}, headers=bearer)
    link = _link_for(smtp, "w@gla.example")
    assert (
        client.post(link, data={"password": "short", "password_again": "short"}).status_code == 422
    )
    mismatched = client.post(link, data={"password": NEW_PASSWORD, "password_again": "other"})
    assert mismatched.status_code == 422
    assert _choose_password(TestClient(client.app), link).status_code == 303


def test_bad_invitations_get_a_clear_4xx_and_change_nothing(client, session):
    _admin, bearer = _admin_token(session)
    make_staff(session, "known@gla.example")
    before = table_snapshot()
    for body, status in (
        ({"email": "x@gla.example", "role": "owner"}, 422),
        ({"email": "not an address", "role": "editor"}, 422),
        ({"email": "x@gla.example"}, 422),
        ({"email": "KNOWN@gla.example", "role": "editor"}, 409),
        ({"email": "x@gla.example", "role": "editor", "extra": 1}, 422),
    ):
        answer = client.post("/admin/staff", json=body, headers=bearer)
        assert answer.status_code == status, (body, answer.text)
        assert "detail" in answer.json()
    assert table_snapshot() == before


def test_only_admins_invite_or_change_staff(client, session):
    from mailing.staff.members import create_staff

    sender, token = create_staff(session, "s@gla.example", StaffRole.SENDER, password=PASSWORD)
    session.commit()
    bearer = {"Authorization": f"Bearer {token}"}
    assert (
        client.post(
            "/admin/staff", json={"email": "x@gla.example", "role": "editor"}, headers=bearer
        ).status_code
        == 403
    )
    assert (
        client.patch(
            f"/admin/staff/{sender.id}", json={"role": "admin"}, headers=bearer
        ).status_code
        == 403
    )
    assert (
        client.post("/admin/staff", json={"email": "x@gla.example", "role": "editor"}).status_code
        == 401
    )


# ---------------------------------------------------------------------------------------------
# Roles and disabling through the API


def test_an_admin_changes_a_role_and_disables_someone_and_each_change_is_audited(client, session):
    _admin, bearer = _admin_token(session)
    from mailing.staff.members import create_staff

    editor, editor_token = create_staff(session, "e@gla.example", StaffRole.EDITOR)
    session.commit()
    changed = client.patch(f"/admin/staff/{editor.id}", json={"role": "sender"}, headers=bearer)
    assert changed.status_code == 200 and changed.json()["role"] == "sender"
    disabled = client.patch(f"/admin/staff/{editor.id}", json={"disabled": True}, headers=bearer)
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    gone = client.get("/admin/stats", headers={"Authorization": f"Bearer {editor_token}"})
    assert gone.status_code == 401
    assert _actions()[-2:] == ["staff-role-changed", "staff-disabled"]


def test_an_unknown_role_gets_422_and_changes_nothing(client, session):
    _admin, bearer = _admin_token(session)
    editor = make_staff(session, "e@gla.example")
    before = table_snapshot()
    for body in ({"role": "owner"}, {"role": ["admin"]}, {"role": 3}, {"disabled": "maybe"}):
        answer = client.patch(f"/admin/staff/{editor.id}", json=body, headers=bearer)
        assert answer.status_code == 422, body
    assert (
        client.patch("/admin/staff/999999", json={"role": "editor"}, headers=bearer).status_code
        == 404
    )
    assert table_snapshot() == before


def test_the_last_admin_cannot_be_demoted_or_disabled_but_one_of_two_can(client, session):
    admin, bearer = _admin_token(session)
    demote = client.patch(f"/admin/staff/{admin.id}", json={"role": "editor"}, headers=bearer)
    assert demote.status_code == 409 and "last admin" in demote.json()["detail"]
    other, other_bearer = _admin_token(session, "admin2@gla.example")
    assert (
        client.patch(
            f"/admin/staff/{admin.id}", json={"disabled": True}, headers=other_bearer
        ).status_code
        == 200
    )
    # Now `other` is the last enabled admin: it cannot step down.
    last = client.patch(f"/admin/staff/{other.id}", json={"role": "sender"}, headers=other_bearer)
    assert last.status_code == 409
    session.refresh(other)
    assert other.role == StaffRole.ADMIN


def test_nobody_disables_themselves(client, session):
    admin, bearer = _admin_token(session)
    _admin_token(session, "admin2@gla.example")
    answer = client.patch(f"/admin/staff/{admin.id}", json={"disabled": True}, headers=bearer)
    assert answer.status_code == 409
    session.refresh(admin)
    assert admin.disabled_at is None


def test_no_one_raises_their_own_role():
    from mailing.errors import Forbidden
    from mailing.staff.members import change_member

    me = Staff(id=1, email="me@gla.example", role=StaffRole.EDITOR, token_hash="x")
    try:
        change_member(None, me, me, role=StaffRole.ADMIN)  # type: ignore[arg-type]
    except Forbidden as refused:
        assert "raise your own role" in refused.message
    else:
        raise AssertionError("raising one's own role went through")


# ---------------------------------------------------------------------------------------------
# The console page


def test_the_console_invites_and_changes_roles_with_a_recent_factor_only(client, session, smtp):
    signed_in_client(client, session, "admin@gla.example", "admin")
    page = client.get("/admin/staff/invite")
    assert page.status_code == 200
    csrf = csrf_of(page.text)
    _age_factor()
    asked = client.post(
        "/admin/staff/invite", data={"csrf_token": csrf, "email": "c@gla.example", "role": "editor"}
    )
    assert asked.status_code == 401 and "Confirm it is you" in asked.text
    assert count("staff") == 1
    from tests.support.staff import next_code

    done = client.post(
        "/admin/staff/invite",
        data={
            "csrf_token": csrf,
            "email": "c@gla.example",
            "role": "editor",
            "second_factor_code": next_code("admin@gla.example"),
        },
    )
    assert done.status_code == 200 and "The invitation is sent" in done.text
    assert "Invited" in done.text
    _link_for(smtp, "c@gla.example")
    member = session.exec(select(Staff).where(Staff.email == "c@gla.example")).one()
    bad = client.post(f"/admin/staff/{member.id}/role", data={"csrf_token": csrf, "role": "owner"})
    assert bad.status_code == 422
    moved = client.post(
        f"/admin/staff/{member.id}/role", data={"csrf_token": csrf, "role": "sender"}
    )
    assert moved.status_code == 200 and "The change is saved" in moved.text
    session.refresh(member)
    assert member.role == StaffRole.SENDER
    rows = session.exec(select(AuditLog).where(AuditLog.action == "staff-role-changed")).all()
    assert len(rows) == 1 and rows[0].client_ip == "testclient"


def test_an_editor_cannot_see_or_use_the_staff_pages(client, session):
    signed_in_client(client, session, "editor@gla.example", "editor")
    assert client.get("/admin/staff/invite").status_code == 403


# ---------------------------------------------------------------------------------------------
# Second-factor reset: a link, never the password alone


def test_after_reset_2fa_the_password_alone_cannot_enrol_but_the_emailed_link_can(
    client, session, smtp
):
    signed_in_client(client, session, "editor@gla.example", "editor")
    result = CliRunner().invoke(main, ["staff", "reset-2fa", "editor@gla.example"])
    assert result.exit_code == 0, result.output
    link = _link_for(smtp, "editor@gla.example")

    thief = TestClient(client.app)
    step = _password_only(thief, "editor@gla.example")
    assert step.headers["location"].startswith("/admin/account")
    refused = thief.get("/admin/account/totp")
    assert refused.status_code == 403 and "Use the link we emailed you" in refused.text
    assert count("staff_factor") == 0

    owner = TestClient(client.app)
    assert _choose_password(owner, link).status_code == 303
    _enrol_totp(owner)
    assert count("staff_factor") == 1


def test_the_console_sends_a_new_set_up_link_which_clears_the_factors(client, session, smtp):
    signed_in_client(client, session, "admin@gla.example", "admin")
    editor = make_staff(session, "editor@gla.example")
    from tests.support.staff import give_totp

    give_totp("editor@gla.example")
    csrf = csrf_of(client.get("/admin/staff").text)
    answer = client.post(f"/admin/staff/{editor.id}/enrolment-link", data={"csrf_token": csrf})
    assert answer.status_code == 200 and "A new set-up link is sent" in answer.text
    assert _link_for(smtp, "editor@gla.example")
    assert count("staff_factor", f"WHERE staff_id = {editor.id}") == 0


# ---------------------------------------------------------------------------------------------
# Provisioning scripts: a password from stdin or a file, never an argument


def test_staff_create_takes_a_password_from_stdin_or_a_file(database, tmp_path):
    runner = CliRunner()
    from_stdin = runner.invoke(
        main,
        ["staff", "create", "a@gla.example", "--role", "editor", "--password-stdin"],
        input=f"{PASSWORD}\n",
    )
    assert from_stdin.exit_code == 0, from_stdin.output
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    from_file = runner.invoke(
        main,
        ["staff", "create", "b@gla.example", "--role", "editor", "--password-file", str(secret)],
    )
    assert from_file.exit_code == 0, from_file.output
    assert count("staff", "WHERE password_hash IS NOT NULL") == 2
    assert count("staff_invitation") == 0
    weak = runner.invoke(
        main,
        ["staff", "create", "c@gla.example", "--role", "editor", "--password-stdin"],
        input="short\n",
    )
    assert weak.exit_code == 1 and count("staff") == 2
    both = runner.invoke(
        main,
        [
            "staff",
            "create",
            "d@gla.example",
            "--role",
            "editor",
            "--password-stdin",
            "--password-file",
            str(secret),
        ],
        input=PASSWORD,
    )
    assert both.exit_code != 0 and count("staff") == 2


def test_staff_create_without_a_password_emails_an_invitation(database, smtp, worker):
    result = CliRunner().invoke(main, ["staff", "create", "i@gla.example", "--role", "sender"])
    assert result.exit_code == 0, result.output
    assert len(result.output.strip().splitlines()[-1]) > 30  # the API token, alone, last
    assert _link_for(smtp, "i@gla.example")


# ---------------------------------------------------------------------------------------------
# End to end on the production defaults


def test_production_invite_set_up_and_role_change_end_to_end(
    database, smtp, worker, session, settings_env
):
    from mailing.web.app import create_app

    settings_env(env="production")
    created = CliRunner().invoke(
        main,
        ["staff", "create", "first@gla.example", "--role", "admin", "--password-stdin"],
        input=PASSWORD,
    )
    assert created.exit_code == 0, created.output
    bearer = {"Authorization": f"Bearer {created.output.strip().splitlines()[-1]}"}
    with TestClient(create_app(), base_url="https://testserver") as web:
        invited = web.post(
            "/admin/staff",
            json={"email": "colleague@gla.example", "role": "editor"},
            headers=bearer,
        )
        assert invited.status_code == 201, invited.text
        message = smtp.outbox.wait_for(1)[-1]
        link = re.search(r"http://testserver(/admin/welcome/\S+)", message.part("plain")).group(1)
        newcomer = TestClient(web.app, base_url="https://testserver")
        chosen = _choose_password(newcomer, link)
        assert chosen.status_code == 303 and "Secure" in chosen.headers["set-cookie"]
        _enrol_totp(newcomer)
        assert newcomer.get("/admin", follow_redirects=False).status_code == 200
        promoted = web.patch(
            f"/admin/staff/{invited.json()['id']}", json={"role": "sender"}, headers=bearer
        )
        assert promoted.status_code == 200 and promoted.json()["role"] == "sender"
        assert (
            web.patch(
                f"/admin/staff/{invited.json()['id']}", json={"role": "boss"}, headers=bearer
            ).status_code
            == 422
        )


# ---------------------------------------------------------------------------------------------
# Scoped API tokens


def _token(session, email: str, role: StaffRole, scope: str) -> tuple[Staff, dict[str, str]]:
    from mailing.staff import apitokens
    from mailing.staff.members import create_staff

    member, _ = create_staff(session, email, role)
    token = apitokens.issue_token(session, member, scope)
    session.commit()
    return member, {"Authorization": f"Bearer {token}"}


def _draft(client, bearer) -> int:
    made = client.post(
        "/admin/updates",
        json={"subject": "S", "body": "B", "themes": ["healthy-minds"]},
        headers=bearer,
    )
    assert made.status_code == 201, made.text
    return made.json()["id"]


def test_a_read_token_reads_a_draft_token_drafts_and_only_a_send_token_sends(client, session):
    _, read = _token(session, "r@gla.example", StaffRole.SENDER, "read")
    _, draft = _token(session, "d@gla.example", StaffRole.SENDER, "draft")
    _, send = _token(session, "s@gla.example", StaffRole.SENDER, "send")
    assert client.get("/admin/stats", headers=read).status_code == 200
    refused = client.post(
        "/admin/updates", json={"subject": "S", "body": "B", "themes": []}, headers=read
    )
    assert refused.status_code == 403 and "scope is read" in refused.json()["detail"]
    update_id = _draft(client, draft)
    before = table_snapshot()
    assert client.post(f"/admin/updates/{update_id}/send", headers=draft).status_code == 403
    assert table_snapshot() == before
    sent = client.post(f"/admin/updates/{update_id}/send", headers=send)
    assert sent.status_code == 202, sent.text
    rows = session.exec(select(AuditLog).where(AuditLog.action == "sent")).all()
    assert [r.update_id for r in rows] == [update_id]
    assert rows[0].detail.endswith(", by API token")


def test_sending_by_token_can_be_turned_off(client, session, settings_env):
    settings_env(api_send_by_token="false")
    _, send = _token(session, "s@gla.example", StaffRole.SENDER, "send")
    update_id = _draft(client, send)  # drafting still works
    answer = client.post(f"/admin/updates/{update_id}/send", headers=send)
    assert answer.status_code == 403 and "MAILING_API_SEND_BY_TOKEN" in answer.json()["detail"]
    later = client.post(
        f"/admin/updates/{update_id}/schedule",
        json={"send_at": (utcnow() + timedelta(days=1)).isoformat()},
        headers=send,
    )
    assert later.status_code == 403
    assert count("audit_log", "WHERE action IN ('sent', 'scheduled')") == 0


def test_staff_token_takes_a_scope(database):
    from mailing.staff.members import find_staff

    CliRunner().invoke(main, ["staff", "create", "t@gla.example", "--role", "sender"])
    result = CliRunner().invoke(main, ["staff", "token", "t@gla.example", "--scope", "read"])
    assert result.exit_code == 0, result.output
    from mailing.db import session_scope

    with session_scope() as s:
        assert find_staff(s, "t@gla.example").token_scope == "read"
    bad = CliRunner().invoke(main, ["staff", "token", "t@gla.example", "--scope", "all"])
    assert bad.exit_code == 2
