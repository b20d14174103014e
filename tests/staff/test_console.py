"""The staff console's pages through HTTP: signing in and out, lockout, CSRF, cookies, roles,
revocation, and who may see subscribers' addresses."""

from __future__ import annotations

import re
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlmodel import select

from mailing.models import (
    Delivery,
    Staff,
    StaffSession,
    Subscriber,
    SubscriberTheme,
    Update,
    utcnow,
)
from mailing.staff import members, signin
from mailing.staff.members import create_staff
from mailing.staff.passwords import hash_token
from mailing.states import DeliveryStatus, StaffRole, SubscriberStatus, UpdateStatus
from tests.conftest import drain_worker
from tests.support.helpers import count, table_snapshot
from tests.support.staff import PASSWORD, give_totp, make_staff, second_factor_step

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def fingerprint_of(html: str) -> str:
    found = re.search(r'name="fingerprint" value="([^"]+)"', html)
    assert found, "no fingerprint of the reviewed version on the page"
    return found.group(1)


def sign_in(client, email: str, password: str = PASSWORD):
    """Password, then (when it was right) a code from an authenticator app enrolled for them."""
    give_totp(email)
    form = client.get("/admin/login")
    assert form.status_code == 200
    answer = client.post(
        "/admin/login",
        data={"email": email, "password": password, "csrf_token": csrf_of(form.text)},
        follow_redirects=False,
    )
    return second_factor_step(client, answer, email)


def signed_in_client(client, session, email="editor@gla.example", role="editor"):
    make_staff(session, email, role)
    answer = sign_in(client, email)
    assert answer.status_code == 303, answer.text
    return client


# ---------------------------------------------------------------------------------------------
# Signing in


def test_pages_need_sign_in(client):
    for path in ("/admin", "/admin/compose", "/admin/figures", "/admin/audit", "/admin/staff"):
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/admin/login"), path


def test_sign_in_with_the_right_password_opens_the_console(client, session):
    make_staff(session, "editor@gla.example")
    answer = sign_in(client, "Editor@GLA.example")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin"
    page = client.get("/admin")
    assert page.status_code == 200
    assert "editor@gla.example" in page.text
    stored = session.exec(select(StaffSession)).one()
    token = client.cookies.get("admin_session")
    assert stored.token_hash == hash_token(token) != token  # only a hash is kept


def test_wrong_password_and_unknown_address_get_the_same_answer(client, session):
    make_staff(session, "editor@gla.example")
    wrong = sign_in(client, "editor@gla.example", "not the password at all")
    unknown = sign_in(client, "nobody@gla.example", "not the password at all")
    assert wrong.status_code == unknown.status_code == 401
    assert signin.WRONG_DETAILS in wrong.text
    assert signin.WRONG_DETAILS in unknown.text
    assert "admin_session" not in client.cookies
    assert count("staff_session") == 0


def test_empty_form_shows_an_error_summary(client):
    form = client.get("/admin/login")
    answer = client.post("/admin/login", data={"csrf_token": csrf_of(form.text)})
    assert answer.status_code == 422
    assert "There is a problem" in answer.text
    assert 'href="#email"' in answer.text and 'href="#password"' in answer.text


def test_five_failures_stop_that_client_for_15_minutes_not_the_owner(client, session):
    make_staff(session, "editor@gla.example")
    for _ in range(signin.MAX_FAILED_SIGN_INS):
        assert sign_in(client, "editor@gla.example", "wrong password!").status_code == 401
    locked = sign_in(client, "editor@gla.example")  # even the right password, from this client
    assert locked.status_code == 429
    assert signin.LOCKED in locked.text
    assert 14 * 60 < int(locked.headers["retry-after"]) <= 15 * 60
    assert count("staff_session") == 0
    # The owner, from their own address, still signs in.
    owner = TestClient(client.app, client=("203.0.113.40", 50000))
    assert sign_in(owner, "editor@gla.example").status_code == 303


def test_unknown_addresses_lock_the_same_way(client):
    for _ in range(signin.MAX_FAILED_SIGN_INS):
        assert sign_in(client, "nobody@gla.example", "wrong password!").status_code == 401
    assert sign_in(client, "nobody@gla.example", "wrong password!").status_code == 429


