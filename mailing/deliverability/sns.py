"""Amazon SNS messages, believed only when their signature verifies with a certificate fetched
from the SNS host pattern (`sns_cert_url_pattern`), for a topic we named (`ses_topic_arns`).

A signature proves only that SNS sent the message, and anyone can have SNS sign for a topic of
their own: the topic must be ours too. Certificates are fetched once per URL and kept for
CERT_TTL (SNS signs with a handful); a fetch that failed is remembered for FAILURE_TTL, so a
request naming our topic cannot make the server fetch again each time; at most MAX_CERT_URLS
URLs are remembered, the least recently used forgotten first. Nothing here is trusted until
`verify` returns.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mailing.config import get_settings

# The fields each kind of message signs, in the order they are signed (AWS's documentation).
SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
SIGNED_FIELDS["UnsubscribeConfirmation"] = SIGNED_FIELDS["SubscriptionConfirmation"]
HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
MAX_AGE = timedelta(days=1)  # SNS retries for at most about an hour by default
MAX_CERT_BYTES = 16 * 1024
FETCH_TIMEOUT = 5.0
CERT_TTL = 6 * 3600.0  # seconds a fetched certificate is kept (SNS rotates them rarely)
FAILURE_TTL = 300.0  # seconds a failed fetch is remembered before the URL is tried again
MAX_CERT_URLS = 32


class Rejected(Exception):
    """Not a message we believe: unsigned, badly signed, stale, or for a topic not ours."""


class CertificateUnavailable(Exception):
    """The signing certificate could not be fetched: SNS should try again later."""


def verify(message: object, now: datetime | None = None) -> dict[str, str]:
    """The message's fields, if it is a genuine SNS message for one of our topics; else Rejected."""
    if not isinstance(message, dict):
        raise Rejected("not a JSON object")
    kind = message.get("Type")
    if kind not in SIGNED_FIELDS:
        raise Rejected("unknown message type")
    settings = get_settings()
    if message.get("TopicArn") not in settings.ses_topic_arn_list:
        raise Rejected("topic not configured")
    algorithm = HASHES.get(str(message.get("SignatureVersion")))
    if algorithm is None:
        raise Rejected("unknown signature version")
    cert_url = message.get("SigningCertURL") or message.get("SigningCertUrl")
    if not isinstance(cert_url, str) or not re.fullmatch(settings.sns_cert_url_pattern, cert_url):
        raise Rejected("certificate not from SNS")
    fields = {k: v for k, v in message.items() if isinstance(v, str)}
    _fresh(fields.get("Timestamp", ""), now or datetime.now(UTC))
    try:
        signature = base64.b64decode(fields.get("Signature", ""), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Rejected("signature not base64") from exc
    public_key = _public_key(cert_url)
    try:
        public_key.verify(signature, _string_to_sign(kind, fields), padding.PKCS1v15(), algorithm())
    except InvalidSignature as exc:
        raise Rejected("bad signature") from exc
    return fields


def _fresh(timestamp: str, now: datetime) -> None:
    try:
        sent = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError as exc:
        raise Rejected("bad timestamp") from exc
    if sent.tzinfo is None or not now - MAX_AGE <= sent <= now + timedelta(minutes=5):
        raise Rejected("stale or future timestamp")


def _string_to_sign(kind: str, fields: dict[str, str]) -> bytes:
    lines: list[str] = []
    for name in SIGNED_FIELDS[kind]:
        if name in fields:
            lines += [name, fields[name]]
        elif name != "Subject":  # the only optional signed field
            raise Rejected(f"missing {name}")
    return ("\n".join(lines) + "\n").encode()


def _public_key(url: str) -> rsa.RSAPublicKey:
    key = certificates.key(url)
    if not isinstance(key, rsa.RSAPublicKey):
        raise Rejected("certificate key is not RSA")
    return key


def _fetch_key(url: str) -> Any:
    """The public key of the certificate at this URL (the pattern has been checked)."""
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as answer:  # noqa: S310
            pem = answer.read(MAX_CERT_BYTES + 1)
    except OSError as exc:
        raise CertificateUnavailable(type(exc).__name__) from exc
    if len(pem) > MAX_CERT_BYTES:
        raise Rejected("certificate too large")
    try:
        return x509.load_pem_x509_certificate(pem).public_key()
    except ValueError as exc:
        raise Rejected("not a certificate") from exc


@dataclass(frozen=True)
class _Entry:
    until: float
    key: Any = None
    failure: type[Exception] | None = None
    reason: str = ""


class Certificates:
    """Public keys by certificate URL, each kept for a time, failures too, at most `size` URLs
    (least recently used forgotten first). Two requests for a URL not yet known may both fetch
    it; the bound and the failure TTL are what keep fetches few."""

    def __init__(
        self,
        fetch: Callable[[str], Any] = _fetch_key,
        clock: Callable[[], float] = time.monotonic,
        size: int = MAX_CERT_URLS,
    ) -> None:
        self._fetch, self._clock, self._size = fetch, clock, size
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def key(self, url: str) -> Any:
        with self._lock:
            entry = self._entries.get(url)
            if entry is not None and entry.until <= self._clock():
                entry = None
            if entry is not None:
                self._entries.move_to_end(url)
        if entry is None:
            entry = self._fetched(url)
        if entry.failure is not None:
            raise entry.failure(entry.reason)  # a new exception each time: no growing traceback
        return entry.key

    def _fetched(self, url: str) -> _Entry:
        try:
            entry = _Entry(self._clock() + CERT_TTL, key=self._fetch(url))
        except (CertificateUnavailable, Rejected) as exc:
            entry = _Entry(self._clock() + FAILURE_TTL, failure=type(exc), reason=str(exc))
        with self._lock:
            self._entries[url] = entry
            self._entries.move_to_end(url)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return entry

    def urls(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


certificates = Certificates()


def confirm_subscription(fields: dict[str, str]) -> None:
    """Visit a verified SubscriptionConfirmation's SubscribeURL, which must be on the same SNS
    host that signed it (never a URL of the sender's choosing)."""
    url = fields.get("SubscribeURL", "")
    cert = urlsplit(fields.get("SigningCertURL") or fields.get("SigningCertUrl", ""))
    target = urlsplit(url)
    if (target.scheme, target.netloc) != (cert.scheme, cert.netloc) or not target.netloc:
        raise Rejected("subscription URL not on the SNS host")
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as answer:  # noqa: S310
            answer.read(MAX_CERT_BYTES)
    except OSError as exc:
        raise CertificateUnavailable(type(exc).__name__) from exc


def forget_certificates() -> None:
    certificates.clear()
