"""`POST /webhooks/ses`: SES notifications through SNS, signed by a certificate of the test's own
making and served from a loopback "SNS host"; anything unsigned or badly signed is 403 and
changes nothing."""

from __future__ import annotations

import base64
import functools
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlmodel import select

from mailing.config import SNS_CERT_URL_PATTERN
from mailing.deliverability import sns
from mailing.models import ConsentEvent, SoftBounce
from mailing.states import DeliveryStatus, SubscriberStatus
from tests.support.deliverability import (
    DOMAIN,
    delivery_status,
    metric,
    sent_update,
    subscriber_status,
)
from tests.support.helpers import self_signed_pem, table_snapshot

TOPIC = "arn:aws:sns:eu-west-2:123456789012:mailing-ses"
CERT_PATH = "/SimpleNotificationService-0123456789abcdef.pem"


@functools.cache
def _key(name: str) -> rsa.RSAPrivateKey:
    """RSA keys take a moment to make: one per name for the whole run."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class SnsHost:
    """The loopback stand-in for sns.<region>.amazonaws.com: serves the signing certificate and
    answers subscription confirmations, counting both."""

    def __init__(self) -> None:
        self.key = _key("sns")
        self.pem = self_signed_pem(self.key, "sns.test")
        self.cert_fetches = 0
        self.gets: list[str] = []  # every GET's path, whatever it asked for
        self.confirmations: list[str] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host.gets.append(self.path)
                if self.path == CERT_PATH:
                    host.cert_fetches += 1
                    body = host.pem
                elif self.path.startswith("/?Action=ConfirmSubscription"):
                    host.confirmations.append(self.path)
                    body = b"<ConfirmSubscriptionResponse/>"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def sign(
        self, fields: dict[str, str], version: str = "1", key: rsa.RSAPrivateKey | None = None
    ) -> dict[str, str]:
        message = {
            "SignatureVersion": version,
            "SigningCertURL": self.origin + CERT_PATH,
            "TopicArn": TOPIC,
            "MessageId": "b7f3c2a0-0000-4000-8000-000000000001",
            "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            **fields,
        }
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        to_sign = sns._string_to_sign(message["Type"], message)
        signature = (key or self.key).sign(to_sign, padding.PKCS1v15(), algorithm)
        message["Signature"] = base64.b64encode(signature).decode()
        return message


@pytest.fixture
def sns_host(settings_env) -> Iterator[SnsHost]:
    host = SnsHost()
    settings_env(
        bounce_domain=DOMAIN,
        ses_topic_arns=TOPIC,
        sns_cert_url_pattern=r"^http://127\.0\.0\.1:\d+/SimpleNotificationService-[a-f0-9]+\.pem$",
    )
    sns.forget_certificates()
    yield host
    host.server.shutdown()
    sns.forget_certificates()


def _ses(kind: str, source: str, **detail: Any) -> dict[str, str]:
    body: dict[str, Any] = {"notificationType": kind, "mail": {"source": source}, **detail}
    return {"Type": "Notification", "Message": json.dumps(body)}


def _permanent(source: str) -> dict[str, str]:
    recipient = {"emailAddress": "x@example.net", "status": "5.1.1", "diagnosticCode": "smtp; 550"}
    return _ses(
        "Bounce",
        source,
        bounce={"bounceType": "Permanent", "bouncedRecipients": [recipient]},
    )


def _post(client, message: Any):
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    return client.post(
        "/webhooks/ses", content=body, headers={"Content-Type": "text/plain; charset=UTF-8"}
    )


def test_a_signed_permanent_bounce_marks_the_copy_and_the_subscriber_bounced(client, sns_host):
    [copy] = sent_update(1)
    answer = _post(client, sns_host.sign(_permanent(copy.return_path)))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "hard_bounce"}
    assert delivery_status(copy.delivery_id) == DeliveryStatus.BOUNCED
    assert subscriber_status(copy.subscriber_id) == SubscriberStatus.BOUNCED


def test_signature_version_2_is_verified_with_sha256(client, sns_host):
    [copy] = sent_update(1)
    assert _post(client, sns_host.sign(_permanent(copy.return_path), "2")).status_code == 200
    assert subscriber_status(copy.subscriber_id) == SubscriberStatus.BOUNCED


def test_a_signed_transient_bounce_is_counted_as_soft(client, sns_host, session):
    [copy] = sent_update(1)
    message = _ses("Bounce", copy.return_path, bounce={"bounceType": "Transient"})
    assert _post(client, sns_host.sign(message)).json() == {"status": "soft_bounce"}
    assert subscriber_status(copy.subscriber_id) == SubscriberStatus.ACTIVE
    session.expire_all()
    assert len(session.exec(select(SoftBounce)).all()) == 1


def test_a_signed_complaint_unsubscribes_through_the_consent_ledger(client, sns_host, session):
    [copy] = sent_update(1)
    message = _ses("Complaint", copy.return_path, complaint={"complaintFeedbackType": "abuse"})
    assert _post(client, sns_host.sign(message)).json() == {"status": "complaint"}
    assert delivery_status(copy.delivery_id) == DeliveryStatus.COMPLAINED
    assert subscriber_status(copy.subscriber_id) == SubscriberStatus.UNSUBSCRIBED
    session.expire_all()
    channels = session.exec(
        select(ConsentEvent.channel).where(ConsentEvent.subscriber_id == copy.subscriber_id)
    ).all()
    assert "complaint" in channels


def test_a_delivery_notification_changes_nothing(client, sns_host):
    [copy] = sent_update(1)
    before = table_snapshot()
    message = _ses("Delivery", copy.return_path, delivery={"smtpResponse": "250 ok"})
    assert _post(client, sns_host.sign(message)).json() == {"status": "ignored"}
    assert table_snapshot() == before


def test_a_replayed_notification_changes_nothing_more(client, sns_host):
    [copy] = sent_update(1)
    signed = sns_host.sign(_permanent(copy.return_path))
    assert _post(client, signed).status_code == 200
    after_first = table_snapshot()
    assert _post(client, signed).status_code == 200
    assert table_snapshot() == after_first


def test_a_signed_notification_with_a_forged_ref_changes_nothing(client, sns_host):
    [copy] = sent_update(1)
    before = table_snapshot()
    forged = f"bounce+d{copy.delivery_id}-{copy.subscriber_id}-aaaaaaaaaaaa@{DOMAIN}"
    assert _post(client, sns_host.sign(_permanent(forged))).json() == {"status": "forged"}
    assert table_snapshot() == before


def test_the_signing_certificate_is_fetched_once(client, sns_host):
    copies = sent_update(3)
    for copy in copies:
        assert _post(client, sns_host.sign(_permanent(copy.return_path))).status_code == 200
    assert sns_host.cert_fetches == 1


def test_a_subscription_confirmation_is_confirmed_on_the_sns_host(client, sns_host):
    url = f"{sns_host.origin}/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=abc"
    message = sns_host.sign(
        {
            "Type": "SubscriptionConfirmation",
            "Message": "confirm",
            "Token": "abc",
            "SubscribeURL": url,
        }
    )
    answer = _post(client, message)
    assert answer.status_code == 200 and answer.json() == {"status": "confirmed"}
    assert len(sns_host.confirmations) == 1


def test_a_subscription_url_off_the_sns_host_is_never_visited(client, sns_host):
    message = sns_host.sign(
        {
            "Type": "SubscriptionConfirmation",
            "Message": "confirm",
            "Token": "abc",
            "SubscribeURL": "http://127.0.0.2:9/?Action=ConfirmSubscription",
        }
    )
    assert _post(client, message).status_code == 403
    assert sns_host.confirmations == []


def _hostile(host: SnsHost, return_path: str) -> dict[str, Any]:
    genuine = host.sign(_permanent(return_path))
    other_key = _key("someone else")
    stale = dict(_permanent(return_path), Timestamp="2020-01-01T00:00:00.000Z")
    return {
        "unsigned": {k: v for k, v in genuine.items() if k != "Signature"},
        "altered": {**genuine, "Message": genuine["Message"].replace("Permanent", "Permanent ")},
        "other-key": host.sign(_permanent(return_path), key=other_key),
        "other-topic": {**genuine, "TopicArn": "arn:aws:sns:eu-west-2:999999999999:theirs"},
        "cert-elsewhere": {**genuine, "SigningCertURL": "http://127.0.0.2/evil.pem"},
        "cert-https-lookalike": {
            **genuine,
            "SigningCertURL": "https://sns.eu-west-2.amazonaws.com.evil.example/Simple.pem",
        },
        "stale": host.sign(stale),
        "bad-version": {**genuine, "SignatureVersion": "3"},
        "not-base64": {**genuine, "Signature": "!!!"},
        "unknown-type": {**genuine, "Type": "Surprise"},
        "not-an-object": [genuine],
        "garbage": b"\x00\xffnot json",
        "empty": b"",
    }


@pytest.mark.parametrize(
    "case",
    [
        "unsigned",
        "altered",
        "other-key",
        "other-topic",
        "cert-elsewhere",
        "cert-https-lookalike",
        "stale",
        "bad-version",
        "not-base64",
        "unknown-type",
        "not-an-object",
        "garbage",
        "empty",
    ],
)
def test_anything_unsigned_or_badly_signed_gets_403_and_changes_nothing(client, sns_host, case):
    [copy] = sent_update(1)
    message = _hostile(sns_host, copy.return_path)[case]
    before = table_snapshot()
    counted = metric("mailing_inbound_messages_total", outcome="unsigned")
    answer = _post(client, message)
    assert answer.status_code == 403
    assert answer.json() == {"detail": "The SNS signature did not verify."}
    assert table_snapshot() == before
    assert metric("mailing_inbound_messages_total", outcome="unsigned") == counted + 1


def test_at_production_defaults_no_notification_is_believed(client, sns_host, settings_env):
    """Production, with only the required settings: no topic is configured and the certificate
    must come from Amazon's SNS hosts, so even a well-formed signed message is refused."""
    settings_env(env="production", ses_topic_arns="", sns_cert_url_pattern=SNS_CERT_URL_PATTERN)
    [copy] = sent_update(1)
    assert _post(client, sns_host.sign(_permanent(copy.return_path))).status_code == 403
    settings_env(ses_topic_arns=TOPIC)
    assert _post(client, sns_host.sign(_permanent(copy.return_path))).status_code == 403
    assert subscriber_status(copy.subscriber_id) == SubscriberStatus.ACTIVE