def test_a_success_resets_the_clients_failure_count(client, session):
    make_staff(session, "editor@gla.example")
    for _ in range(signin.MAX_FAILED_SIGN_INS - 1):
        sign_in(client, "editor@gla.example", "wrong password!")
    assert sign_in(client, "editor@gla.example").status_code == 303
    again = TestClient(client.app)  # the same address, signed out
    answers = [
        sign_in(again, "editor@gla.example", "wrong password!").status_code
        for _ in range(signin.MAX_FAILED_SIGN_INS + 1)
    ]
    assert answers == [401] * signin.MAX_FAILED_SIGN_INS + [429]


def test_sign_in_without_the_form_token_is_refused(client, session):
    make_staff(session, "editor@gla.example")
    client.get("/admin/login")
    answer = client.post(
        "/admin/login",
        data={"email": "editor@gla.example", "password": PASSWORD, "csrf_token": "forged"},
        follow_redirects=False,
    )
    assert answer.status_code == 403
    assert count("staff_session") == 0


def test_session_cookie_flags_in_development(client, session):
    make_staff(session, "editor@gla.example")
    cookie = sign_in(client, "editor@gla.example").headers["set-cookie"]
    assert "admin_session=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "Path=/admin" in cookie


def test_session_cookie_is_secure_in_production(database, smtp, worker, session, settings_env):
    from mailing.web.app import create_app

    settings_env(env="production")
    make_staff(session, "editor@gla.example")
    with TestClient(create_app(), base_url="https://testserver") as secure_client:
        cookie = sign_in(secure_client, "editor@gla.example").headers["set-cookie"]
    assert re.search(r"admin_session=[^;]+;", cookie)
    for flag in ("HttpOnly", "Secure", "Path=/admin"):
        assert flag in cookie
    assert "samesite=strict" in cookie.lower()


def test_sign_out_ends_the_session(client, session):
    signed_in_client(client, session)
    token = client.cookies.get("admin_session")
    page = client.get("/admin")
    answer = client.post(
        "/admin/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False
    )
    assert answer.status_code == 303
    assert count("staff_session") == 0
    # The old cookie, replayed, no longer opens anything.
    client.cookies.set("admin_session", token, path="/admin")
    assert client.get("/admin", follow_redirects=False).status_code == 303


def test_sign_out_needs_the_csrf_token(client, session):
    signed_in_client(client, session)
    answer = client.post("/admin/logout", data={}, follow_redirects=False)
    assert answer.status_code == 403
    assert count("staff_session") == 1


def test_an_expired_session_is_refused(client, session):
    signed_in_client(client, session)
    row = session.exec(select(StaffSession)).one()
    row.expires_at = utcnow() - timedelta(seconds=1)
    session.add(row)
    session.commit()
    assert client.get("/admin", follow_redirects=False).status_code == 303


def test_disabled_staff_cannot_use_an_old_session(client, session):
    signed_in_client(client, session)
    token = client.cookies.get("admin_session")
    staff = session.exec(select(Staff)).one()
    api_token_hash = staff.token_hash
    members.disable(session, staff)
    session.commit()
    client.cookies.set("admin_session", token, path="/admin")
    assert client.get("/admin", follow_redirects=False).status_code == 303
    assert count("staff_session") == 0
    session.refresh(staff)
    assert staff.token_hash != api_token_hash  # the API token is dead too
    assert sign_in(client, "editor@gla.example").status_code == 401


# ---------------------------------------------------------------------------------------------
# Admin-only pages


def test_only_admin_sees_the_staff_page(client, session):
    signed_in_client(client, session, "sender@gla.example", "sender")
    answer = client.get("/admin/staff")
    assert answer.status_code == 403
    assert "You cannot do this" in answer.text
    assert 'href="/admin/staff"' not in client.get("/admin").text


def test_admin_disables_a_staff_member_and_their_session_ends(client, session):
    editor = make_staff(session, "editor@gla.example", "editor")
    with TestClient(client.app) as editor_client:
        assert sign_in(editor_client, "editor@gla.example").status_code == 303
        signed_in_client(client, session, "admin@gla.example", "admin")
        page = client.get("/admin/staff")
        assert page.status_code == 200 and "editor@gla.example" in page.text
        answer = client.post(
            f"/admin/staff/{editor.id}/disable",
            data={"csrf_token": csrf_of(page.text)},
            follow_redirects=False,
        )
        assert answer.status_code == 303
        assert editor_client.get("/admin", follow_redirects=False).status_code == 303
    session.refresh(editor)
    assert editor.disabled_at is not None
    assert "staff-disabled" in client.get("/admin/audit").text


