"""Consent refresh (issue 24, part 3), with a controlled clock: consent older than the setting is
asked once to be renewed, and lapses quietly 30 days later without an answer."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner

from mailing.cli import main
from mailing.db import session_scope
from mailing.models import utcnow
from mailing.states import SubscriberStatus
from mailing.subscribers import consent, records, refresh
from tests.conftest import drain_worker
from tests.support.helpers import only_link
from tests.support.sending import api_staff as make_staff
from workers.enqueue import publish_notices

FIGURES = "/admin/subscribers/consent-refresh"


def _import(tmp_path: Path, rows: str) -> None:
    path = tmp_path / "list.csv"
    path.write_text("email,consented_at,consent_wording\n" + rows, encoding="utf-8")
    result = CliRunner().invoke(main, ["import", str(path), "--source", "old list"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["asked"] == 0


def _run(now):
    with session_scope() as s:
        return refresh.run(s, now, lambda ids: publish_notices(ids, queue="updates"))


def _status(email: str) -> tuple[SubscriberStatus, list[str], bool]:
    with session_scope() as s:
        found = records.by_key(s, email)
        events = [e["event"] for e in consent.ledger(s, found.id)]
        return found.status, events, records.is_suppressed(s, email)


def test_production_refresh_asks_once_keeps_who_stays_and_lapses_who_does_not(
    client, smtp, settings_env, tmp_path
):
    """Every setting at its default but MAILING_ENV=production and the refresh turned on."""
    from fastapi.testclient import TestClient

    from mailing.web.app import create_app

    settings_env(env="production", consent_refresh_years=2)
    now = utcnow()
    three_years = (now - timedelta(days=3 * 365)).isoformat()
    one_year = (now - timedelta(days=365)).isoformat()
    _import(
        tmp_path,
        f"stays@example.net,{three_years},Yes\n"
        f"silent@example.net,{three_years},Yes\n"
        f"recent@example.net,{one_year},Yes\n",
    )
    admin = make_staff("admin")
    with TestClient(create_app(), raise_server_exceptions=False) as prod:
        figures = prod.get(FIGURES, headers={"Authorization": f"Bearer {admin}"})
        assert figures.json() == {"years": 2, "due": 2, "awaiting": 0}

        assert _run(now) == refresh.RunResult(asked=2, lapsed=0)
        mails = smtp.outbox.wait_for(2)
        drain_worker()
        assert sorted(m.to[0] for m in smtp.outbox.messages()) == [
            "silent@example.net",
            "stays@example.net",
        ]
        assert consent.CONSENT_TEXT.split(",")[0] in mails[0].part("plain").replace("\n", " ")
        assert _run(now + timedelta(hours=1)) == refresh.RunResult(0, 0)  # one email only
        figures = prod.get(FIGURES, headers={"Authorization": f"Bearer {admin}"})
        assert figures.json() == {"years": 2, "due": 0, "awaiting": 2}

        [stays_mail] = [m for m in mails if m.to == ["stays@example.net"]]
        link = only_link(stays_mail, "stay")
        assert prod.get(link).status_code == 200  # a GET alone renews nothing
        assert _status("stays@example.net")[1] == ["imported", "refresh-asked"]
        answer = prod.post(link, headers={"accept": "application/json"})
        assert answer.status_code == 200 and answer.json() == {"status": "renewed"}
        smtp.outbox.clear()

        assert _run(now + timedelta(days=29)) == refresh.RunResult(0, 0)
        assert _status("silent@example.net")[0] == SubscriberStatus.ACTIVE
        assert _run(now + timedelta(days=31)) == refresh.RunResult(0, 1)
        assert _run(now + timedelta(days=32)) == refresh.RunResult(0, 0)
        drain_worker()
        assert smtp.outbox.messages() == []  # quietly

        assert _status("stays@example.net") == (
            SubscriberStatus.ACTIVE,
            ["imported", "refresh-asked", "renewed"],
            False,
        )
        assert _status("silent@example.net") == (
            SubscriberStatus.UNSUBSCRIBED,
            ["imported", "refresh-asked", "lapsed"],
            True,
        )
        assert _status("recent@example.net") == (SubscriberStatus.ACTIVE, ["imported"], False)
        [silent_mail] = [m for m in mails if m.to == ["silent@example.net"]]
        late = prod.post(only_link(silent_mail, "stay"), headers={"accept": "application/json"})
        assert late.status_code == 409 and _status("silent@example.net")[0] == "unsubscribed"
        assert prod.post("/stay/forged-token").status_code == 400


def test_refresh_is_off_by_default(client, smtp, tmp_path):
    old = (utcnow() - timedelta(days=30 * 365)).isoformat()
    _import(tmp_path, f"old@example.net,{old},Yes\n")
    assert _run(utcnow() + timedelta(days=3650)) == refresh.RunResult(0, 0)
    with session_scope() as s:
        assert refresh.figures(s, utcnow()) == refresh.Figures(0, 0, 0)
    drain_worker()
    assert smtp.outbox.messages() == []


def test_the_figures_need_an_admin(client):
    token = make_staff("sender")
    answer = client.get(
        "/admin/subscribers/consent-refresh", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 403
