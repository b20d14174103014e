"""End to end through a real MTA: the service sends through Debian's postfix, which relays to a
mailbox server that refuses some recipients and defers others; postfix writes the bounces and
delivers them to `mailing inbound` (a real process), all at default settings in production mode.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from mailing.db import get_engine
from mailing.mail.devcapture import _free_port
from mailing.models import Delivery, SoftBounce, Subscriber
from mailing.states import DeliveryStatus, SubscriberStatus
from mailing.subscribers import links
from mailing.subscribers.tokens import Purpose
from tests.support.deliverability import DOMAIN
from tests.support.mta import messages
from tests.support.mta.mailbox import Mailbox, mailbox_server
from tests.support.mta.postfix import Postfix, require_postfix
from tests.support.sending import add_subscribers, draft, start, wait_sent, wait_until

pytestmark = pytest.mark.slow


def _mailing_command() -> list[str]:
    script = Path(sys.executable).parent / "mailing"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mailing.cli"]


@pytest.fixture
def inbound_process(database, settings_env) -> Iterator[int]:
    """`mailing inbound` as operators run it, with MAILING_ENV=production and nothing else set
    beyond what production requires."""
    settings_env(env="production", bounce_domain=DOMAIN)
    port = _free_port()
    process = subprocess.Popen(
        [*_mailing_command(), "inbound", "--port", str(port)],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )

    def listening() -> bool:
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    try:
        wait_until(listening, 30, "mailing inbound to listen")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def _count(status: SubscriberStatus) -> int:
    with get_engine().connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(Subscriber)
                .where(Subscriber.status == status)
            ).scalar_one()
        )


def test_ten_unknown_recipients_of_two_hundred_bounce_and_the_next_update_goes_to_190(
    worker, inbound_process, settings_env
):
    require_postfix()
    emails = add_subscribers(200, ["healthy-living"], prefix="resident")
    unknown = set(emails[::20])
    assert len(unknown) == 10
    with (
        mailbox_server(Mailbox(refuse=unknown)) as mailbox,
        Postfix(mailbox.port, inbound_process, DOMAIN) as mta,
    ):
        settings_env(smtp_host="127.0.0.1", smtp_port=mta.port)
        first = draft(themes=["healthy-living"])
        assert start(first) == 200
        wait_sent(first)
        mailbox.sink.wait_for(190, timeout=120)
        mta.wait_until(lambda: _count(SubscriberStatus.BOUNCED) == 10, 120, "10 bounced")
        with get_engine().connect() as conn:
            bounced = conn.execute(
                sa.select(Subscriber.email)
                .join(Delivery, Delivery.subscriber_id == Subscriber.id)
                .where(Delivery.update_id == first, Delivery.status == DeliveryStatus.BOUNCED)
            ).scalars()
            assert set(bounced) == unknown

        second = draft(themes=["healthy-living"])
        assert start(second) == 190
        wait_sent(second)
        received = mailbox.sink.wait_for(380, timeout=120)
    second_round = [rcpt for _, rcpt, _ in received[190:]]
    assert len(second_round) == 190 and not unknown & set(second_round)
    assert _count(SubscriberStatus.ACTIVE) == 190


def test_mail_the_mta_cannot_deliver_in_time_becomes_a_soft_bounce(
    worker, inbound_process, settings_env
):
    require_postfix()
    [busy] = add_subscribers(1, ["healthy-living"], prefix="busy")
    with (
        mailbox_server(Mailbox(defer={busy})) as mailbox,
        Postfix(mailbox.port, inbound_process, DOMAIN, lifetime="3s") as mta,
    ):
        settings_env(smtp_host="127.0.0.1", smtp_port=mta.port)
        update = draft(themes=["healthy-living"])
        start(update)
        wait_sent(update)

        def counted() -> bool:
            with get_engine().connect() as conn:
                return bool(
                    conn.execute(sa.select(sa.func.count()).select_from(SoftBounce)).scalar_one()
                )

        mta.wait_until(counted, 120, "postfix to give up and the soft bounce to be counted")
    assert _count(SubscriberStatus.ACTIVE) == 1


def test_a_complaint_report_and_a_mailto_unsubscribe_through_the_mta_unsubscribe(
    worker, inbound_process, settings_env, session
):
    require_postfix()
    import smtplib

    complainer, leaver = add_subscribers(2, ["healthy-living"], prefix="reader")
    with mailbox_server() as mailbox, Postfix(mailbox.port, inbound_process, DOMAIN) as mta:
        settings_env(smtp_host="127.0.0.1", smtp_port=mta.port)
        update = draft(themes=["healthy-living"])
        start(update)
        wait_sent(update)
        received = {rcpt: mail_from for mail_from, rcpt, _ in mailbox.sink.wait_for(2, 60)}
        leaver_row = session.exec(
            sa.select(Subscriber).where(Subscriber.email == leaver)
        ).scalar_one()
        token = links.token_for(Purpose.UNSUBSCRIBE, leaver_row)
        with smtplib.SMTP("127.0.0.1", mta.port) as smtp:
            fbl = f"fbl@{DOMAIN}"
            smtp.sendmail(
                "reports@fbl.example.net",
                [fbl],
                messages.arf(fbl, complainer, received[complainer]),
            )
            mailto = f"unsubscribe+{token}@{DOMAIN}"
            smtp.sendmail(leaver, [mailto], messages.auto_reply(mailto))
        mta.wait_until(lambda: _count(SubscriberStatus.UNSUBSCRIBED) == 2, 60, "both unsubscribed")
