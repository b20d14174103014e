"""Comms staff members: creating and inviting them, finding them, roles, passwords, and
disabling them.

Disabling a member ends their sessions and kills their API token at once; a new password ends
their sessions too. Nobody raises their own role, and the last enabled admin is never demoted
or disabled (change_member), so the console can always manage staff.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailing.errors import Conflict, Forbidden, Invalid
from mailing.models import Staff, utcnow
from mailing.staff.apitokens import new_token, revoke_token
from mailing.staff.audit import AuditAction, audit
from mailing.staff.passwords import hash_password
from mailing.staff.sessions import end_all_sessions
from mailing.states import ROLE_RANK, StaffRole, role_allows
from mailing.subscribers.addresses import InvalidAddress, normalise

ROLE_CHOICES = ", ".join(r.value for r in StaffRole)


class StaffExists(ValueError):
    """A staff member with this address already exists."""


def create_staff(
    session: Session,
    email: str,
    role: StaffRole,
    *,
    password: str | None = None,
    by: Staff | None = None,
) -> tuple[Staff, str]:
    """Create a staff member; returns the row and their API token (shown once, never stored).

    With a password (for the staff console) it is stored as an argon2 hash.
    """
    email = email.strip().lower()
    if session.exec(select(Staff).where(col(Staff.email) == email)).first() is not None:
        raise StaffExists("a staff member with this address already exists")
    token, digest = new_token()
    staff = Staff(email=email, role=role, token_hash=digest)
    if password is not None:
        staff.password_hash = hash_password(password)
    session.add(staff)
    session.flush()
    audit(
        session,
        by.id if by else None,
        AuditAction.STAFF_CREATED,
        None,
        f"staff {staff.id} as {role.value}",
    )
    return staff, token


def may(staff: Staff, needed: StaffRole) -> bool:
    """Whether this staff member's role allows what needs `needed` (roles are ordered)."""
    return role_allows(staff.role, needed)


def find_staff(session: Session, email: str) -> Staff | None:
    wanted = email.strip().lower()
    if not wanted or len(wanted) > 254:
        return None
    return session.exec(select(Staff).where(sa.func.lower(Staff.email) == wanted)).first()


def staff_by_id(session: Session, staff_id: int) -> Staff | None:
    return session.get(Staff, staff_id)


def all_staff(session: Session) -> list[Staff]:
    return list(session.exec(select(Staff).order_by(col(Staff.email))).all())


def set_password(session: Session, staff: Staff, password: str) -> None:
    """Set a staff member's password; their existing console sessions end."""
    staff.password_hash = hash_password(password)
    staff.failed_logins = 0
    staff.locked_until = None
    session.add(staff)
    end_all_sessions(session, staff)


def disable(session: Session, staff: Staff) -> None:
    """Revoke a staff member: sessions end, and the API token no longer matches anything."""
    staff.disabled_at = utcnow()
    revoke_token(session, staff)
    end_all_sessions(session, staff)


def parse_role(value: object) -> StaffRole:
    """A role from outside (JSON or a form); Invalid (422) for anything else."""
    if isinstance(value, str) and value in {r.value for r in StaffRole}:
        return StaffRole(value)
    raise Invalid({"role": f"Choose a role: {ROLE_CHOICES}."})


def invite(session: Session, email: object, role: StaffRole, by: Staff | None) -> tuple[Staff, int]:
    """A new staff member with no password yet, and the notice id of their emailed one-time
    link (publish it after the commit). Invalid for a bad address, Conflict for a known one."""
    from mailing.staff import invitations

    try:
        address = normalise(email if isinstance(email, str) else "")
    except InvalidAddress as bad:
        raise Invalid({"email": str(bad)}) from None
    try:
        staff, _token = create_staff(session, address.email, role, by=by)
    except StaffExists as exists:
        raise Conflict(str(exists)) from None
    notice_id = invitations.issue(session, staff, invitations.INVITE, by.id if by else None)
    audit(session, by.id if by else None, AuditAction.STAFF_INVITED, None, f"staff {staff.id}")
    return staff, notice_id


def enabled_admins(session: Session) -> int:
    return int(
        session.exec(
            select(sa.func.count())
            .select_from(Staff)
            .where(col(Staff.role) == StaffRole.ADMIN)
            .where(col(Staff.disabled_at).is_(None))
        ).one()
    )


def change_member(
    session: Session,
    actor: Staff,
    member: Staff,
    *,
    role: StaffRole | None = None,
    disabled: bool | None = None,
    client_ip: str | None = None,
) -> list[AuditAction]:
    """An admin changes another member's role and/or disables (or re-enables) them; every
    change is audited. Forbidden for raising one's own role; Conflict for disabling oneself or
    removing the last admin. Returns what changed (nothing: an empty list)."""
    changing_role = role is not None and role != member.role
    if member.id == actor.id:
        if changing_role and role is not None and ROLE_RANK[role] > ROLE_RANK[member.role]:
            raise Forbidden("You cannot raise your own role: ask another admin.")
        if disabled:
            raise Conflict("You cannot disable yourself: ask another admin.")
    removes_admin = (
        member.role == StaffRole.ADMIN
        and member.disabled_at is None
        and ((changing_role and role != StaffRole.ADMIN) or bool(disabled))
    )
    if removes_admin and enabled_admins(session) <= 1:
        raise Conflict("This is the last admin: make someone else an admin first.")
    done: list[AuditAction] = []
    if changing_role and role is not None:
        detail = f"staff {member.id} from {member.role.value} to {role.value}"
        member.role = role
        session.add(member)
        audit(session, actor.id, AuditAction.STAFF_ROLE_CHANGED, None, detail, client_ip=client_ip)
        done.append(AuditAction.STAFF_ROLE_CHANGED)
    if disabled and member.disabled_at is None:
        disable(session, member)
        audit(
            session,
            actor.id,
            AuditAction.STAFF_DISABLED,
            None,
            f"staff {member.id}",
            client_ip=client_ip,
        )
        done.append(AuditAction.STAFF_DISABLED)
    elif disabled is False and member.disabled_at is not None:
        # Back in, but with no working token or session: they get a new token from the CLI.
        member.disabled_at = None
        session.add(member)
        audit(
            session,
            actor.id,
            AuditAction.STAFF_ENABLED,
            None,
            f"staff {member.id}",
            client_ip=client_ip,
        )
        done.append(AuditAction.STAFF_ENABLED)
    session.flush()
    return done
