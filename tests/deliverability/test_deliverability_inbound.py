"""`mailing inbound` over real SMTP: bounces (DSN and non-standard), complaint reports and
mailto: unsubscribes change exactly what the rules say, and hostile input changes nothing."""

from __future__ import annotations

import random
import smtplib
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import select

from mailing.db import get_engine
from mailing.deliverability import returnpath, rules
from mailing.deliverability.classify import Kind, classify
from mailing.models import ConsentEvent, SoftBounce, Subscriber, utcnow
from mailing.states import ConsentEventKind, DeliveryStatus, SubscriberStatus
from mailing.subscribers import erasure
from mailing.subscribers.tokens import Purpose
from tests.conftest import DATABASE_URL
from tests.support.deliverability import (
    DOMAIN,
    another_update,
    delivery_error,
    delivery_status,
    inbound_server,
    metric,
    send_to,
    sent_update,
    subscriber_status,
)
from tests.support.helpers import table_snapshot
from tests.support.mta import messages


@pytest.fixture
def inbound(database, settings_env):
    settings_env(bounce_domain=DOMAIN)
    with inbound_server() as server:
        yield server


def _withdrawals(session, subscriber_id: int) -> list[str]:
    session.expire_all()
    return list(
        session.exec(
            select(ConsentEvent.channel).where(
                ConsentEvent.subscriber_id == subscriber_id,
                ConsentEvent.kind == ConsentEventKind.WITHDRAWN,
            )
        ).all()
    )


# --- Bounces ------------------------------------------------------------------------------------


def test_a_hard_bounce_marks_the_copy_and_the_subscriber_bounced(inbound):
    [copy] = sent_update(1)
    before = metric("mailing_bounces_total", kind="hard")
    send_to(inbound, copy.return_path, messages.dsn(copy.return_path, copy.email, "5.1.1"))
    assert delivery_status(copy.delivery_id) == DeliveryStatus.BOUNCED
    assert subscriber_status(copy.subscriber_id) == SubscriberStatus.BOUNCED
    assert metric("mailing_bounces_total", kind="hard") == before + 1


def test_what_is_kept_of_a_bounce_is_the_status_and_a_diagnostic_without_addresses(inbound):
    [copy] = sent_update(1)
    send_to(inbound, copy.return_path, messages.dsn(copy.return_path, copy.email, "5.1.1"))
    error = delivery_error(copy.delivery_id)
    assert error is not None and error.startswith("hard 5.1.1")
    assert "@" not in error and copy.email.split("@")[0] not in error
    assert len(error) <= 200


def test_a_bounced_subscriber_is_not_sent_the_next_update(inbound):
    copies = sent_update(3)
    send_to(inbound, copies[0].return_path, messages.dsn(copies[0].return_path, copies[0].email))
    following = another_update()
    assert {c.subscriber_id for c in following} == {c.subscriber_id for c in copies[1:]}


def test_a_hard_bounce_cancels_the_subscribers_pending_copies(inbound, session):
    [copy] = sent_update(1)
    from tests.support.sending import draft, start

    pending = draft(themes=["healthy-minds"])
    start(pending, enqueue=False)
    send_to(inbound, copy.return_path, messages.dsn(copy.return_path, copy.email))
    with get_engine().connect() as conn:
        statuses = conn.execute(
            sa.text("SELECT status FROM delivery WHERE update_id = :u"), {"u": pending}
        ).scalars()
        assert [DeliveryStatus(s) for s in statuses] == [DeliveryStatus.CANCELLED]


def test_a_bounce_without_a_dsn_is_read_by_mailmans_detectors(inbound):
    [copy] = sent_update(1)
    send_to(inbound, copy.return_path, messages.exim_bounce(copy.return_path, copy.email))
    assert subscriber_status(copy.subscriber_id) == SubscriberStatus.BOUNCED


