"""Staff see deliverability per update in the API; operators see it in the metrics; the
`mailing inbound` command refuses to start without its domain."""

from __future__ import annotations

from click.testing import CliRunner

from mailing.cli import main
from mailing.db import session_scope
from mailing.deliverability import returnpath, rules
from mailing.models import Delivery, Subscriber, utcnow
from mailing.subscribers.tokens import Purpose
from tests.support.deliverability import DOMAIN, inbound_server, send_to, sent_update
from tests.support.mta import messages
from tests.support.sending import api_staff as make_staff


def _update_of(delivery_id: int) -> int:
    with session_scope() as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        return delivery.update_id


def test_the_update_api_shows_bounces_complaints_unsubscribes_and_their_rates(client, settings_env):
    from mailing.subscribers import links, rights

    settings_env(bounce_domain=DOMAIN)
    copies = sent_update(50)
    with session_scope() as session:
        for copy in copies[:2]:
            rules.hard_bounce(session, returnpath.decode(copy.ref), "5.1.1", "", utcnow())
        rules.complaint(session, returnpath.decode(copies[2].ref))
        leaver = session.get(Subscriber, copies[3].subscriber_id)
        assert links.token_for(Purpose.UNSUBSCRIBE, leaver)
        rights.unsubscribe(session, leaver, channel="one-click")
    token = make_staff("editor")
    answer = client.get(
        f"/admin/updates/{_update_of(copies[0].delivery_id)}",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200
    body = answer.json()
    assert (body["bounced"], body["complained"], body["unsubscribed"]) == (2, 1, 1)
    assert body["delivered"] == 48
    assert body["bounce_rate"] == 0.04 and body["complaint_rate"] == 0.02
    assert body["deliverability_warnings"] == [
        "complaint rate over 0.1 %",
        "hard-bounce rate over 2 %",
    ]


def test_a_clean_send_shows_no_warning(client, settings_env):
    copies = sent_update(10)
    token = make_staff("editor")
    body = client.get(
        f"/admin/updates/{_update_of(copies[0].delivery_id)}",
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    assert (body["bounced"], body["complained"], body["deliverability_warnings"]) == (0, 0, [])


def test_metrics_count_bounces_complaints_and_inbound_outcomes(client, settings_env):
    settings_env(bounce_domain=DOMAIN)
    bounced, complainer = sent_update(2)
    with inbound_server() as server:
        send_to(server, bounced.return_path, messages.dsn(bounced.return_path, bounced.email))
        raw = messages.arf(complainer.return_path, complainer.email, complainer.return_path)
        send_to(server, complainer.return_path, raw)
    text = client.get("/metrics").text
    assert 'mailing_bounces_total{kind="hard"}' in text
    assert "mailing_complaints_total" in text
    assert 'mailing_inbound_messages_total{outcome="hard_bounce"}' in text
    assert 'mailing_inbound_messages_total{outcome="complaint"}' in text
    assert bounced.email not in text and complainer.email not in text


def test_the_inbound_command_refuses_to_start_without_a_bounce_domain(database):
    result = CliRunner().invoke(main, ["inbound", "--port", "0"])
    assert result.exit_code == 2
    assert "MAILING_BOUNCE_DOMAIN" in result.output


def test_bounce_and_complaint_rates_over_time_are_given_per_sent_update(database, settings_env):
    from sqlmodel import Session

    from mailing.db import get_engine
    from mailing.figures import deliverability
    from mailing.models import Update
    from mailing.states import UpdateStatus
    from tests.support.deliverability import another_update

    settings_env(bounce_domain=DOMAIN)
    first = sent_update(4)
    second = another_update()
    with session_scope() as session:
        rules.hard_bounce(session, returnpath.decode(first[0].ref), "5.1.1", "", utcnow())
        rules.complaint(session, returnpath.decode(second[1].ref))
        for copy in (first[0], second[0]):
            update = session.get(Update, _update_of(copy.delivery_id))
            update.status, update.sent_at = UpdateStatus.SENT, utcnow()
    with Session(get_engine()) as session:
        series = deliverability.over_time(session)
    assert [(p["bounce_rate"], p["complaint_rate"]) for p in series] == [(0.25, 0.0), (0.0, 0.25)]


def test_the_inbound_process_serves_its_own_counters_on_loopback(database, settings_env, tmp_path):
    """`mailing inbound --metrics-port P`: its bounce, complaint and message counters, which
    live in that process, are scraped from 127.0.0.1:P."""
    import os
    import smtplib
    import socket
    import subprocess
    import sys

    import httpx

    from mailing.mail.devcapture import _free_port
    from tests.support.sending import wait_until

    settings_env(env="production", bounce_domain="bounce.test")
    port, metrics_port = _free_port(), _free_port()
    metrics = ["--metrics-port", str(metrics_port)]
    process = subprocess.Popen(
        [sys.executable, "-m", "mailing.cli", "inbound", "--port", str(port), *metrics],
        env=dict(os.environ),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def listening() -> bool:
        assert process.poll() is None, "mailing inbound exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    try:
        wait_until(listening, 30, "mailing inbound to listen")
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            smtp.sendmail("mailer-daemon@example.org", ["bounce+garbage@bounce.test"], b"Hi\r\n")
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "mailing_inbound_messages_total{" in text
    counted = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("mailing_inbound_messages_total{")
    ]
    assert sum(counted) >= 1
