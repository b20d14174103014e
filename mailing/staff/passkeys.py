"""Passkeys and security keys (WebAuthn): the registration and authentication ceremonies.

The relying party is MAILING_BASE_URL's host and origin, so a key registered here answers only
this site. Each ceremony's challenge is kept in the console session and spent when the answer
arrives, so an answer cannot be replayed; the signature counter is kept as the library checks it.
"""

from __future__ import annotations

import json
import secrets
from typing import Any
from urllib.parse import urlsplit

import webauthn
from sqlmodel import Session, col, select
from webauthn.helpers import bytes_to_base64url
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from mailing.config import get_settings
from mailing.models import FactorKind, Staff, StaffFactor, utcnow
from mailing.staff.factors import clean_name, factors_of

RP_NAME = "Health Inequalities Strategy updates"
TIMEOUT_MS = 120_000


class PasskeyError(ValueError):
    """The message is safe to show to the staff member."""


def _relying_party() -> tuple[str, str]:
    """(RP ID, origin) from MAILING_BASE_URL."""
    url = urlsplit(get_settings().base_url)
    return url.hostname or "localhost", f"{url.scheme}://{url.netloc}"


def _descriptors(session: Session, staff: Staff) -> list[PublicKeyCredentialDescriptor]:
    return [
        PublicKeyCredentialDescriptor(id=webauthn.base64url_to_bytes(f.credential_id))
        for f in factors_of(session, staff)
        if f.kind == FactorKind.PASSKEY and f.credential_id
    ]


def new_challenge() -> bytes:
    return secrets.token_bytes(32)


def registration_options(session: Session, staff: Staff, challenge: bytes) -> str:
    rp_id, _ = _relying_party()
    options = webauthn.generate_registration_options(
        rp_id=rp_id,
        rp_name=RP_NAME,
        user_name=staff.email,
        user_id=f"staff-{staff.id}".encode(),
        challenge=challenge,
        timeout=TIMEOUT_MS,
        exclude_credentials=_descriptors(session, staff),
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
    )
    return webauthn.options_to_json(options)


def authentication_options(session: Session, staff: Staff, challenge: bytes) -> str:
    rp_id, _ = _relying_party()
    options = webauthn.generate_authentication_options(
        rp_id=rp_id,
        challenge=challenge,
        timeout=TIMEOUT_MS,
        allow_credentials=_descriptors(session, staff),
        user_verification=UserVerificationRequirement.PREFERRED,
    )
    return webauthn.options_to_json(options)


def _parse(body: bytes) -> dict[str, Any]:
    try:
        credential = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise PasskeyError("The browser's answer was not readable. Try again.") from None
    if not isinstance(credential, dict):
        raise PasskeyError("The browser's answer was not readable. Try again.")
    return credential


def register(
    session: Session, staff: Staff, body: bytes, challenge: str | None, name: object
) -> StaffFactor:
    """Check a registration answer against the spent challenge and keep the new key."""
    credential = _parse(body)
    if not challenge:
        raise PasskeyError("The set-up had expired. Start again.")
    rp_id, origin = _relying_party()
    try:
        verified = webauthn.verify_registration_response(
            credential=credential,
            expected_challenge=webauthn.base64url_to_bytes(challenge),
            expected_rp_id=rp_id,
            expected_origin=origin,
        )
    except Exception:  # the library raises many kinds for hostile or broken answers
        raise PasskeyError("That passkey could not be set up. Try again.") from None
    credential_id = bytes_to_base64url(verified.credential_id)
    if len(credential_id) > 1400:
        raise PasskeyError("That passkey could not be set up. Try again.")
    taken = session.exec(
        select(StaffFactor).where(col(StaffFactor.credential_id) == credential_id)
    ).first()
    if taken is not None:
        raise PasskeyError("That passkey is already set up.")
    factor = StaffFactor(
        staff_id=staff.id or 0,
        kind=FactorKind.PASSKEY,
        name=clean_name(name, "Passkey"),
        credential_id=credential_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        last_used_at=utcnow(),
    )
    session.add(factor)
    return factor


def authenticate(session: Session, staff: Staff, body: bytes, challenge: str | None) -> bool:
    """Whether this answer proves one of the staff member's own passkeys, for this challenge."""
    try:
        credential = _parse(body)
    except PasskeyError:
        return False
    if not challenge:
        return False
    raw_id = credential.get("id")
    if not isinstance(raw_id, str) or len(raw_id) > 1400:
        return False
    factor = session.exec(
        select(StaffFactor)
        .where(col(StaffFactor.credential_id) == raw_id)
        .where(col(StaffFactor.staff_id) == staff.id)
    ).first()
    if factor is None or factor.public_key is None:
        return False
    rp_id, origin = _relying_party()
    try:
        verified = webauthn.verify_authentication_response(
            credential=credential,
            expected_challenge=webauthn.base64url_to_bytes(challenge),
            expected_rp_id=rp_id,
            expected_origin=origin,
            credential_public_key=factor.public_key,
            credential_current_sign_count=factor.sign_count,
        )
    except Exception:  # a wrong signature, a replayed counter, or a malformed answer
        return False
    factor.sign_count = verified.new_sign_count
    factor.last_used_at = utcnow()
    session.add(factor)
    session.commit()
    return True


def challenge_text(challenge: bytes) -> str:
    return bytes_to_base64url(challenge)