def test_disabling_without_csrf_changes_nothing(client, session):
    editor = make_staff(session, "editor@gla.example", "editor")
    signed_in_client(client, session, "admin@gla.example", "admin")
    before = table_snapshot()
    for token in (None, "wrong-token"):
        data = {"csrf_token": token} if token else {}
        answer = client.post(f"/admin/staff/{editor.id}/disable", data=data)
        assert answer.status_code == 403
    assert table_snapshot() == before
    session.refresh(editor)
    assert editor.disabled_at is None


def test_figures_page_shows_todays_figures_without_writing(client, session):
    signed_in_client(client, session)
    add_subscribers(session, 1)
    before = table_snapshot()
    first = client.get("/admin/figures")
    assert first.status_code == 200
    assert '<title id="svg-title">' in first.text
    assert utcnow().date().isoformat() in first.text  # today's figures, counted live
    assert count("subscriber_count_snapshot") == 0  # beat stores snapshots; GETs never write
    client.get("/admin")
    assert table_snapshot() == before


def test_console_paths_do_not_shadow_the_json_api():
    from mailing.web.routes.console import router

    paths = [route.path for route in router.routes]
    assert "/admin" in paths and "/admin/login" in paths
    for path in paths:
        assert not path.startswith(("/admin/updates", "/admin/stats")), path


def test_the_beat_task_records_the_snapshot_on_the_worker(client):
    from tests.conftest import drain_worker
    from workers.tasks import snapshot_figures

    snapshot_figures.apply_async()
    drain_worker()
    assert count("subscriber_count_snapshot") == 5 * len(SubscriberStatus)


def test_snapshot_counts_each_theme_and_status(session):
    from mailing.figures import subscribers
    from mailing.models import Subscriber, SubscriberTheme
    from mailing.states import SubscriberStatus

    for i, (status, themes) in enumerate(
        [
            (SubscriberStatus.ACTIVE, ["healthy-minds", "healthy-places"]),
            (SubscriberStatus.ACTIVE, ["healthy-minds"]),
            (SubscriberStatus.PENDING, ["healthy-minds"]),
            (SubscriberStatus.UNSUBSCRIBED, ["healthy-living"]),
        ]
    ):
        sub = Subscriber(email=f"s{i}@example.org", email_key=f"s{i}@example.org", status=status)
        session.add(sub)
        session.flush()
        session.add_all(SubscriberTheme(subscriber_id=sub.id, theme=t) for t in themes)
    session.commit()
    day = subscribers.record_snapshot(session)
    history = subscribers.active_history(session)
    assert history.days == [day]
    by_theme = {s.theme: s.values for s in history.series}
    assert by_theme["healthy-minds"] == [2]
    assert by_theme["healthy-places"] == [1]
    assert by_theme["healthy-living"] == [0]
    assert subscribers.counts_by_theme(session)["healthy-minds"] == {
        "pending": 1,
        "active": 2,
        "unsubscribed": 0,
        "bounced": 0,
    }
    assert subscribers.active_total(session) == 2


# ---------------------------------------------------------------------------------------------
# Roles on the update pages, exactly as on the API


def make_update(session, status="draft", **fields) -> Update:
    update = Update(
        subject=fields.pop("subject", "Healthy Minds in March"),
        body=fields.pop("body", "Hello **London**."),
        themes=fields.pop("themes", "healthy-minds"),
        status=UpdateStatus(status),
        **fields,
    )
    session.add(update)
    session.commit()
    return update


def test_editor_cannot_send(client, session):
    signed_in_client(client, session, "editor@gla.example", "editor")
    update = make_update(session)
    assert client.get(f"/admin/drafts/{update.id}/send").status_code == 403
    page = client.get("/admin")
    before = table_snapshot()
    answer = client.post(f"/admin/drafts/{update.id}/send", data={"csrf_token": csrf_of(page.text)})
    assert answer.status_code == 403
    assert "You cannot do this" in answer.text
    assert table_snapshot() == before
    session.refresh(update)
    assert update.status == UpdateStatus.DRAFT


def test_sending_without_csrf_changes_nothing(client, session):
    signed_in_client(client, session, "sender@gla.example", "sender")
    update = make_update(session)
    before = table_snapshot()
    for data in ({}, {"csrf_token": "not-the-token"}):
        answer = client.post(f"/admin/drafts/{update.id}/send", data=data)
        assert answer.status_code == 403
    assert table_snapshot() == before
    session.refresh(update)
    assert update.status == UpdateStatus.DRAFT


