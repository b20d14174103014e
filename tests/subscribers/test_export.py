"""Right of access: /my-data holds everything we keep about a subscriber, and no table is missed."""

from __future__ import annotations

import time
from datetime import timedelta

import sqlalchemy as sa
from itsdangerous import URLSafeTimedSerializer

from mailing.db import get_engine
from mailing.models import PERSONAL_DATA_TABLES, SoftBounce, utcnow
from mailing.states import DeliveryStatus
from mailing.subscribers import links
from mailing.subscribers.records import link_check
from mailing.subscribers.rights import EXPORT_SECTIONS
from mailing.subscribers.tokens import EXPORT_MAX_AGE_SECONDS, Purpose, _serializer_for
from tests.conftest import TEST_SECRET
from tests.support.residents import add_weekly_summary
from tests.support.selfservice import active_subscriber, add_delivery


def _path(url):
    return url.removeprefix("http://testserver")


def _tables_about_subscribers() -> dict[str, str]:
    """Every table in the real, migrated database that points at a subscriber, and the column
    that does: found by inspecting the schema, so a table added later cannot be forgotten."""
    inspector = sa.inspect(get_engine())
    found: dict[str, str] = {"subscriber": "id"}
    for table in inspector.get_table_names():
        if table == "alembic_version":
            continue
        columns = {c["name"] for c in inspector.get_columns(table)}
        if "subscriber_id" in columns:
            found[table] = "subscriber_id"
        for fk in inspector.get_foreign_keys(table):
            if fk["referred_table"] == "subscriber":
                found[table] = fk["constrained_columns"][0]
    return found


def _rows_for(table: str, column: str, subscriber_id: int) -> int:
    with get_engine().connect() as conn:
        return int(
            conn.execute(
                sa.text(f'SELECT COUNT(*) FROM "{table}" WHERE "{column}" = :id'),
                {"id": subscriber_id},
            ).scalar_one()
        )


def test_every_table_that_holds_a_subscribers_data_is_in_the_export(client, smtp, session):
    sub = active_subscriber(client, smtp, session, "complete@example.org", ["healthy-minds"])
    client.post(_path(links.url_for(Purpose.MANAGE, sub)), json={"themes": ["healthy-places"]})
    add_delivery(session, sub.id, subject="One", status=DeliveryStatus.SENT, sent_at=utcnow())
    two = add_delivery(session, sub.id, subject="Two")
    session.add(SoftBounce(subscriber_id=sub.id, update_id=two.update_id, status_code="4.2.2"))
    from mailing.mail import outbox
    from mailing.states import NoticeKind

    outbox.queue(session, sub.id, NoticeKind.ERASE_LINK)  # an email owed, not yet sent
    add_weekly_summary(session, sub.id)
    session.commit()
    exported = client.get(f"/my-data/{links.token_for(Purpose.EXPORT, sub)}").json()

    tables = _tables_about_subscribers()
    assert {"subscriber", "subscriber_theme", "consent_event", "delivery"} <= set(tables)
    for table, column in tables.items():
        assert table in PERSONAL_DATA_TABLES, f"{table} points at subscribers: list it"
        assert table in EXPORT_SECTIONS, f"{table} holds a subscriber's rows: export it"
        section = exported[EXPORT_SECTIONS[table]]
        rows = _rows_for(table, column, sub.id)
        assert rows > 0, f"the test should give {table} a row for this subscriber"
        shown = 1 if isinstance(section, dict) else len(section)
        assert shown == rows, f"{table}: {rows} rows held, {shown} exported"


def test_export_holds_address_status_themes_ledger_and_updates_sent(client, smtp, session):
    sub = active_subscriber(client, smtp, session, "Access.Me@Example.org", ["healthy-minds"])
    sent_at = utcnow() - timedelta(days=1)
    delivery = add_delivery(
        session, sub.id, subject="Parks update", status=DeliveryStatus.SENT, sent_at=sent_at
    )
    someone = active_subscriber(client, smtp, session, "someone@example.org")
    add_delivery(session, someone.id, subject="Not yours")
    url = f"/my-data/{links.token_for(Purpose.EXPORT, sub)}"

    answer = client.get(url)

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    assert "attachment" in answer.headers["content-disposition"]
    assert answer.headers["cache-control"] == "no-store"
    data = answer.json()
    assert data["subscriber"]["email"] == "Access.Me@example.org"
    assert data["subscriber"]["status"] == "active"
    for stamp in ("created_at", "updated_at", "confirmed_at"):
        assert data["subscriber"][stamp]
    assert data["themes"] == ["healthy-minds"]
    assert [e["event"] for e in data["consent_ledger"]] == ["requested", "confirmed"]
    assert "Yes, please email me" in data["consent_ledger"][0]["consent"]["text"]
    assert data["deliveries"] == [
        {
            "update_id": delivery.update_id,
            "subject": "Parks update",
            "status": "sent",
            "sent_at": sent_at.isoformat(),
        }
    ]
    assert "someone@example.org" not in answer.text and "Not yours" not in answer.text


def test_an_unsubscribed_person_can_still_download_their_data(client, smtp, session):
    sub = active_subscriber(client, smtp, session, "left@example.org")
    client.post(_path(links.url_for(Purpose.UNSUBSCRIBE, sub)))
    data = client.get(f"/my-data/{links.token_for(Purpose.EXPORT, sub)}").json()
    assert data["subscriber"]["status"] == "unsubscribed"
    assert data["subscriber"]["unsubscribed_at"]
    assert data["consent_ledger"][-1]["event"] == "withdrawn"


def test_an_expired_download_link_gets_400(client, smtp, session):
    sub = active_subscriber(client, smtp, session, "late@example.org")
    serializer = _serializer_for(Purpose.EXPORT, (TEST_SECRET,))
    assert isinstance(serializer, URLSafeTimedSerializer)
    payload = {"s": sub.id, "v": sub.token_version, "h": link_check(sub)}
    stale = _signed_at(serializer, payload, time.time() - EXPORT_MAX_AGE_SECONDS - 60)
    answer = client.get(f"/my-data/{stale}")
    assert answer.status_code == 400 and "expired" in answer.text
    fresh = _signed_at(serializer, payload, time.time() - EXPORT_MAX_AGE_SECONDS + 60)
    assert client.get(f"/my-data/{fresh}").status_code == 200


def _signed_at(serializer, payload, when: float) -> str:
    """A token as if signed at `when`: itsdangerous reads the clock through get_timestamp."""
    signer = serializer.make_signer()
    signer.get_timestamp = lambda: int(when)
    return signer.sign(serializer.dump_payload(payload)).decode()


def test_bad_links_to_my_data_get_400(client, smtp, session):
    sub = active_subscriber(client, smtp, session, "nodata@example.org")
    wrong = (Purpose.UNSUBSCRIBE, Purpose.MANAGE, Purpose.ERASE)
    for token in (*(links.token_for(p, sub) for p in wrong), "forged.token", "x" * 500):
        assert client.get(f"/my-data/{token}").status_code == 400
        answer = client.get(f"/my-data/{token}", headers={"accept": "application/json"})
        assert answer.status_code == 400 and "detail" in answer.json()
