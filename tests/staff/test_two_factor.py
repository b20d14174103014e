"""Second factors for console sign-in (issue 14): TOTP drift and replay, recovery codes,
lockout, enrolment at first sign-in, re-checks before dangerous actions, session timeouts,
hostile answers, the commands, and the audit trail with client IPs."""

from __future__ import annotations

import re
from datetime import timedelta

import sqlalchemy as sa
from click.testing import CliRunner
from fastapi.testclient import TestClient

from mailing.cli import main
from mailing.models import AuditLog, StaffFactor, StaffRecoveryCode, StaffSession, utcnow
from mailing.staff import factors, signin, totp
from mailing.states import UpdateStatus
from tests.staff.test_console import csrf_of, make_update, sign_in
from tests.support.helpers import count, table_snapshot
from tests.support.staff import PASSWORD, TEST_SECRET, give_totp, make_staff, next_code

# ---------------------------------------------------------------------------------------------
# TOTP: drift and replay


def test_totp_allows_one_step_of_clock_drift_either_way_and_no_more():
    now = utcnow()
    step = totp.step_at(now)
    for offset in (-1, 0, 1):
        code = totp.code_at(TEST_SECRET, step + offset)
        assert totp.matching_step(TEST_SECRET, code, now, None) == step + offset
    for offset in (-3, -2, 2, 3):
        code = totp.code_at(TEST_SECRET, step + offset)
        if code not in {totp.code_at(TEST_SECRET, step + d) for d in (-1, 0, 1)}:
            assert totp.matching_step(TEST_SECRET, code, now, None) is None


def test_a_totp_code_is_accepted_once_only(session):
    staff = make_staff(session, "editor@gla.example")
    give_totp(staff.email)
    code = next_code(staff.email)
    assert factors.check_code(session, staff, code) is not None
    assert factors.check_code(session, staff, code) is None  # the same code again: refused
    # The step before, still inside the drift window, is refused too once a later one was used.
    session.expire_all()
    last = session.exec(sa.select(StaffFactor.totp_last_step)).scalar_one()
    earlier = totp.code_at(TEST_SECRET, last - 1)
    assert factors.check_code(session, staff, earlier) is None


def test_a_replayed_sign_in_code_is_refused(client, session):
    make_staff(session, "editor@gla.example")
    give_totp("editor@gla.example")
    code = next_code("editor@gla.example")
    answers = []
    for _ in range(2):
        other = TestClient(client.app)
        form = other.get("/admin/login")
        step = other.post(
            "/admin/login",
            data={
                "email": "editor@gla.example",
                "password": PASSWORD,
                "csrf_token": csrf_of(form.text),
            },
            follow_redirects=False,
        )
        page = other.get(step.headers["location"])
        answers.append(
            other.post(
                "/admin/login/second-factor",
                data={"csrf_token": csrf_of(page.text), "second_factor_code": code},
                follow_redirects=False,
            )
        )
    assert answers[0].status_code == 303
    assert answers[1].status_code == 401
    assert signin.WRONG_CODE in answers[1].text


# ---------------------------------------------------------------------------------------------
# The sign-in steps


def enrol_first_app(client):
    """A half-open session's first enrolment of an authenticator app: the recovery codes page."""
    setup = client.get("/admin/account/totp")
    secret = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', setup.text).group(1).replace(" ", "")
    return client.post(
        "/admin/account/totp",
        data={
            "csrf_token": csrf_of(setup.text),
            "secret": secret,
            "code": totp.code_at(secret, totp.step_at(utcnow())),
        },
    )


def _password_only(client, email: str, password: str = PASSWORD):
    form = client.get("/admin/login")
    return client.post(
        "/admin/login",
        data={"email": email, "password": password, "csrf_token": csrf_of(form.text)},
        follow_redirects=False,
    )


def test_a_password_alone_opens_nothing_but_the_second_factor_step(client, session):
    make_staff(session, "editor@gla.example")
    give_totp("editor@gla.example")
    answer = _password_only(client, "editor@gla.example")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/admin/login/second-factor")
    for path in ("/admin", "/admin/compose", "/admin/audit", "/admin/account"):
        assert client.get(path, follow_redirects=False).status_code == 303, path
    assert client.get("/admin/login/second-factor").status_code == 200