def test_the_same_bounce_twice_changes_nothing_more(inbound):
    [copy] = sent_update(1)
    raw = messages.dsn(copy.return_path, copy.email)
    send_to(inbound, copy.return_path, raw)
    after_first = table_snapshot()
    send_to(inbound, copy.return_path, raw)
    assert table_snapshot() == after_first
    assert subscriber_status(copy.subscriber_id) == SubscriberStatus.BOUNCED


def test_soft_bounces_on_three_updates_count_as_a_hard_bounce(inbound):
    first = sent_update(1)[0]
    rounds = [first, another_update()[0], another_update()[0]]
    for i, copy in enumerate(rounds):
        send_to(inbound, copy.return_path, messages.dsn(copy.return_path, copy.email, "4.2.2"))
        expected = SubscriberStatus.BOUNCED if i == 2 else SubscriberStatus.ACTIVE
        assert subscriber_status(copy.subscriber_id) == expected
    assert delivery_status(rounds[2].delivery_id) == DeliveryStatus.BOUNCED
    assert delivery_status(rounds[0].delivery_id) == DeliveryStatus.SENT


def test_soft_bounces_on_one_update_count_once(inbound):
    [copy] = sent_update(1)
    for _ in range(4):
        send_to(inbound, copy.return_path, messages.dsn(copy.return_path, copy.email, "4.2.2"))
    assert subscriber_status(copy.subscriber_id) == SubscriberStatus.ACTIVE


def test_soft_bounces_older_than_the_window_do_not_count(database, settings_env, session):
    settings_env(bounce_domain=DOMAIN)
    copies = [sent_update(1)[0], another_update()[0], another_update()[0]]
    refs = [returnpath.decode(c.ref) for c in copies]
    now = utcnow()
    rules.soft_bounce(session, refs[0], "4.2.2", now - timedelta(days=31))
    rules.soft_bounce(session, refs[1], "4.2.2", now)
    rules.soft_bounce(session, refs[2], "4.2.2", now)
    session.commit()
    assert subscriber_status(copies[0].subscriber_id) == SubscriberStatus.ACTIVE


def test_the_soft_bounce_thresholds_are_settings(database, settings_env):
    settings_env(bounce_domain=DOMAIN, soft_bounce_limit=1)
    with inbound_server() as server:
        [copy] = sent_update(1)
        send_to(server, copy.return_path, messages.dsn(copy.return_path, copy.email, "4.4.1"))
    assert subscriber_status(copy.subscriber_id) == SubscriberStatus.BOUNCED


def test_a_delay_notice_is_a_soft_bounce(inbound, session):
    [copy] = sent_update(1)
    raw = messages.dsn(copy.return_path, copy.email, "4.4.7", action="delayed")
    send_to(inbound, copy.return_path, raw)
    session.expire_all()
    assert len(session.exec(select(SoftBounce)).all()) == 1


def test_a_bounce_about_an_erased_subscriber_changes_and_stores_nothing(inbound, session):
    [copy] = sent_update(1)
    erasure.erase(session, session.get(Subscriber, copy.subscriber_id), "request")
    session.commit()
    before = table_snapshot()
    send_to(inbound, copy.return_path, messages.dsn(copy.return_path, copy.email, "5.1.1"))
    send_to(inbound, copy.return_path, messages.dsn(copy.return_path, copy.email, "4.2.2"))
    send_to(inbound, copy.return_path, messages.arf(copy.return_path, copy.email, copy.return_path))
    assert table_snapshot() == before


def test_a_late_bounce_for_a_copy_sent_before_confirming_again_leaves_them_subscribed(inbound):
    [copy] = sent_update(1)
    with get_engine().begin() as conn:
        conn.execute(
            sa.update(Subscriber)
            .where(Subscriber.id == copy.subscriber_id)
            .values(confirmed_at=utcnow() + timedelta(seconds=5))
        )
    send_to(inbound, copy.return_path, messages.dsn(copy.return_path, copy.email))
    assert subscriber_status(copy.subscriber_id) == SubscriberStatus.ACTIVE
    assert delivery_status(copy.delivery_id) == DeliveryStatus.BOUNCED