def test_compose_without_csrf_changes_nothing(client, session):
    signed_in_client(client, session)
    before = table_snapshot()
    answer = client.post(
        "/admin/compose",
        data={"subject": "Hi", "body": "Text", "themes": ["healthy-minds"], "csrf_token": "x"},
    )
    assert answer.status_code == 403
    assert table_snapshot() == before


def test_unknown_update_is_a_404_page(client, session):
    signed_in_client(client, session)
    assert client.get("/admin/drafts/999/progress").status_code == 404
    assert client.get("/admin/drafts/not-a-number").status_code == 422
    assert client.get("/admin/drafts/99999999999999999999").status_code == 422


def test_only_admin_sees_subscribers_addresses(client, session):
    subscriber = Subscriber(
        email="resident@example.org", email_key="resident@example.org", status="active"
    )
    session.add(subscriber)
    session.commit()
    update = make_update(session, "sent", recipients=1, failed=1)
    session.add(
        Delivery(
            update_id=update.id,
            subscriber_id=subscriber.id,
            status=DeliveryStatus.FAILED,
            error="550 permanent",
        )
    )
    session.commit()
    pages = [
        "/admin",
        "/admin/figures",
        "/admin/audit",
        f"/admin/drafts/{update.id}/progress",
        f"/admin/drafts/{update.id}/progress.json",
    ]
    for role in ("editor", "sender"):
        with TestClient(client.app) as staff_client:
            signed_in_client(staff_client, session, f"{role}@gla.example", role)
            for path in pages:
                answer = staff_client.get(path)
                assert answer.status_code == 200, path
                assert "resident@example.org" not in answer.text, (role, path)
            assert f"subscriber {subscriber.id}" in staff_client.get(pages[3]).text
    signed_in_client(client, session, "admin@gla.example", "admin")
    assert "resident@example.org" in client.get(pages[3]).text


def add_subscribers(session, n: int, themes=("healthy-minds",), status="active") -> list[int]:
    ids = []
    for _ in range(n):
        k = count("subscriber") + len(ids)
        sub = Subscriber(email=f"r{k}@example.org", email_key=f"r{k}@example.org", status=status)
        session.add(sub)
        session.flush()
        session.add_all(SubscriberTheme(subscriber_id=sub.id, theme=t) for t in themes)
        ids.append(sub.id)
    session.commit()
    return ids


def test_progress_json_counts(client, session):
    signed_in_client(client, session)
    ids = add_subscribers(session, 10)
    update = make_update(session, "sending", recipients=10)
    statuses = ["sent"] * 6 + ["failed"] + ["pending"] * 3
    session.add_all(
        Delivery(update_id=update.id, subscriber_id=i, status=DeliveryStatus(st))
        for i, st in zip(ids, statuses, strict=True)
    )
    session.commit()
    body = client.get(f"/admin/drafts/{update.id}/progress.json").json()
    assert body == {
        "status": "sending",
        "recipients": 10,
        "sent": 6,
        "failed": 1,
        "cancelled": 0,
        "pending": 3,
        "bounced": 0,
        "complained": 0,
        "done": 7,
        "percent": 70,
        "summary": "7 of 10 done.",
    }


