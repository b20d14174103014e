"""TOTP codes (RFC 6238): 30-second steps, one step of clock drift either way, and the step a
code matched, so the caller can refuse any code at or before the last one accepted (no replay).

Secrets are stored sealed (Fernet, keyed from MAILING_SECRET_KEYS; every listed key opens, the
first seals), so a copy of the database alone cannot make codes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import datetime

import pyotp
import segno
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from mailing.config import get_settings

STEP_SECONDS = 30
DRIFT_STEPS = 1
DIGITS = 6
ISSUER = "Health Inequalities Strategy updates"
_CODE = re.compile(r"\d{6}")
_SECRET = re.compile(r"[A-Z2-7]{32}")


def new_secret() -> str:
    return pyotp.random_base32()  # 32 base32 characters: 160 bits, as RFC 4226 recommends


def _fernet() -> MultiFernet:
    keys = get_settings().secret_key_list
    return MultiFernet(
        [
            Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"totp-secret:" + k.encode()).digest()))
            for k in keys
        ]
    )


def seal(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def unseal(sealed: str) -> str | None:
    """The secret, or None if no listed key opens it (a key was retired): re-enrol then."""
    try:
        return _fernet().decrypt(sealed.encode()).decode()
    except (InvalidToken, ValueError):
        return None


def valid_secret(value: object) -> bool:
    return isinstance(value, str) and _SECRET.fullmatch(value) is not None


def normalise_code(value: object) -> str | None:
    """Six digits, with any spaces people type between groups removed; else None."""
    if not isinstance(value, str) or len(value) > 20:
        return None
    code = value.replace(" ", "").replace("-", "")
    return code if _CODE.fullmatch(code) else None


def step_at(when: datetime) -> int:
    return int(when.timestamp()) // STEP_SECONDS


def code_at(secret: str, step: int) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).generate_otp(step)


def matching_step(secret: str, code: str, now: datetime, after: int | None) -> int | None:
    """The step within the drift window whose code this is, if later than `after`; else None."""
    current = step_at(now)
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if after is not None and step <= after:
            continue
        if hmac.compare_digest(code_at(secret, step), code):
            return step
    return None


def provisioning_uri(secret: str, email: str) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
        name=email, issuer_name=ISSUER
    )


def qr_svg(uri: str) -> str:
    """The set-up QR code as inline SVG (no script, no external image: allowed by the CSP)."""
    svg: str = segno.make(uri, error="m").svg_inline(
        scale=4,
        dark="#0b0c0c",
        light="#ffffff",
        title="QR code to scan with your authenticator app",
    )
    return svg


def grouped(secret: str) -> str:
    """The secret in groups of four, as authenticator apps show it when typed by hand."""
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
