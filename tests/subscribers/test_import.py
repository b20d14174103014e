"""`mailing import FILE --source TEXT`: consent brought in as evidence or asked for once, the
suppression list honoured in any case, re-runs harmless, bad files refused (issue 24, part 1)."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlmodel import select

from mailing.cli import main
from mailing.db import session_scope
from mailing.models import Subscriber, utcnow
from mailing.states import Frequency, SubscriberStatus
from mailing.subscribers import consent, erasure, import_file, records, rights
from mailing.themes import ALL_THEMES
from tests.conftest import drain_worker
from tests.support.helpers import count, only_link, table_snapshot
from tests.support.residents import confirmed

HEADER = "email,themes,frequency,consented_at,consent_wording\n"
MINDS, PLACES = "healthy-minds", "healthy-places"
WORDING = "Tick to get our health newsletter"


def write(tmp_path: Path, text: str | bytes, name: str = "list.csv") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def run_import(path: Path, *extra: str, source: str = "old provider export 2026-11") -> dict:
    result = CliRunner().invoke(main, ["import", str(path), "--source", source, *extra])
    assert result.exit_code == 0, result.output + result.stderr
    counts = json.loads(result.stdout.splitlines()[-1])
    return {"out": result.stdout, "err": result.stderr, **counts}


def refused(path: Path, *extra: str) -> str:
    result = CliRunner().invoke(main, ["import", str(path), "--source", "old list", *extra])
    assert result.exit_code != 0
    assert result.stdout == ""
    return result.stderr


def data_snapshot() -> dict[str, int]:
    """Row counts of every table but the audit log (a real run is audited)."""
    return {t: n for t, n in table_snapshot().items() if t != "audit_log"}


def subscriber(email_key: str) -> Subscriber | None:
    with session_scope() as s:
        found = records.by_key(s, email_key)
        if found is not None:
            s.expunge(found)
        return found


def test_production_import_activates_rows_with_evidence_and_asks_the_others_once(
    client, smtp, settings_env, tmp_path
):
    """Every setting at its default but MAILING_ENV=production."""
    settings_env(env="production")
    path = write(
        tmp_path,
        HEADER
        + f"Known@Example.net,{MINDS};{PLACES},weekly,2024-03-01T10:15:00+00:00,{WORDING}\n"
        + "nowording@example.net,,,2023-06-01 09:00,\n"
        + "ask.me@example.net,healthy-living,,,\n",
    )
    counts = run_import(path)
    assert {k: counts[k] for k in ("imported", "asked", "unchanged", "suppressed", "invalid")} == {
        "imported": 2,
        "asked": 1,
        "unchanged": 0,
        "suppressed": 0,
        "invalid": 0,
    }
    known = subscriber("known@example.net")
    assert known is not None and known.status == SubscriberStatus.ACTIVE
    assert known.frequency == Frequency.WEEKLY
    with session_scope() as s:
        assert records.themes_of(s, known.id) == [MINDS, PLACES]
        [event] = consent.ledger(s, known.id)
        nowording = records.by_key(s, "nowording@example.net")
        [plain] = consent.ledger(s, nowording.id)
    assert event["event"] == "imported" and event["channel"] == "import"
    assert event["source"] == "old provider export 2026-11"
    assert datetime.fromisoformat(event["at"]).replace(tzinfo=UTC) == datetime(
        2024, 3, 1, 10, 15, tzinfo=UTC
    )
    assert event["consent"]["sha256"] == hashlib.sha256(WORDING.encode()).hexdigest()
    assert event["consent"]["text"] == WORDING
    assert plain["consent"]["text"].startswith("Unknown:")  # said plainly, not guessed
    # 09:00 London time in June is 08:00 UTC.
    assert datetime.fromisoformat(plain["at"]).replace(tzinfo=UTC).hour == 8

    [mail] = smtp.outbox.wait_for(1)
    drain_worker()
    assert len(smtp.outbox.messages()) == 1, "only the one without evidence is mailed"
    assert mail.to == ["ask.me@example.net"]
    assert "do not hold a record of when or how you agreed" in mail.part("plain").replace("\n", " ")
    asked = subscriber("ask.me@example.net")
    assert asked.status == SubscriberStatus.PENDING
    answer = client.post(only_link(mail, "confirm"), headers={"accept": "application/json"})
    assert answer.json()["status"] == "active"
    with session_scope() as s:
        assert records.themes_of(s, asked.id) == ["healthy-living"]


def test_the_same_file_twice_changes_nothing_and_mails_no_one_twice(client, smtp, tmp_path):
    path = write(
        tmp_path,
        HEADER + "a@example.net,,,2025-01-01T00:00:00Z,Yes\n" + "b@example.net,,,,\n",
    )
    first = run_import(path, source="Old provider, ask jo@gla.example")
    assert (first["imported"], first["asked"]) == (1, 1)
    with session_scope() as s:
        from mailing.models import AuditLog

        [entry] = s.exec(select(AuditLog)).all()
    assert entry.action == "imported" and entry.detail == (
        'source: Old provider, ask [address removed]; {"imported": 1, "asked": 1, '
        '"unchanged": 0, "suppressed": 0, "invalid": 0}'
    )
    smtp.outbox.wait_for(1)
    drain_worker()
    before = data_snapshot()
    second = run_import(path)
    assert (second["imported"], second["asked"], second["unchanged"]) == (0, 0, 2)
    drain_worker()
    assert data_snapshot() == before
    assert len(smtp.outbox.messages()) == 1


def test_a_suppressed_address_in_another_case_is_skipped_and_never_mailed(client, smtp, tmp_path):
    confirmed(client, smtp, "erased@example.net", [MINDS])
    confirmed(client, smtp, "left@example.net", [MINDS])
    with session_scope() as s:
        erasure.erase(s, records.by_key(s, "erased@example.net"), "request")
        rights.unsubscribe(s, records.by_key(s, "left@example.net"), channel="form")
    drain_worker()
    smtp.outbox.clear()
    before = data_snapshot()
    path = write(
        tmp_path,
        HEADER
        + "ERASED@Example.NET,,,2025-01-01T00:00:00Z,Yes\n"
        + "Left@EXAMPLE.net,,,,\n"
        + "erased@example.net,,,,\n",
    )
    counts = run_import(path)
    assert (counts["suppressed"], counts["unchanged"], counts["imported"], counts["asked"]) == (
        2,
        1,
        0,
        0,
    )
    drain_worker()
    assert smtp.outbox.messages() == []
    assert data_snapshot() == before
    assert subscriber("erased@example.net") is None


def test_an_active_subscriber_is_left_unchanged(client, smtp, tmp_path):
    confirmed(client, smtp, "here@example.net", [MINDS])
    before = data_snapshot()
    path = write(tmp_path, HEADER + f"HERE@example.net,{PLACES},weekly,2020-01-01T00:00Z,Old\n")
    counts = run_import(path)
    assert counts["unchanged"] == 1 and counts["imported"] == 0
    here = subscriber("here@example.net")
    assert here.frequency == Frequency.IMMEDIATE
    with session_scope() as s:
        assert records.themes_of(s, here.id) == [MINDS]
    assert data_snapshot() == before
    drain_worker()
    assert smtp.outbox.messages() == []


def test_a_pending_sign_up_with_evidence_in_the_list_becomes_active(client, smtp, tmp_path):
    from tests.support.helpers import subscribe

    assert subscribe(client, "waiting@example.net", [MINDS]).status_code == 202
    smtp.outbox.wait_for(1)
    drain_worker()
    path = write(tmp_path, HEADER + "waiting@example.net,,,2025-05-05T12:00Z,Yes please\n")
    assert run_import(path)["imported"] == 1
    waiting = subscriber("waiting@example.net")
    assert waiting.status == SubscriberStatus.ACTIVE
    with session_scope() as s:
        assert records.themes_of(s, waiting.id) == list(ALL_THEMES)
        assert [e["event"] for e in consent.ledger(s, waiting.id)] == ["requested", "imported"]


def test_bad_lines_are_counted_with_their_numbers_and_never_echoed(client, tmp_path):
    path = write(
        tmp_path,
        HEADER
        + "good@example.net,,,2025-01-01T00:00Z,\n"
        + "not-an-address,,,,\n"  # line 3
        + "x@example.net,healthy-wealth,,,\n"  # line 4
        + "y@example.net,,monthly,,\n"  # line 5
        + "z@example.net,,,yesterday,\n"  # line 6
        + "w@example.net,,,2999-01-01T00:00Z,\n"  # line 7
        + "v@example.net,,,,,,,too many\n",  # line 8
    )
    counts = run_import(path)
    assert counts["invalid"] == 6 and counts["imported"] == 1
    for line in (3, 4, 5, 6, 7, 8):
        assert f"line {line}: " in counts["err"]
    for cell in ("not-an-address", "healthy-wealth", "monthly", "yesterday", "x@example.net"):
        assert cell not in counts["err"] and cell not in counts["out"]
    assert count("subscriber") == 1


def test_hostile_cells(client, smtp, tmp_path):
    huge = "w" * (import_file.MAX_WORDING + 1)
    text = (
        "\ufeff"  # a byte-order mark before the header
        + HEADER
        + "\"=cmd|' /C calc'!A0\",,,2025-01-01T00:00Z,\n"  # line 2: a formula, not an address
        + '"multi\r\nline@example.net",,,2025-01-01T00:00Z,\n'  # lines 3-4: CR/LF in a cell
        + "nul\x00@example.net,,,2025-01-01T00:00Z,\n"  # line 5
        + "nulwording@example.net,,,2025-01-01T00:00Z,bad\x00text\n"  # line 6
        + f"huge@example.net,,,2025-01-01T00:00Z,{huge}\n"  # line 7
        + 'formula@example.net,,,2025-01-01T00:00Z,"=HYPERLINK(""http://x"")\r\nsecond line"\n'
        + "Twice@Example.net,,,2025-01-01T00:00Z,\n"
        + "twice@example.NET,,,,\n"  # the same address in another case
    )
    path = write(tmp_path, text)
    counts = run_import(path)
    assert (counts["invalid"], counts["imported"], counts["unchanged"], counts["asked"]) == (
        5,
        2,
        1,
        0,
    )
    for line in (2, 3, 5, 6, 7):
        assert f"line {line}: " in counts["err"]
    assert "calc" not in counts["err"]
    with session_scope() as s:
        formula = records.by_key(s, "formula@example.net")
        [event] = consent.ledger(s, formula.id)
        keys = sorted(k for k in s.exec(select(Subscriber.email_key)).all())
    assert event["consent"]["text"] == '=HYPERLINK("http://x")\r\nsecond line'  # evidence, verbatim
    assert keys == ["formula@example.net", "twice@example.net"]
    drain_worker()
    assert smtp.outbox.messages() == []


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"name,address\nA,a@example.net\n", "email"),
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not UTF-8"),
        (b'email\n"unterminated@example.net\n', "not a CSV file"),
        (b"email\n" + b"a@example.net\n" * 3 + b"x" * (import_file.MAX_CELL_BYTES + 10), "CSV"),
    ],
    ids=["no-email-column", "empty", "binary", "broken-quote", "cell-over-1MiB"],
)
def test_a_file_that_cannot_be_imported_is_refused_and_changes_nothing(
    client, tmp_path, content, says
):
    before = table_snapshot()
    message = refused(write(tmp_path, content))
    assert says in message and "nothing was imported" in message
    assert table_snapshot() == before


def test_a_missing_file_or_a_bad_source_is_refused(client, tmp_path):
    before = table_snapshot()
    assert "nothing was imported" in refused(tmp_path / "absent.csv")
    path = write(tmp_path, HEADER + "a@example.net,,,,\n")
    result = CliRunner().invoke(main, ["import", str(path), "--source", "  \n "])
    assert result.exit_code != 0 and "--source" in result.stderr
    result = CliRunner().invoke(main, ["import", str(path)])
    assert result.exit_code != 0
    assert table_snapshot() == before


def test_a_dry_run_prints_the_same_counts_and_changes_nothing(client, smtp, tmp_path):
    confirmed(client, smtp, "here@example.net", [MINDS])
    path = write(
        tmp_path,
        HEADER
        + "here@example.net,,,,\n"
        + "new@example.net,,,2025-01-01T00:00Z,\n"
        + "NEW@example.net,,,2025-01-01T00:00Z,\n"
        + "ask@example.net,,,,\n"
        + "bad,,,,\n",
    )
    before = table_snapshot()
    dry = run_import(path, "--dry-run")
    assert table_snapshot() == before
    drain_worker()
    assert smtp.outbox.messages() == []
    real = run_import(path)
    keys = ("imported", "asked", "unchanged", "suppressed", "invalid")
    assert {k: dry[k] for k in keys} == {k: real[k] for k in keys}
    assert {k: real[k] for k in keys} == {
        "imported": 1,
        "asked": 1,
        "unchanged": 2,
        "suppressed": 0,
        "invalid": 1,
    }


def test_progress_is_shown_on_a_large_file(client, tmp_path):
    lines = "".join(f"p{i}@example.net,,,2025-01-01T00:00Z,\n" for i in range(12_000))
    counts = run_import(write(tmp_path, HEADER + lines))
    assert counts["imported"] == 12_000
    assert "10,000 of 12,000 lines" in counts["err"]
    assert count("subscriber") == 12_000


def test_an_asked_address_that_never_confirms_is_purged_with_other_sign_ups(client, smtp, tmp_path):
    run_import(write(tmp_path, HEADER + "silent@example.net,,,,\n"))
    smtp.outbox.wait_for(1)
    drain_worker()
    with session_scope() as s:
        assert erasure.purge(s, utcnow() + timedelta(days=6)).unconfirmed == 0
    with session_scope() as s:
        assert erasure.purge(s, utcnow() + timedelta(days=9)).unconfirmed == 1
    assert count("subscriber") == 0


def test_the_console_page_previews_then_imports(client, smtp, session):
    from tests.staff.test_console import csrf_of, signed_in_client

    signed_in_client(client, session, email="admin@gla.example", role="admin")
    page = client.get("/admin/import")
    assert page.status_code == 200
    csrf = csrf_of(page.text)
    content = HEADER + "a@example.net,,,2025-01-01T00:00Z,Yes\n" + "broken,,,,\n"
    before = table_snapshot()
    preview = client.post(
        "/admin/import",
        data={"source": "Old provider", "csrf_token": csrf},
        files={"file": ("list.csv", content.encode(), "text/csv")},
    )
    assert preview.status_code == 200 and "nothing has changed yet" in preview.text
    assert "Line 3: not a valid email address" in preview.text and "broken" not in preview.text
    assert data_snapshot() == {t: n for t, n in before.items() if t != "audit_log"}
    upload = re.search(r'name="upload" value="([0-9a-f]+)"', preview.text).group(1)
    done = client.post(
        "/admin/import", data={"upload": upload, "source": "Old provider", "csrf_token": csrf}
    )
    assert done.status_code == 200 and "Imported" in done.text
    assert subscriber("a@example.net").status == SubscriberStatus.ACTIVE
    again = client.post(
        "/admin/import", data={"upload": upload, "source": "Old provider", "csrf_token": csrf}
    )
    assert again.status_code == 422  # the upload is gone once imported
    bad = client.post(
        "/admin/import",
        data={"source": "Old provider", "csrf_token": csrf},
        files={"file": ("x.csv", b"name\nx\n", "text/csv")},
    )
    assert bad.status_code == 422 and "email" in bad.text


def test_the_console_import_is_for_admins_only(client, session):
    from tests.staff.test_console import signed_in_client

    signed_in_client(client, session, email="sender@gla.example", role="sender")
    assert client.get("/admin/import").status_code == 403


def test_re_permission_emails_are_bulk_mail_within_the_send_rate(
    client, smtp, settings_env, tmp_path
):
    import time

    settings_env(send_rate=2)
    rows = "".join(f"ask{i}@example.net,,,,\n" for i in range(5))
    started = time.monotonic()
    assert run_import(write(tmp_path, HEADER + rows))["asked"] == 5
    assert len(smtp.outbox.wait_for(5, timeout=30)) == 5
    # Two a second: the fifth cannot go before the third second has begun.
    assert time.monotonic() - started >= 1.0
