"""One rule, every entry point: the console, the API and the CLI call the same domain function,
so a test copy is limited and refused alike everywhere, and "send now" means the same thing."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from mailing.db import get_engine
from mailing.mail.devcapture import _free_port
from mailing.states import UpdateStatus
from tests.staff.test_console import csrf_of, make_update, signed_in_client
from tests.support.sending import api_staff as api_staff
from tests.support.sending import update_row


def _tests_audited() -> int:
    with get_engine().connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM audit_log WHERE action = 'test-sent'")
            ).scalar_one()
        )


def _console_test(client, update_id: int):
    page = client.get(f"/admin/drafts/{update_id}")
    return client.post(
        f"/admin/drafts/{update_id}/test",
        data={"csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )


def test_the_console_test_copy_counts_against_the_same_hourly_limit_as_the_api(
    client, session, smtp, settings_env
):
    settings_env(test_sends_per_hour=2)
    signed_in_client(client, session, "editor@gla.example", "editor")
    update = make_update(session)
    assert _console_test(client, update.id).status_code == 303
    assert _console_test(client, update.id).status_code == 303
    limited = _console_test(client, update.id)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0
    assert "most test copies allowed in an hour" in limited.text
    assert _tests_audited() == 2
    assert len(smtp.outbox.wait_for(2, timeout=10)) == 2


def test_a_relay_that_refuses_a_test_copy_is_503_in_the_console_as_in_the_api(
    client, session, settings_env
):
    signed_in_client(client, session, "editor@gla.example", "editor")
    update = make_update(session)
    token = api_staff("editor", "api-editor@gla.example")
    settings_env(smtp_host="127.0.0.1", smtp_port=_free_port())  # nothing listens there
    console = _console_test(client, update.id)
    api = client.post(
        f"/admin/updates/{update.id}/test",
        json={"to": "api-editor@gla.example"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert (console.status_code, api.status_code) == (503, 503)
    assert "did not take the test copy" in console.text
    assert _tests_audited() == 0


def _scheduled(session):
    later = datetime.now(UTC) + timedelta(hours=2)
    return make_update(session, "scheduled", send_at=later)


def test_send_now_of_a_scheduled_update_is_refused_alike_by_api_console_and_cli(client, session):
    from click.testing import CliRunner

    from mailing.cli import main

    update = _scheduled(session)
    token = api_staff("sender", "api-sender@gla.example")
    api = client.post(
        f"/admin/updates/{update.id}/send", headers={"Authorization": f"Bearer {token}"}
    )
    assert api.status_code == 409
    assert "scheduled" in api.json()["detail"] and "unschedule" in api.json()["detail"]
    assert update_row(update.id).status == UpdateStatus.SCHEDULED

    signed_in_client(client, session, "sender@gla.example", "sender")
    page = client.get(f"/admin/drafts/{update.id}/progress")
    console = client.post(
        f"/admin/drafts/{update.id}/send",
        data={"csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert console.status_code == 303  # to the progress page, as for any update not a draft
    assert update_row(update.id).status == UpdateStatus.SCHEDULED

    if not os.environ.get("MAILING_BROKER_URL"):
        return  # `mailing send` needs a broker: the PostgreSQL + Redis run checks the CLI
    cli = CliRunner().invoke(main, ["send", str(update.id)])
    assert cli.exit_code == 1 and "unschedule" in cli.output, cli.output
    row = update_row(update.id)
    assert row.status == UpdateStatus.SCHEDULED and row.recipients == 0


def test_a_scheduled_update_still_starts_at_its_time(client, session):
    from mailing import sending
    from mailing.db import session_scope

    update = _scheduled(session)
    with session_scope() as s:
        started = sending.start_due(s, datetime.now(UTC) + timedelta(hours=3), lambda *a: None)
    assert started == 1
    assert update_row(update.id).status in (UpdateStatus.SENDING, UpdateStatus.SENT)