def test_a_bounced_address_comes_back_only_by_signing_up_and_confirming(
    client, smtp, session, settings_env
):
    from tests.support.helpers import only_link, subscribe
    from tests.support.selfservice import active_subscriber, next_mail, reload

    settings_env(bounce_domain=DOMAIN)
    sub = active_subscriber(client, smtp, session, "back@example.net", ["healthy-minds"])
    ref = returnpath.Ref(returnpath.RefKind.NOTICE, sub.id)
    assert rules.hard_bounce(session, ref, "5.1.1", "", utcnow())
    session.commit()
    assert reload(session, "back@example.net").status == SubscriberStatus.BOUNCED
    assert another_update() == []
    mail = next_mail(smtp, lambda: subscribe(client, "back@example.net", ["healthy-minds"]))
    assert reload(session, "back@example.net").status == SubscriberStatus.BOUNCED
    assert client.post(only_link(mail, "confirm")).status_code == 200
    assert reload(session, "back@example.net").status == SubscriberStatus.ACTIVE
    assert len(another_update()) == 1


def test_a_bounced_subscriber_is_purged_like_an_unsubscribed_one(database, settings_env, session):
    settings_env(bounce_domain=DOMAIN)
    [copy] = sent_update(1)
    rules.hard_bounce(session, returnpath.decode(copy.ref), "5.1.1", "", utcnow())
    session.commit()
    result = erasure.purge(session, utcnow() + timedelta(days=31))
    session.commit()
    assert result.retained == 1
    assert subscriber_status(copy.subscriber_id) is None


# --- Complaints and unsubscribes by email -------------------------------------------------------


def test_a_complaint_report_unsubscribes_and_is_recorded_as_a_complaint(inbound, session):
    [copy] = sent_update(1)
    before = metric("mailing_complaints_total")
    send_to(inbound, copy.return_path, messages.arf(copy.return_path, copy.email, copy.return_path))
    assert delivery_status(copy.delivery_id) == DeliveryStatus.COMPLAINED
    assert subscriber_status(copy.subscriber_id) == SubscriberStatus.UNSUBSCRIBED
    assert _withdrawals(session, copy.subscriber_id) == ["complaint"]
    assert metric("mailing_complaints_total") == before + 1


def test_a_feedback_loop_report_to_its_own_address_is_traced_by_the_return_path(inbound, session):
    [copy] = sent_update(1)
    fbl = f"fbl@{DOMAIN}"
    send_to(inbound, fbl, messages.arf(fbl, "redacted@example.net", copy.return_path))
    assert subscriber_status(copy.subscriber_id) == SubscriberStatus.UNSUBSCRIBED
    assert _withdrawals(session, copy.subscriber_id) == ["complaint"]


def test_a_report_that_shows_only_the_list_unsubscribe_header_is_traced_by_it(inbound, session):
    from mailing.subscribers import links

    [copy] = sent_update(1)
    sub = session.get(Subscriber, copy.subscriber_id)
    token = links.token_for(Purpose.UNSUBSCRIBE, sub)
    header = f"<http://testserver/unsubscribe/{token}>"
    fbl = f"fbl@{DOMAIN}"
    send_to(inbound, fbl, messages.arf(fbl, "x@example.net", "nobody@example.org", header))
    assert subscriber_status(copy.subscriber_id) == SubscriberStatus.UNSUBSCRIBED


def test_a_complaint_twice_is_recorded_once(inbound, session):
    [copy] = sent_update(1)
    raw = messages.arf(copy.return_path, copy.email, copy.return_path)
    send_to(inbound, copy.return_path, raw)
    send_to(inbound, copy.return_path, raw)
    assert _withdrawals(session, copy.subscriber_id) == ["complaint"]