def test_sender_sends_after_confirming_the_number_of_recipients(client, session, smtp):
    add_subscribers(session, 3, themes=("healthy-minds",))
    add_subscribers(session, 1, themes=("healthy-living",))
    add_subscribers(session, 2, themes=("healthy-minds",), status="pending")
    signed_in_client(client, session, "sender@gla.example", "sender")
    update = make_update(session, themes="healthy-minds")

    confirm = client.get(f"/admin/drafts/{update.id}/send")
    assert confirm.status_code == 200
    assert "Yes, send to 3 subscribers" in confirm.text
    assert count("delivery") == 0  # the confirmation page alone sends nothing

    answer = client.post(
        f"/admin/drafts/{update.id}/send",
        data={"csrf_token": csrf_of(confirm.text), "fingerprint": fingerprint_of(confirm.text)},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/admin/drafts/{update.id}/progress"
    mails = smtp.outbox.wait_for(3, timeout=30)
    assert sorted(m.to[0] for m in mails) == ["r0@example.org", "r1@example.org", "r2@example.org"]
    drain_worker()
    body = client.get(f"/admin/drafts/{update.id}/progress.json").json()
    assert (body["status"], body["sent"], body["pending"], body["percent"]) == ("sent", 3, 0, 100)
    page = client.get(answer.headers["location"])
    assert 'value="3"' in page.text and "Finished: 3 sent, 0 failed." in page.text

    # Pressing send again (an old tab) sends nothing more.
    again = client.post(
        f"/admin/drafts/{update.id}/send", data={"csrf_token": csrf_of(confirm.text)}
    )
    assert again.status_code == 200
    drain_worker()
    assert len(smtp.outbox.messages()) == 3
    assert count("delivery") == 3


# ---------------------------------------------------------------------------------------------
# Drafting, preview and test sends


def compose(client, **fields):
    page = client.get("/admin/compose")
    data = {
        "subject": "Healthy Minds in March",
        "body": "Hello **London**.\n\n- one\n- two",
        "themes": ["healthy-minds"],
        "csrf_token": csrf_of(page.text),
    }
    data.update(fields)
    return client.post("/admin/compose", data=data, follow_redirects=False)


def test_compose_saves_a_draft_and_shows_it(client, session):
    signed_in_client(client, session)
    answer = compose(client)
    assert answer.status_code == 303
    update = session.exec(select(Update)).one()
    assert answer.headers["location"] == f"/admin/drafts/{update.id}?saved=1"
    assert (update.subject, update.themes, update.status) == (
        "Healthy Minds in March",
        "healthy-minds",
        UpdateStatus.DRAFT,
    )
    page = client.get(answer.headers["location"])
    assert "Your draft is saved." in page.text
    assert f'src="/admin/drafts/{update.id}/preview" sandbox' in page.text
    assert "Healthy Minds in March" in client.get("/admin").text


def test_compose_shows_active_subscribers_per_theme(client, session):
    for i, status in enumerate(["active", "active", "pending"]):
        sub = Subscriber(email=f"s{i}@example.org", email_key=f"s{i}@example.org", status=status)
        session.add(sub)
        session.flush()
        session.add(SubscriberTheme(subscriber_id=sub.id, theme="healthy-places"))
    session.commit()
    signed_in_client(client, session)
    page = client.get("/admin/compose").text
    assert re.search(
        r"Healthy Places <span[^>]*>\(2 active: 2 get each update, 0 the weekly summary\)", page
    )
    assert re.search(
        r"Healthy Minds <span[^>]*>\(0 active: 0 get each update, 0 the weekly summary\)", page
    )


def test_compose_with_missing_fields_shows_errors_and_saves_nothing(client, session):
    signed_in_client(client, session)
    before = table_snapshot()
    answer = compose(client, subject="", body="  ", themes=[])
    assert answer.status_code == 422
    assert "There is a problem" in answer.text
    for anchor in ('href="#subject"', 'href="#body"', 'href="#themes"'):
        assert anchor in answer.text
    answer = compose(client, themes=["not-a-theme"])
    assert answer.status_code == 422
    assert table_snapshot() == before


def test_editing_a_draft(client, session):
    signed_in_client(client, session)
    update = make_update(session)
    page = client.get(f"/admin/drafts/{update.id}")
    answer = client.post(
        f"/admin/drafts/{update.id}",
        data={
            "subject": "New subject",
            "body": "New body",
            "themes": ["healthy-living", "healthy-children"],
            "csrf_token": csrf_of(page.text),
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303
    session.refresh(update)
    assert (update.subject, update.body, update.themes) == (
        "New subject",
        "New body",
        "healthy-children,healthy-living",
    )


def test_a_sent_update_cannot_be_edited(client, session):
    signed_in_client(client, session)
    update = make_update(session, "sent")
    assert client.get(f"/admin/drafts/{update.id}", follow_redirects=False).status_code == 303
    page = client.get("/admin")
    answer = client.post(
        f"/admin/drafts/{update.id}",
        data={"subject": "x", "body": "y", "themes": ["healthy-minds"]}
        | {"csrf_token": csrf_of(page.text)},
    )
    assert answer.status_code == 409
    session.refresh(update)
    assert update.subject == "Healthy Minds in March"


def test_preview_is_the_email_under_its_own_strict_policy(client, session):
    signed_in_client(client, session)
    update = make_update(session, body="Hello **London** <script>alert(1)</script>")
    answer = client.get(f"/admin/drafts/{update.id}/preview")
    assert answer.status_code == 200
    csp = answer.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "style-src 'unsafe-inline'" in csp
    assert "img-src 'self' data:" in csp  # the service's own images, nothing remote
    assert "frame-ancestors 'self'" in csp
    assert "script" not in csp
    assert answer.headers["x-frame-options"] == "SAMEORIGIN"
    assert "<strong>London</strong>" in answer.text
    assert "<script>" not in answer.text
    # Every other console page may not be framed at all.
    assert "frame-ancestors 'none'" in client.get("/admin").headers["content-security-policy"]


def test_send_a_test_to_me(client, session, smtp):
    signed_in_client(client, session, "editor@gla.example", "editor")
    update = make_update(session)
    page = client.get(f"/admin/drafts/{update.id}")
    answer = client.post(
        f"/admin/drafts/{update.id}/test",
        data={"csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    [mail] = smtp.outbox.wait_for(1)
    assert mail.to == ["editor@gla.example"]
    assert "Healthy Minds in March" in mail.subject
    assert (
        "A test copy is on its way to editor@gla.example"
        in client.get(answer.headers["location"]).text
    )
    session.refresh(update)
    assert update.status == UpdateStatus.DRAFT
    assert "test-sent" in client.get("/admin/audit").text


# ---------------------------------------------------------------------------------------------
# The command line


def test_staff_created_on_the_command_line_signs_in_with_their_password(client):
    from click.testing import CliRunner

    from mailing.cli import main

    runner = CliRunner()
    created = runner.invoke(
        main,
        ["staff", "create", "new@gla.example", "--role", "sender", "--password"],
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert created.exit_code == 0, created.output
    assert sign_in(client, "new@gla.example").status_code == 303

    other = "another long passphrase"
    changed = runner.invoke(
        main, ["staff", "password", "new@gla.example"], input=f"{other}\n{other}\n"
    )
    assert changed.exit_code == 0, changed.output
    assert client.get("/admin", follow_redirects=False).status_code == 303  # sessions ended
    assert sign_in(client, "new@gla.example").status_code == 401
    assert sign_in(client, "new@gla.example", other).status_code == 303


def test_a_short_password_is_refused(client):
    from click.testing import CliRunner

    from mailing.cli import main

    result = CliRunner().invoke(
        main,
        ["staff", "create", "new@gla.example", "--role", "editor", "--password"],
        input="short\nshort\n",
    )
    assert result.exit_code == 1
    assert count("staff") == 0


def test_disabling_in_the_console_revokes_the_api_token(client, session):
    editor, api_token = create_staff(session, "editor@gla.example", StaffRole.EDITOR)
    session.commit()
    bearer = {"Authorization": f"Bearer {api_token}"}
    assert client.get("/admin/stats", headers=bearer).status_code == 200
    signed_in_client(client, session, "admin@gla.example", "admin")
    page = client.get("/admin/staff")
    answer = client.post(
        f"/admin/staff/{editor.id}/disable", data={"csrf_token": csrf_of(page.text)}
    )
    assert answer.status_code == 200
    assert client.get("/admin/stats", headers=bearer).status_code == 401


def test_an_admin_cannot_disable_themselves(client, session):
    signed_in_client(client, session, "admin@gla.example", "admin")
    me = session.exec(select(Staff)).one()
    page = client.get("/admin/staff")
    answer = client.post(f"/admin/staff/{me.id}/disable", data={"csrf_token": csrf_of(page.text)})
    assert answer.status_code == 409
    assert "You cannot disable yourself" in answer.text
    session.refresh(me)
    assert me.disabled_at is None


def test_an_overdue_scheduled_update_is_flagged_on_the_dashboard_and_its_page(client, session):
    """Nothing starts a scheduled update when no beat runs: the console says so once its time
    has passed by more than two reconciler rounds, and not before."""
    from datetime import timedelta

    from mailing.models import Update, utcnow
    from mailing.states import UpdateStatus

    signed_in_client(client, session)
    now = utcnow()
    late = Update(
        subject="Late news",
        body="b",
        themes="healthy-minds",
        status=UpdateStatus.SCHEDULED,
        send_at=now - timedelta(minutes=5),
    )
    soon = Update(
        subject="Soon news",
        body="b",
        themes="healthy-minds",
        status=UpdateStatus.SCHEDULED,
        send_at=now - timedelta(seconds=30),
    )
    session.add_all([late, soon])
    session.commit()
    dashboard = client.get("/admin").text
    flagged = dashboard.split("Scheduled updates have not started")[1].split("</ul>")[0]
    assert "Late news" in flagged and "Soon news" not in flagged
    assert "This update is overdue" in client.get(f"/admin/drafts/{late.id}/progress").text
    assert "This update is overdue" not in client.get(f"/admin/drafts/{soon.id}/progress").text
