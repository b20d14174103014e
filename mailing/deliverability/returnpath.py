"""Return paths (VERP): `bounce+{ref}@{MAILING_BOUNCE_DOMAIN}`, where `ref` names a delivery or a
notice and its subscriber by id, with a short keyed MAC, and never names an address.

A bounce comes back to the envelope sender, so the address it arrives at says which copy failed
without trusting anything inside the bounce. The MAC (60 bits, lower-case base32, so a mail system
that folds case cannot break it) is made with the first secret key and checked against all of
them (rotation); a forged or altered ref names nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from mailing.config import get_settings

BOUNCE_PREFIX = "bounce+"
UNSUBSCRIBE_PREFIX = "unsubscribe+"
MAC_CHARS = 12
SALT = b"mailing.return-path:"


class RefKind(StrEnum):
    DELIVERY = "d"  # an update's copy: names the delivery row and its subscriber
    NOTICE = "n"  # a one-off email (confirmation, welcome, links): names the subscriber


@dataclass(frozen=True)
class Ref:
    kind: RefKind
    subscriber_id: int
    delivery_id: int | None = None


_DELIVERY_REF = re.compile(rf"^d(\d{{1,10}})-(\d{{1,10}})-([a-z2-7]{{{MAC_CHARS}}})$")
_NOTICE_REF = re.compile(rf"^n(\d{{1,10}})-([a-z2-7]{{{MAC_CHARS}}})$")


def _body(ref: Ref) -> str:
    if ref.kind == RefKind.DELIVERY:
        return f"d{ref.delivery_id}-{ref.subscriber_id}"
    return f"n{ref.subscriber_id}"


def _mac(body: str, key: str) -> str:
    mac = _keyed(key).copy()  # one per copy of an update sent: key the HMAC once per process
    mac.update(body.encode())
    return base64.b32encode(mac.digest()).decode().lower()[:MAC_CHARS]


@lru_cache(maxsize=8)
def _keyed(key: str) -> hmac.HMAC:
    return hmac.new(key.encode(), SALT, hashlib.sha256)


def encode(ref: Ref) -> str:
    body = _body(ref)
    return f"{body}-{_mac(body, get_settings().secret_key_list[0])}"


def decode(text: str) -> Ref | None:
    """The Ref a signed string names, or None when it is malformed, forged or altered."""
    text = text.lower()
    if match := _DELIVERY_REF.match(text):
        ref = Ref(RefKind.DELIVERY, int(match.group(2)), int(match.group(1)))
        mac = match.group(3)
    elif match := _NOTICE_REF.match(text):
        ref = Ref(RefKind.NOTICE, int(match.group(1)))
        mac = match.group(2)
    else:
        return None
    body = _body(ref)
    keys = get_settings().secret_key_list
    if not any(hmac.compare_digest(_mac(body, key), mac) for key in keys):
        return None
    return ref


def sender(default: str, ref: Ref) -> str:
    """The envelope sender of one copy: the return path when MAILING_BOUNCE_DOMAIN is set, else
    `default` (the From address)."""
    domain = get_settings().bounce_domain
    if not domain:
        return default
    return f"{BOUNCE_PREFIX}{encode(ref)}@{domain}"


def for_delivery(default: str, delivery_id: int, subscriber_id: int) -> str:
    return sender(default, Ref(RefKind.DELIVERY, subscriber_id, delivery_id))


def for_notice(default: str, subscriber_id: int | None) -> str:
    if subscriber_id is None:
        return default
    return sender(default, Ref(RefKind.NOTICE, subscriber_id))


def mailto_unsubscribe(token: str) -> str | None:
    """The `mailto:` List-Unsubscribe address for an unsubscribe token, or None without a domain."""
    domain = get_settings().bounce_domain
    return f"{UNSUBSCRIBE_PREFIX}{token}@{domain}" if domain else None