def test_mail_to_the_mailto_unsubscribe_address_unsubscribes(inbound, session):
    from mailing.subscribers import links

    [copy] = sent_update(1)
    token = links.token_for(Purpose.UNSUBSCRIBE, session.get(Subscriber, copy.subscriber_id))
    address = returnpath.mailto_unsubscribe(token)
    send_to(inbound, address, messages.auto_reply(address), mail_from=copy.email)
    assert subscriber_status(copy.subscriber_id) == SubscriberStatus.UNSUBSCRIBED
    assert _withdrawals(session, copy.subscriber_id) == ["email"]


# --- Hostile input ------------------------------------------------------------------------------


def test_a_forged_or_altered_ref_changes_nothing(inbound, session):
    from mailing.subscribers import links

    [copy] = sent_update(1)
    subscriber = session.get(Subscriber, copy.subscriber_id)
    before_rows = table_snapshot()
    before = metric("mailing_inbound_messages_total", outcome="forged")
    other = returnpath.Ref(returnpath.RefKind.DELIVERY, copy.subscriber_id, copy.delivery_id)
    forged = [
        f"bounce+d{copy.delivery_id}-{copy.subscriber_id}-aaaaaaaaaaaa@{DOMAIN}",
        copy.return_path.replace(f"d{copy.delivery_id}-", f"d{copy.delivery_id + 1}-"),
        f"bounce+{returnpath.encode(other)[:-1]}@{DOMAIN}",
        f"bounce+garbage@{DOMAIN}",
        f"unsubscribe+not.a.token@{DOMAIN}",
        # A real token for another purpose (the preferences link) does not unsubscribe.
        f"unsubscribe+{links.token_for(Purpose.MANAGE, subscriber)}@{DOMAIN}",
    ]
    for to in forged:
        send_to(inbound, to, messages.dsn(to, copy.email))
    assert table_snapshot() == before_rows
    assert subscriber_status(copy.subscriber_id) == SubscriberStatus.ACTIVE
    assert metric("mailing_inbound_messages_total", outcome="forged") == before + len(forged)


def test_mail_for_any_other_domain_is_refused_never_relayed(inbound):
    before = metric("mailing_inbound_messages_total", outcome="refused_recipient")
    for to in ("someone@example.net", f"bounce+x@{DOMAIN}.evil.example", f"x@sub.{DOMAIN}"):
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            send_to(inbound, to, messages.auto_reply(to))
        assert next(iter(refused.value.recipients.values()))[0] == 550
    assert metric("mailing_inbound_messages_total", outcome="refused_recipient") == before + 3


def test_a_ten_megabyte_message_is_refused_and_kept_nowhere(inbound):
    [copy] = sent_update(1)
    before_rows = table_snapshot()
    before = metric("mailing_inbound_messages_total", outcome="too_big")
    huge = messages.dsn(copy.return_path, copy.email) + b"x" * 76 + (b"\r\n" + b"y" * 76) * 140_000
    with pytest.raises(smtplib.SMTPException) as refused:
        send_to(inbound, copy.return_path, huge)
    assert "552" in str(refused.value) or getattr(refused.value, "smtp_code", 0) == 552
    assert table_snapshot() == before_rows
    assert subscriber_status(copy.subscriber_id) == SubscriberStatus.ACTIVE
    assert metric("mailing_inbound_messages_total", outcome="too_big") >= before + 1


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage \x80\x81",
        b"Content-Type: multipart/report; boundary=\r\n\r\n--\r\n--\r\n",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=Z\r\n\r\n"
        b"--Z\r\nContent-Type: message/delivery-status\r\n\r\nStatus: 5.\xff.1\r\n\r\n--Z",
        b"Content-Type: message/feedback-report\r\n\r\nFeedback-Type: " + b"a" * 900,
        b"\r\n".join(random.Random(13).randbytes(200) for _ in range(20)),
    ],
    ids=["empty", "binary", "broken-mime", "broken-dsn", "bare-report", "random"],
)
def test_garbage_is_taken_and_ignored_without_changing_anything(inbound, raw):
    [copy] = sent_update(1)
    before_rows = table_snapshot()
    send_to(inbound, copy.return_path, raw)
    assert table_snapshot() == before_rows
    assert subscriber_status(copy.subscriber_id) == SubscriberStatus.ACTIVE