def test_giving_the_second_factor_replaces_the_session_token(client, session):
    make_staff(session, "editor@gla.example")
    give_totp("editor@gla.example")
    _password_only(client, "editor@gla.example")
    half_open = client.cookies.get("admin_session")
    page = client.get("/admin/login/second-factor")
    answer = client.post(
        "/admin/login/second-factor",
        data={
            "csrf_token": csrf_of(page.text),
            "second_factor_code": next_code("editor@gla.example"),
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert client.cookies.get("admin_session") != half_open
    assert client.get("/admin").status_code == 200
    stale = TestClient(client.app, cookies={"admin_session": half_open})
    assert stale.get("/admin", follow_redirects=False).status_code == 303


def test_wrong_codes_count_towards_the_lockout(client, session):
    staff = make_staff(session, "editor@gla.example")
    give_totp(staff.email)
    _password_only(client, staff.email)
    page = client.get("/admin/login/second-factor")
    csrf = csrf_of(page.text)
    answers = [
        client.post(
            "/admin/login/second-factor",
            data={"csrf_token": csrf, "second_factor_code": "000000"},
            follow_redirects=False,
        )
        for _ in range(signin.MAX_FAILED_SIGN_INS)
    ]
    assert [a.status_code for a in answers[:-1]] == [401] * (signin.MAX_FAILED_SIGN_INS - 1)
    assert answers[-1].status_code == 429
    # Even the right code is refused while locked, and so is the right password.
    right = client.post(
        "/admin/login/second-factor",
        data={"csrf_token": csrf, "second_factor_code": next_code(staff.email)},
        follow_redirects=False,
    )
    assert right.status_code == 429 and "Too many wrong codes" in right.text
    # A right password, from anywhere, leads only to the same locked step.
    again = TestClient(client.app, client=("203.0.113.41", 50000))
    assert _password_only(again, staff.email).status_code == 303
    page = again.get("/admin/login/second-factor")
    locked = again.post(
        "/admin/login/second-factor",
        data={"csrf_token": csrf_of(page.text), "second_factor_code": next_code(staff.email)},
        follow_redirects=False,
    )
    assert locked.status_code == 429 and "Too many wrong codes" in locked.text
    assert count("audit_log", "WHERE action = 'second-factor-failed'") == 7


def test_a_recovery_code_signs_in_once_and_says_how_many_are_left(client, session):
    staff = make_staff(session, "editor@gla.example")
    give_totp(staff.email)
    codes = factors.new_recovery_codes(session, staff)
    session.commit()
    assert len(codes) == 10 and len(set(codes)) == 10
    stored = session.exec(sa.select(StaffRecoveryCode.code_hash)).all()
    assert not any(c.replace("-", "") in str(stored) for c in codes)  # kept hashed only

    _password_only(client, staff.email)
    page = client.get("/admin/login/second-factor")
    used = client.post(
        "/admin/login/second-factor",
        data={"csrf_token": csrf_of(page.text), "second_factor_code": codes[3].upper()},
        follow_redirects=False,
    )
    assert used.status_code == 200
    assert re.search(r'id="recovery-left">9<', used.text)
    assert client.get("/admin").status_code == 200
    assert "recovery-code-used" in client.get("/admin/audit").text

    again = TestClient(client.app)
    _password_only(again, staff.email)
    page = again.get("/admin/login/second-factor")
    refused = again.post(
        "/admin/login/second-factor",
        data={"csrf_token": csrf_of(page.text), "second_factor_code": codes[3]},
        follow_redirects=False,
    )
    assert refused.status_code == 401


def test_hostile_second_factor_answers_get_a_clear_4xx_and_change_nothing(client, session):
    staff = make_staff(session, "editor@gla.example")
    give_totp(staff.email)
    _password_only(client, staff.email)
    page = client.get("/admin/login/second-factor")
    csrf = csrf_of(page.text)
    before = table_snapshot()
    for data in (
        {"second_factor_code": "<script>alert(1)</script>"},
        {"second_factor_code": "1" * 5000},
        {"second_factor_code": "12345"},
        {"credential": "not json"},
        {"credential": "[]"},
        {"credential": '{"id": "AAAA", "response": {}}'},
        {"credential": '{"id": 5}'},
    ):
        answer = client.post(
            "/admin/login/second-factor", data={"csrf_token": csrf, **data}, follow_redirects=False
        )
        assert 400 <= answer.status_code < 500, (data, answer.status_code)
        assert "<script>alert" not in answer.text
    wrong_csrf = client.post(
        "/admin/login/second-factor",
        data={"csrf_token": "forged", "second_factor_code": next_code(staff.email)},
    )
    assert wrong_csrf.status_code == 403
    after = table_snapshot()
    # Only the failure counter and the audit rows of the failures moved.
    assert {k: v for k, v in after.items() if k != "audit_log"} == {
        k: v for k, v in before.items() if k != "audit_log"
    }


def test_passkey_options_need_a_passkey_and_a_session(client, session):
    staff = make_staff(session, "editor@gla.example")
    give_totp(staff.email)
    assert client.post("/admin/passkey/options", follow_redirects=False).status_code == 303
    _password_only(client, staff.email)
    page = client.get("/admin/login/second-factor")
    answer = client.post("/admin/passkey/options", data={"csrf_token": csrf_of(page.text)})
    assert answer.status_code == 404
    assert client.post("/admin/passkey/options", data={"csrf_token": "x"}).status_code == 403


# ---------------------------------------------------------------------------------------------
# Enrolment


def test_first_sign_in_enrols_an_authenticator_app_and_shows_ten_recovery_codes(client, session):
    make_staff(session, "new@gla.example")
    answer = _password_only(client, "new@gla.example")
    assert answer.headers["location"].startswith("/admin/account")
    assert client.get("/admin", follow_redirects=False).status_code == 303
    account = client.get("/admin/account")
    assert "Set up a second factor" in account.text
    setup = client.get("/admin/account/totp")
    assert setup.status_code == 200
    assert "<svg" in setup.text
    secret = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', setup.text).group(1).replace(" ", "")
    csrf = csrf_of(setup.text)

    wrong = client.post(
        "/admin/account/totp",
        data={"csrf_token": csrf, "secret": secret, "code": "000000", "name": "Phone"},
    )
    assert wrong.status_code == 422
    code = totp.code_at(secret, totp.step_at(utcnow()))
    done = client.post(
        "/admin/account/totp",
        data={"csrf_token": csrf, "secret": secret, "code": code, "name": "My phone"},
    )
    assert done.status_code == 200
    codes = re.findall(r"<code>([a-z0-9]{5}-[a-z0-9]{5})</code>", done.text)
    assert len(codes) == 10
    assert client.get("/admin").status_code == 200
    assert "My phone" in client.get("/admin/account").text
    assert "factor-added" in client.get("/admin/audit").text
    # The code used to enrol cannot also sign in.
    assert factors.check_code(session, make_staff_lookup(session, "new@gla.example"), code) is None


def make_staff_lookup(session, email):
    from mailing.staff.members import find_staff

    session.expire_all()
    return find_staff(session, email)


def test_a_password_alone_cannot_add_a_factor_to_someone_who_has_one(client, session):
    make_staff(session, "editor@gla.example")
    give_totp("editor@gla.example")
    _password_only(client, "editor@gla.example")
    page = client.get("/admin/login/second-factor")
    csrf = csrf_of(page.text)
    before = table_snapshot()
    secret = totp.new_secret()
    code = totp.code_at(secret, totp.step_at(utcnow()))
    answer = client.post(
        "/admin/account/totp",
        data={"csrf_token": csrf, "secret": secret, "code": code},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/admin/login/second-factor")
    assert client.get("/admin/account", follow_redirects=False).status_code == 303
    assert table_snapshot() == before


def test_the_only_factor_cannot_be_removed_but_a_second_one_can(client, session):
    staff = make_staff(session, "editor@gla.example")
    sign_in(client, staff.email)
    page = client.get("/admin/account")
    csrf = csrf_of(page.text)
    only = session.exec(sa.select(StaffFactor.id)).scalars().one()
    refused = client.post(f"/admin/account/factors/{only}/remove", data={"csrf_token": csrf})
    assert refused.status_code == 409
    session.add(
        StaffFactor(
            staff_id=staff.id, kind="totp", name="Spare", totp_secret=totp.seal(totp.new_secret())
        )
    )
    session.commit()
    removed = client.post(
        f"/admin/account/factors/{only}/remove", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert removed.status_code == 303
    assert count("staff_factor") == 1
    renamed = client.post(
        "/admin/account/factors/999999/rename", data={"csrf_token": csrf, "name": "x"}
    )
    assert renamed.status_code == 404


# ---------------------------------------------------------------------------------------------
# Re-checks before dangerous actions


def _age_factor(minutes: int = 11) -> None:
    from mailing.db import session_scope

    with session_scope() as s:
        s.execute(sa.update(StaffSession).values(factor_at=utcnow() - timedelta(minutes=minutes)))


def test_sending_asks_for_a_second_factor_again_after_ten_minutes_then_carries_on(client, session):
    make_staff(session, "sender@gla.example", "sender")
    update = make_update(session)
    sign_in(client, "sender@gla.example")
    page = client.get(f"/admin/drafts/{update.id}/send")
    csrf = csrf_of(page.text)
    from mailing.updates import fingerprint as reviewed

    fingerprint = reviewed(update)  # what the confirmation page pins
    _age_factor()
    asked = client.post(
        f"/admin/drafts/{update.id}/send", data={"csrf_token": csrf, "fingerprint": fingerprint}
    )
    assert asked.status_code == 401
    assert "Confirm it is you" in asked.text
    assert f'action="/admin/drafts/{update.id}/send"' in asked.text
    session.refresh(update)
    assert update.status == UpdateStatus.DRAFT
    wrong = client.post(
        f"/admin/drafts/{update.id}/send",
        data={"csrf_token": csrf, "fingerprint": fingerprint, "second_factor_code": "000000"},
    )
    assert wrong.status_code == 401
    session.refresh(update)
    assert update.status == UpdateStatus.DRAFT
    done = client.post(
        f"/admin/drafts/{update.id}/send",
        data={
            "csrf_token": csrf,
            "fingerprint": fingerprint,
            "second_factor_code": next_code("sender@gla.example"),
        },
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert done.headers["location"] == f"/admin/drafts/{update.id}/progress"
    session.refresh(update)
    assert update.status != UpdateStatus.DRAFT
    assert "re-authenticated" in client.get("/admin/audit").text


def test_disabling_staff_asks_for_a_second_factor_again(client, session):
    editor = make_staff(session, "editor@gla.example")
    make_staff(session, "admin@gla.example", "admin")
    sign_in(client, "admin@gla.example")
    csrf = csrf_of(client.get("/admin/staff").text)
    _age_factor()
    asked = client.post(f"/admin/staff/{editor.id}/disable", data={"csrf_token": csrf})
    assert asked.status_code == 401
    session.refresh(editor)
    assert editor.disabled_at is None
    done = client.post(
        f"/admin/staff/{editor.id}/disable",
        data={"csrf_token": csrf, "second_factor_code": next_code("admin@gla.example")},
        follow_redirects=False,
    )
    assert done.status_code == 303
    session.refresh(editor)
    assert editor.disabled_at is not None


def test_the_sign_in_settings_page_asks_for_a_recent_factor(client, session):
    make_staff(session, "editor@gla.example")
    sign_in(client, "editor@gla.example")
    assert client.get("/admin/account").status_code == 200
    _age_factor()
    answer = client.get("/admin/account", follow_redirects=False)
    assert answer.headers["location"] == "/admin/reauth?next=/admin/account"
    page = client.get(answer.headers["location"])
    back = client.post(
        "/admin/reauth",
        data={
            "csrf_token": csrf_of(page.text),
            "next": "/admin/account",
            "second_factor_code": next_code("editor@gla.example"),
        },
        follow_redirects=False,
    )
    assert back.headers["location"] == "/admin/account"
    assert client.get("/admin/account").status_code == 200


# ---------------------------------------------------------------------------------------------
# Sessions


def test_a_session_idle_for_thirty_minutes_ends(client, session):
    make_staff(session, "editor@gla.example")
    sign_in(client, "editor@gla.example")
    assert client.get("/admin").status_code == 200
    session.execute(sa.update(StaffSession).values(last_seen_at=utcnow() - timedelta(minutes=31)))
    session.commit()
    assert client.get("/admin", follow_redirects=False).status_code == 303
    assert count("staff_session") == 0


def test_a_session_ends_after_eight_hours_however_busy(client, session):
    make_staff(session, "editor@gla.example")
    sign_in(client, "editor@gla.example")
    session.execute(sa.update(StaffSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    session.commit()
    assert client.get("/admin", follow_redirects=False).status_code == 303


def test_resetting_two_factors_clears_them_and_ends_sessions(client, session):
    staff = make_staff(session, "editor@gla.example")
    sign_in(client, staff.email)
    factors.new_recovery_codes(session, staff)
    session.commit()
    result = CliRunner().invoke(main, ["staff", "reset-2fa", "Editor@GLA.example"])
    assert result.exit_code == 0, result.output
    assert count("staff_factor") == 0 and count("staff_recovery_code") == 0
    assert count("staff_session") == 0
    assert client.get("/admin", follow_redirects=False).status_code == 303
    assert count("audit_log", "WHERE action = '2fa-reset'") == 1
    # The next sign-in enrols afresh.
    assert _password_only(client, staff.email).headers["location"].startswith("/admin/account")
    unknown = CliRunner().invoke(main, ["staff", "reset-2fa", "nobody@gla.example"])
    assert unknown.exit_code == 1


# ---------------------------------------------------------------------------------------------
# Audit


def test_sign_in_and_out_are_audited_with_the_client_ip(client, session):
    staff = make_staff(session, "editor@gla.example")
    sign_in(client, staff.email)
    page = client.get("/admin")
    client.post("/admin/logout", data={"csrf_token": csrf_of(page.text)})
    rows = session.exec(sa.select(AuditLog.action, AuditLog.client_ip)).all()
    seen = {action: ip for action, ip in rows}
    assert seen["console-sign-in"] == "testclient"
    assert seen["console-sign-out"] == "testclient"


# ---------------------------------------------------------------------------------------------
# End to end, every setting at its default, in production


def test_production_sign_in_enrols_then_needs_the_factor_and_tokens_expire_at_90_days(
    database, smtp, worker, session, settings_env
):
    from mailing.db import session_scope
    from mailing.models import Staff
    from mailing.web.app import create_app

    settings_env(env="production")
    created = CliRunner().invoke(
        main,
        ["staff", "create", "prod@gla.example", "--role", "admin", "--password"],
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert created.exit_code == 0, created.output
    api_token = created.output.strip().splitlines()[-1]
    with TestClient(create_app(), base_url="https://testserver") as web:
        answer = _password_only(web, "prod@gla.example")
        assert answer.headers["location"].startswith("/admin/account")
        done = enrol_first_app(web)
        assert done.status_code == 200 and "Secure" in done.headers["set-cookie"]
        # The codes page's download, on the production defaults.
        codes = re.search(r'name="codes" value="([^"]+)"', done.text).group(1)
        saved = web.post(
            "/admin/account/recovery-codes/download",
            data={"csrf_token": csrf_of(done.text), "codes": codes},
        )
        assert saved.status_code == 200 and saved.text.split()[-10:] == codes.split()
        assert web.get("/admin/staff").status_code == 200

        fresh = TestClient(web.app, base_url="https://testserver")
        step = _password_only(fresh, "prod@gla.example")
        assert step.headers["location"].startswith("/admin/login/second-factor")
        assert fresh.get("/admin", follow_redirects=False).status_code == 303

        bearer = {"Authorization": f"Bearer {api_token}"}
        assert web.get("/admin/stats", headers=bearer).status_code == 200
        with session_scope() as s:
            s.execute(sa.update(Staff).values(token_created_at=utcnow() - timedelta(days=91)))
        expired = web.get("/admin/stats", headers=bearer)
        assert expired.status_code == 401 and "expired" in expired.json()["detail"]


def test_hostile_passkey_registrations_get_a_clear_4xx_and_change_nothing(client, session):
    make_staff(session, "editor@gla.example")
    sign_in(client, "editor@gla.example")
    page = client.get("/admin/account")
    csrf = csrf_of(page.text)
    options = client.post("/admin/account/passkey/options", data={"csrf_token": csrf})
    assert options.status_code == 200
    from urllib.parse import urlsplit

    from mailing.config import get_settings

    assert options.json()["rp"]["id"] == urlsplit(get_settings().base_url).hostname
    before = table_snapshot()
    for registration in ("", "not json", "[]", '{"id": "AAAA", "response": {}}', "{" * 3000):
        answer = client.post(
            "/admin/account/passkey",
            data={"csrf_token": csrf, "registration": registration, "name": "Key"},
        )
        assert answer.status_code == 422, registration[:20]
    assert {k: v for k, v in table_snapshot().items() if k != "audit_log"} == {
        k: v for k, v in before.items() if k != "audit_log"
    }
    assert count("staff_factor") == 1


def test_passkey_options_for_a_new_key_need_a_recent_factor(client, session):
    make_staff(session, "editor@gla.example")
    sign_in(client, "editor@gla.example")
    csrf = csrf_of(client.get("/admin/account").text)
    _age_factor()
    answer = client.post("/admin/account/passkey/options", data={"csrf_token": csrf})
    assert answer.status_code == 401
    assert count("staff_session", "WHERE challenge IS NOT NULL") == 0


def test_totp_secrets_are_stored_sealed_and_a_retired_key_only_disables_them(session, settings_env):
    staff = make_staff(session, "editor@gla.example")
    give_totp(staff.email)
    stored = session.exec(sa.select(StaffFactor.totp_secret)).scalar_one()
    assert TEST_SECRET not in stored
    code = next_code(staff.email)
    settings_env(secret_keys="a-completely-different-key-of-enough-length-0123456789")
    assert factors.check_code(session, staff, code) is None  # refused, not an error
