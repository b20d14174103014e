"""Staff second factors: authenticator apps (TOTP) and recovery codes, and checking a typed code.

A TOTP code is accepted once: the step it matched is stored by a conditional UPDATE, so even two
requests racing with the same code cannot both pass. Recovery codes are kept only as keyed
hashes (HMAC with each secret key, so a copy of the database cannot be searched for them) and
each works once. Passkeys live in mailing/staff/passkeys.py.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session, col, delete, select

from mailing.config import get_settings
from mailing.models import FactorKind, Staff, StaffFactor, StaffRecoveryCode, utcnow
from mailing.staff import totp
from mailing.staff.sessions import end_all_sessions

RECOVERY_CODES = 10
MAX_FACTOR_NAME = 60
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i to misread
_RECOVERY_LENGTH = 10


class FactorError(ValueError):
    """The message is safe to show to the staff member."""


@dataclass(frozen=True)
class CodeAccepted:
    kind: str  # "authenticator app" or "recovery code"
    recovery_left: int | None = None  # after a recovery code: how many remain


def factors_of(session: Session, staff: Staff) -> list[StaffFactor]:
    return list(
        session.exec(
            select(StaffFactor)
            .where(col(StaffFactor.staff_id) == staff.id)
            .order_by(col(StaffFactor.created_at), col(StaffFactor.id))
        ).all()
    )


def has_factor(session: Session, staff: Staff, *, passkey: bool = False) -> bool:
    return any(not passkey or f.kind == FactorKind.PASSKEY for f in factors_of(session, staff))


def factor_of(session: Session, staff: Staff, factor_id: int) -> StaffFactor | None:
    factor = session.get(StaffFactor, factor_id)
    return factor if factor is not None and factor.staff_id == staff.id else None


def clean_name(value: object, default: str) -> str:
    if not isinstance(value, str):
        return default
    name = " ".join(value.split())
    if len(name) > MAX_FACTOR_NAME:
        raise FactorError(f"A name can have at most {MAX_FACTOR_NAME} characters.")
    return name or default


def add_totp(session: Session, staff: Staff, secret: object, code: object, name: object) -> None:
    """Enrol an authenticator app once it has shown a right code for this secret."""
    if not totp.valid_secret(secret):
        raise FactorError("The set-up had expired. Start again.")
    assert isinstance(secret, str)
    typed = totp.normalise_code(code)
    if typed is None:
        raise FactorError("Enter the 6-digit code your authenticator app shows.")
    step = totp.matching_step(secret, typed, utcnow(), None)
    if step is None:
        raise FactorError("That code is not right. Check your phone's clock and try again.")
    session.add(
        StaffFactor(
            staff_id=staff.id or 0,
            kind=FactorKind.TOTP,
            name=clean_name(name, "Authenticator app"),
            totp_secret=totp.seal(secret),
            totp_last_step=step,  # the code used to enrol cannot sign in as well
            last_used_at=utcnow(),
        )
    )


def _totp_matches(session: Session, staff: Staff, code: str) -> bool:
    now = utcnow()
    for factor in factors_of(session, staff):
        secret = totp.unseal(factor.totp_secret) if factor.totp_secret else None
        if factor.kind != FactorKind.TOTP or secret is None:
            continue
        step = totp.matching_step(secret, code, now, factor.totp_last_step)
        if step is None:
            continue
        # Only one request can move the step forward past a given code.
        moved = session.execute(
            sa.update(StaffFactor)
            .where(col(StaffFactor.id) == factor.id)
            .where(
                sa.or_(
                    col(StaffFactor.totp_last_step).is_(None),
                    col(StaffFactor.totp_last_step) < step,
                )
            )
            .values(totp_last_step=step, last_used_at=now)
        )
        if moved.rowcount == 1:  # type: ignore[attr-defined]
            session.commit()
            return True
    return False


def check_code(session: Session, staff: Staff, value: object) -> CodeAccepted | None:
    """A typed code: six digits from an authenticator app, or else a recovery code."""
    code = totp.normalise_code(value)
    if code is not None:
        return CodeAccepted("authenticator app") if _totp_matches(session, staff, code) else None
    left = use_recovery_code(session, staff, value)
    return None if left is None else CodeAccepted("recovery code", left)


# ---------------------------------------------------------------------------------------------
# Recovery codes


def _recovery_hashes(code: str) -> list[str]:
    return [
        hmac.new(key.encode(), b"recovery:" + code.encode(), hashlib.sha256).hexdigest()
        for key in get_settings().secret_key_list
    ]


def _normalise_recovery(value: object) -> str | None:
    if not isinstance(value, str) or len(value) > 40:
        return None
    code = "".join(value.lower().split()).replace("-", "")
    if len(code) != _RECOVERY_LENGTH or any(c not in _RECOVERY_ALPHABET for c in code):
        return None
    return code


def new_recovery_codes(session: Session, staff: Staff) -> list[str]:
    """Ten fresh codes, replacing any earlier ones; shown once, stored hashed."""
    session.exec(delete(StaffRecoveryCode).where(col(StaffRecoveryCode.staff_id) == staff.id))
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
        session.add(StaffRecoveryCode(staff_id=staff.id or 0, code_hash=_recovery_hashes(raw)[0]))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


def recovery_codes_left(session: Session, staff: Staff) -> int:
    n = session.exec(
        select(sa.func.count())
        .select_from(StaffRecoveryCode)
        .where(col(StaffRecoveryCode.staff_id) == staff.id)
        .where(col(StaffRecoveryCode.used_at).is_(None))
    ).one()
    return int(n or 0)


def are_live_recovery_codes(session: Session, staff: Staff, values: list[str]) -> bool:
    """Whether every one of these is an unspent recovery code of this staff member (read only)."""
    codes = [_normalise_recovery(v) for v in values]
    if not codes or len(codes) > RECOVERY_CODES or None in codes:
        return False
    live = set(
        session.exec(
            select(StaffRecoveryCode.code_hash)
            .where(col(StaffRecoveryCode.staff_id) == staff.id)
            .where(col(StaffRecoveryCode.used_at).is_(None))
        ).all()
    )
    return all(live.intersection(_recovery_hashes(c)) for c in codes if c is not None)


def use_recovery_code(session: Session, staff: Staff, value: object) -> int | None:
    """Spend a recovery code; returns how many are left, or None if it is not a live code."""
    code = _normalise_recovery(value)
    if code is None:
        return None
    used = session.execute(
        sa.update(StaffRecoveryCode)
        .where(col(StaffRecoveryCode.staff_id) == staff.id)
        .where(col(StaffRecoveryCode.code_hash).in_(_recovery_hashes(code)))
        .where(col(StaffRecoveryCode.used_at).is_(None))
        .values(used_at=utcnow())
    )
    if used.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return None
    session.commit()
    return recovery_codes_left(session, staff)


# ---------------------------------------------------------------------------------------------
# Removing factors


def remove_factor(session: Session, staff: Staff, factor: StaffFactor) -> None:
    if len(factors_of(session, staff)) <= 1:
        raise FactorError("This is your only second factor: add another before removing it.")
    session.delete(factor)


def reset(session: Session, staff: Staff) -> None:
    """Clear every factor and recovery code, any lock of the second-factor step, and end every
    session: the next sign-in enrols."""
    staff.factor_failures = staff.factor_lockouts = 0
    staff.factor_locked_until = None
    session.add(staff)
    session.exec(delete(StaffFactor).where(col(StaffFactor.staff_id) == staff.id))
    session.exec(delete(StaffRecoveryCode).where(col(StaffRecoveryCode.staff_id) == staff.id))
    end_all_sessions(session, staff)