def test_an_auto_reply_to_the_return_path_is_ignored(inbound):
    [copy] = sent_update(1)
    before = metric("mailing_inbound_messages_total", outcome="ignored")
    send_to(inbound, copy.return_path, messages.auto_reply(copy.return_path))
    assert subscriber_status(copy.subscriber_id) == SubscriberStatus.ACTIVE
    assert metric("mailing_inbound_messages_total", outcome="ignored") == before + 1


def test_classification_keeps_no_address_from_the_diagnostic():
    raw = messages.dsn("bounce+x@bounce.test", "Secret.Person@example.net", "5.1.1")
    verdict = classify(raw)
    assert verdict.kind == Kind.HARD and verdict.status == "5.1.1"
    assert "Secret" not in verdict.diagnostic and "@" not in verdict.diagnostic


def test_with_the_database_down_the_sender_is_asked_to_try_again(inbound, settings_env):
    from mailing.db import reset_engine

    [copy] = sent_update(1)
    raw = messages.dsn(copy.return_path, copy.email)
    before = metric("mailing_inbound_messages_total", outcome="error")
    try:
        settings_env(database_url="postgresql+psycopg://postgres@127.0.0.1:9/nowhere")
        reset_engine()
        with pytest.raises(smtplib.SMTPDataError) as deferred:
            send_to(inbound, copy.return_path, raw)
        assert deferred.value.smtp_code == 451
    finally:
        settings_env(database_url=DATABASE_URL)
        reset_engine()
    assert metric("mailing_inbound_messages_total", outcome="error") == before + 1
    # The retry, once the database is back, does the work.
    send_to(inbound, copy.return_path, raw)
    assert subscriber_status(copy.subscriber_id) == SubscriberStatus.BOUNCED


def test_nothing_inbound_logs_an_address_or_a_token(inbound, session, caplog):
    import logging

    from mailing.subscribers import links

    [bounced, complainer, leaver] = sent_update(3)
    token = links.token_for(Purpose.UNSUBSCRIBE, session.get(Subscriber, leaver.subscriber_id))
    mailto = returnpath.mailto_unsubscribe(token)
    with caplog.at_level(logging.DEBUG):
        send_to(inbound, bounced.return_path, messages.dsn(bounced.return_path, bounced.email))
        raw = messages.arf(complainer.return_path, complainer.email, complainer.return_path)
        send_to(inbound, complainer.return_path, raw)
        send_to(inbound, mailto, messages.auto_reply(mailto), mail_from=leaver.email)
        send_to(inbound, f"bounce+forged@{DOMAIN}", messages.dsn("x", bounced.email))
    logged = caplog.text
    for secret in (bounced.email, complainer.email, leaver.email, token, bounced.ref):
        assert secret not in logged


def test_a_bounced_confirmation_email_leaves_the_pending_sign_up_alone(inbound):
    from tests.support.sending import add_subscribers

    add_subscribers(1, ["healthy-minds"], status=SubscriberStatus.PENDING.value, prefix="new")
    with get_engine().connect() as conn:
        sid = conn.execute(sa.select(Subscriber.id)).scalar_one()
    to = returnpath.for_notice("updates@example.org", sid)
    before = table_snapshot()
    send_to(inbound, to, messages.dsn(to, "new0@example.net", "5.1.1"))
    assert table_snapshot() == before
    assert subscriber_status(sid) == SubscriberStatus.PENDING


def test_a_not_spam_report_is_not_a_complaint(inbound):
    [copy] = sent_update(1)
    raw = messages.arf(copy.return_path, copy.email, copy.return_path).replace(
        b"Feedback-Type: abuse", b"Feedback-Type: not-spam"
    )
    send_to(inbound, copy.return_path, raw)
    assert subscriber_status(copy.subscriber_id) == SubscriberStatus.ACTIVE
    assert delivery_status(copy.delivery_id) == DeliveryStatus.SENT
