"""One way to start a send, and the same answer from every entry point when the broker is down:
the database is the truth, so a committed send is accepted and will start (the reconciler
re-drives it); nothing says "nothing was saved" after saving. Each entry point runs in its own
process against a broker address where nothing listens, on the suite's database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from mailing.db import get_engine
from tests.support.helpers import count
from tests.support.sending import add_subscribers, draft, update_row
from tests.support.sending import api_staff as make_staff
from tests.test_db_faults import _free_port, _serve


def _dead_broker() -> str:
    return f"redis://127.0.0.1:{_free_port()}/0"


def _env() -> dict[str, str]:
    return {
        "MAILING_DATABASE_URL": os.environ["MAILING_DATABASE_URL"],
        "MAILING_BROKER_URL": _dead_broker(),
    }


def test_the_api_accepts_a_send_while_the_broker_is_down(database: str, tmp_path: Path) -> None:
    add_subscribers(4, ["healthy-minds"], prefix="apidown")
    update_id = draft(themes=["healthy-minds"])
    token = make_staff("sender", "down@staff.example.org")
    proc, base = _serve(_env(), str(tmp_path))
    try:
        answer = httpx.post(
            f"{base}/admin/updates/{update_id}/send",
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert answer.status_code == 202
    body = answer.json()
    assert (body["status"], body["started"], body["recipients"]) == ("sending", True, 4)
    assert "Nothing was saved" not in answer.text
    assert update_row(update_id).status.value == "sending"
    assert count("delivery", f"WHERE update_id = {update_id}") == 4
    # The reconciler finds it (its heartbeat ages like any quiet send) and starts it.
    with get_engine().connect() as conn:
        started = conn.execute(
            sa.text("SELECT heartbeat_at FROM theme_update WHERE id = :u"), {"u": update_id}
        ).scalar()
    assert started is not None


def test_the_cli_accepts_a_send_while_the_broker_is_down(database: str, tmp_path: Path) -> None:
    add_subscribers(3, ["healthy-places"], prefix="clidown")
    update_id = draft(themes=["healthy-places"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILING_")}
    env.update(_env(), MAILING_SECRET_KEYS=os.environ["MAILING_SECRET_KEYS"])
    result = subprocess.run(
        [sys.executable, "-m", "mailing.cli", "send", str(update_id)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "accepted for 3 recipients" in result.stdout
    assert "within a minute" in result.stdout
    assert update_row(update_id).status.value == "sending"


def test_the_console_accepts_a_send_while_the_broker_is_down(
    database: str, tmp_path: Path, session: Any
) -> None:
    from tests.staff.test_console import csrf_of, fingerprint_of, make_staff, sign_in

    add_subscribers(2, ["healthy-living"], prefix="consoledown")
    update_id = draft(themes=["healthy-living"])
    make_staff(session, "down-sender@gla.example", "sender")
    env = {**_env(), "MAILING_SECRET_KEYS": os.environ["MAILING_SECRET_KEYS"]}
    proc, base = _serve(env, str(tmp_path))
    try:
        with httpx.Client(base_url=base, timeout=60) as console:
            assert sign_in(console, "down-sender@gla.example").status_code == 303
            page = console.get(f"/admin/drafts/{update_id}/send")
            answer = console.post(
                f"/admin/drafts/{update_id}/send",
                data={"csrf_token": csrf_of(page.text), "fingerprint": fingerprint_of(page.text)},
                follow_redirects=False,
            )
            progress = console.get(f"/admin/drafts/{update_id}/progress")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/admin/drafts/{update_id}/progress"
    assert progress.status_code == 200 and "Sending" in progress.text
    assert update_row(update_id).status.value == "sending"
    assert count("delivery", f"WHERE update_id = {update_id}") == 2


def test_a_sign_up_while_the_broker_is_down_is_stored_and_its_email_left_to_the_reconciler(
    database: str, tmp_path: Path
) -> None:
    """A sign-up needs the database, not the broker: its notice row is committed with it, and
    the web's publisher, failing to reach the broker, leaves the row for the reconciler."""
    env = {**_env(), "MAILING_SECRET_KEYS": os.environ["MAILING_SECRET_KEYS"]}
    proc, base = _serve(env, str(tmp_path))
    try:
        answer = httpx.post(
            f"{base}/subscriptions",
            json={"email": "brokerdown@example.org", "consent": True},
            timeout=60,
        )
    finally:
        proc.terminate()  # a clean exit waits for the publisher's last try
        _, stderr = proc.communicate(timeout=30)
    assert answer.status_code == 202
    assert count("subscriber", "WHERE email_key = 'brokerdown@example.org'") == 1
    assert count("notice", "WHERE kind = 'confirm'") == 1  # the reconciler publishes it later
    assert "could not publish 1 notices; the reconciler will re-drive them" in stderr
    assert "brokerdown" not in stderr
