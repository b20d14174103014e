"""Email addresses: validation and normalisation, keyed hashes, and masking for logs.

Identity is case-insensitive: the `key` of an address is its lower-cased normal form. The
keyed hash (HMAC with the secret keys) is what we keep after erasure and what rate-limit
keys hold, so no raw address is stored where it is not needed.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

MAX_ADDRESS_LENGTH = 254


class InvalidAddress(ValueError):
    pass


@dataclass(frozen=True)
class Address:
    email: str  # as we will send to it: normalised, domain in ASCII
    key: str  # case-insensitive identity


def normalise(raw: str) -> Address:
    """Check an address's syntax (no DNS: the request path must not wait on the network)."""
    if not isinstance(raw, str):
        raise InvalidAddress("Enter an email address.")
    if any(c in raw for c in "\r\n\x00"):
        raise InvalidAddress("An email address cannot contain line breaks.")
    raw = raw.strip()
    if not raw:
        raise InvalidAddress("Enter your email address.")
    if len(raw) > MAX_ADDRESS_LENGTH:
        raise InvalidAddress(
            f"An email address cannot be longer than {MAX_ADDRESS_LENGTH} characters."
        )
    try:
        result = validate_email(raw, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InvalidAddress(
            "Enter an email address in the correct format, like name@example.com."
        ) from exc
    email = result.ascii_email or result.normalized
    if len(email) > MAX_ADDRESS_LENGTH:
        raise InvalidAddress(
            f"An email address cannot be longer than {MAX_ADDRESS_LENGTH} characters."
        )
    return Address(email=email, key=email.lower())


def keyed_hash(key: str, secret: str) -> str:
    mac = _keyed_state(secret).copy()  # a send hashes every recipient's address: key it once
    mac.update(key.encode())
    return mac.hexdigest()


@lru_cache(maxsize=8)
def _keyed_state(secret: str) -> hmac.HMAC:
    return hmac.new(secret.encode(), b"address:", hashlib.sha256)


def keyed_hashes(key: str, secrets: list[str]) -> list[str]:
    """One hash per secret key, so a hash made before a key rotation is still recognised."""
    return [keyed_hash(key, s) for s in secrets]


def mask(email: str) -> str:
    """A log-safe form: never the address itself."""
    return "<address>" if "@" in email else "<redacted>"
