"""Console sign-in: email and password, then a second factor; the throttle on failures.

One answer whether the address is unknown or the password wrong, taking the same time, so the
form does not reveal which addresses belong to staff. Wrong passwords are counted per account
*and* client (an IPv6 client by its /64), so a stranger's client is stopped while the owner
still signs in from theirs; a per-account ceiling with growing waits bounds a guesser spread
over many clients. Wrong second-factor codes count per account until a second factor succeeds,
however many times the password is given again. A re-check inside a session ("Confirm it is
you") counts per session only. Admins are emailed when an account sees repeated failures.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailing.config import get_settings
from mailing.errors import MailingError
from mailing.mail import outbox
from mailing.models import Staff, utcnow
from mailing.ratelimit import client_bucket, get_limiter
from mailing.staff import passkeys
from mailing.staff.factors import CodeAccepted, check_code
from mailing.staff.members import find_staff
from mailing.staff.passwords import hash_password, needs_rehash, password_matches
from mailing.staff.sessions import aware, start_session
from mailing.states import NoticeKind, StaffRole
from mailing.subscribers.addresses import keyed_hash

# Wrong passwords: this many from one client for one account within LOCKOUT stop that client.
MAX_FAILED_SIGN_INS = 5
LOCKOUT = timedelta(minutes=15)
# The account's ceiling, across all clients: the first FREE_FAILURES wrong passwords cost
# nothing; each later one makes the account wait (no password is checked) a minute, doubling
# up to MAX_WAIT. The count lasts until a day passes without a failure.
FREE_FAILURES = 10
MAX_WAIT = timedelta(minutes=30)
CEILING_MEMORY = timedelta(days=1)
CHECK_SECONDS = 10  # how long one check may hold the account's turn (an argon2 check: ~50 ms)
# Wrong second-factor codes: five lock the step for the account for 15 minutes, doubling with
# each lockout in a row, up to a day; a re-check counts five per session per 15 minutes.
MAX_WRONG_CODES = 5
CODE_LOCKOUT = timedelta(minutes=15)
MAX_CODE_LOCKOUT = timedelta(days=1)
# At most one email to the admins per account within this time.
ALERT_EVERY = timedelta(hours=1)

WRONG_DETAILS = "The email address or password is not right."
WRONG_CODE = "That code is not right. Check it and try again."
WRONG_PASSKEY = "That passkey did not work. Try again, or use a code instead."
LOCKED = (
    "Too many failed attempts to sign in. Wait 15 minutes and try again, or ask an admin for help."
)
WAIT = "Too many failed attempts to sign in to this account. Wait {} and try again."
CODES_LOCKED = (
    "Too many wrong codes. The second-factor step is locked for {}: try again then, or ask an"
    " admin for help."
)


class SignInFailed(MailingError):
    """The message is safe to show: it never says whether the address belongs to staff.
    `retry_after`: seconds until a try may succeed (a 429), else None (a 401): the status says
    which, so no caller compares the message. `notices`: ids of notices to admins, to publish
    once the request is done."""

    status_code = 401

    def __init__(
        self,
        message: str,
        retry_after: int | None = None,
        notices: list[int] | None = None,
        staff_id: int | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.notices = notices or []
        self.staff_id = staff_id  # a wrong password for this staff account, to audit
        if retry_after is not None:
            self.status_code = 429


def _minutes(seconds: int) -> str:
    minutes = max(1, -(-seconds // 60))
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


def wait_after(failures: int) -> int:
    """Seconds the account waits after its `failures`-th wrong password in a row."""
    if failures <= FREE_FAILURES:
        return 0
    return int(min(60 * 2 ** (failures - FREE_FAILURES - 1), MAX_WAIT.total_seconds()))


def most_wrong_passwords(within: timedelta = timedelta(days=1)) -> int:
    """The most wrong passwords one account can take within `within`, however many clients try:
    a guesser who tries the moment each wait ends. 62 in a day."""
    tried, at = 0, 0
    while at < within.total_seconds():
        tried += 1
        at += wait_after(tried)
    return tried


def sign_in(session: Session, email: str, password: str, client: str) -> tuple[Staff, str]:
    """Check the address and password from `client` (an IP); start a half-open session and
    return (staff, session token). Unknown addresses are throttled exactly like staff ones (by
    a keyed hash of the address), so the throttle does not reveal who is staff either."""
    subject = keyed_hash(email.strip().lower(), get_settings().secret_key_list[0])
    per_client = f"staff-password:{subject}:{client_bucket(client)}"
    ceiling, wait = f"staff-ceiling:{subject}", f"staff-wait:{subject}"
    limiter = get_limiter()
    # Counted before the check (a right password uncounts it), so parallel tries get no more.
    verdict = limiter.hit(per_client, MAX_FAILED_SIGN_INS, int(LOCKOUT.total_seconds()))
    if not verdict.allowed:
        password_matches(None, password)  # the same time as any other answer
        raise SignInFailed(LOCKED, verdict.retry_after)
    # Past its free failures an account's passwords are checked one at a time: the wait key is
    # taken for the check, so attempts sent in parallel cannot slip in before the next wait.
    slow = limiter.count(ceiling)[0] >= FREE_FAILURES
    _, waiting = limiter.count(wait)
    if waiting or (slow and not limiter.acquire(wait, CHECK_SECONDS)):
        waiting = max(waiting, 1)
        password_matches(None, password)
        raise SignInFailed(WAIT.format(_minutes(waiting)), waiting)
    staff = find_staff(session, email)
    if staff is not None and staff.disabled_at is not None:
        staff = None
    if staff is None or not password_matches(staff.password_hash, password):
        failures = limiter.extend(ceiling, int(CEILING_MEMORY.total_seconds()))
        if wait_after(failures):
            limiter.hold(wait, wait_after(failures))
        elif slow:
            limiter.clear(wait)
        notices = _alert(session, staff) if staff and failures % FREE_FAILURES == 0 else []
        # The attempt that stops a client still says "not right", as for an unknown address.
        raise SignInFailed(WRONG_DETAILS, notices=notices, staff_id=staff.id if staff else None)
    # A right password ends this client's run of failures, not the account's: were the owner's
    # sign-ins to reset the ceiling, a guesser would get its free tries back each time.
    limiter.clear(per_client)
    if slow:
        limiter.clear(wait)
    if needs_rehash(staff.password_hash):
        staff.password_hash = hash_password(password)
        session.add(staff)
    token = start_session(session, staff)
    return staff, token


def code_lock_left(staff: Staff) -> int:
    """Seconds the second-factor step stays locked for this account (0: it is open)."""
    until = aware(staff.factor_locked_until)
    return max(0, int((until - utcnow()).total_seconds()) + 1) if until else 0


def _reserve_attempt(session: Session, staff: Staff) -> bool:
    """Count an attempt at the second factor before it is checked, unless the step is locked or
    MAX_WRONG_CODES attempts are counted already: one conditional UPDATE, so even attempts sent
    in parallel get no more than five checks between lockouts. A right answer uncounts it."""
    reserved = session.execute(
        sa.update(Staff)
        .where(col(Staff.id) == staff.id)
        .where(col(Staff.factor_failures) < MAX_WRONG_CODES)
        .where(
            sa.or_(
                col(Staff.factor_locked_until).is_(None),
                col(Staff.factor_locked_until) <= utcnow(),
            )
        )
        .values(factor_failures=col(Staff.factor_failures) + 1)
    )
    session.commit()
    session.refresh(staff)
    return bool(reserved.rowcount == 1)  # type: ignore[attr-defined]


def _wrong_code(session: Session, staff: Staff) -> list[int]:
    """The attempt was wrong: if it was the fifth, lock the step (longer each time in a row) and
    tell the admins. Returns the ids of notices to publish."""
    lockout = min(CODE_LOCKOUT * 2**staff.factor_lockouts, MAX_CODE_LOCKOUT)
    locked = session.execute(
        sa.update(Staff)
        .where(col(Staff.id) == staff.id)
        .where(col(Staff.factor_failures) >= MAX_WRONG_CODES)
        .values(
            factor_failures=0,
            factor_lockouts=col(Staff.factor_lockouts) + 1,
            factor_locked_until=utcnow() + lockout,
        )
    )
    session.commit()
    session.refresh(staff)
    return _alert(session, staff) if locked.rowcount == 1 else []  # type: ignore[attr-defined]


def _alert(session: Session, staff: Staff) -> list[int]:
    """Queue an email to each admin that this account sees repeated failed sign-ins (at most one
    per ALERT_EVERY); the caller commits, then publishes the ids returned."""
    every = int(ALERT_EVERY.total_seconds())
    if not get_limiter().hit(f"staff-alert:{staff.id}", 1, every).allowed:
        return []
    admins = session.exec(
        select(Staff.id)
        .where(col(Staff.role) == StaffRole.ADMIN)
        .where(col(Staff.disabled_at).is_(None))
    ).all()
    ids = [
        outbox.queue_staff(
            session, admin, NoticeKind.SIGN_IN_FAILURES, about_staff_id=staff.id or 0
        )
        for admin in admins
        if admin is not None
    ]
    session.commit()
    return ids


def second_factor(
    session: Session,
    staff: Staff,
    *,
    code: object,
    credential: object,
    challenge: str | None,
    recheck: str | None = None,
) -> CodeAccepted:
    """Check a second factor: a passkey's answer (`credential`, for the session's `challenge`),
    else a typed code from an authenticator app or a recovery code.

    At sign-in a wrong answer counts towards the account's lockout; while locked, nothing is
    even checked. A re-check inside a full session (`recheck`: the session's key) counts
    towards that session's own limit only, and no failure elsewhere blocks it.
    """
    limiter = get_limiter()
    recheck_key = f"staff-recheck:{recheck}"
    window = int(CODE_LOCKOUT.total_seconds())
    if recheck is not None:
        verdict = limiter.hit(recheck_key, MAX_WRONG_CODES, window)
        if not verdict.allowed:
            left = verdict.retry_after
            raise SignInFailed(CODES_LOCKED.format(_minutes(left)), left)
    elif not _reserve_attempt(session, staff):
        # Locked, or five attempts counted without a lock yet (in flight, or one that failed
        # half-way): locking now means the count can never stick without a lock that ends.
        notices = _wrong_code(session, staff)
        left = max(1, code_lock_left(staff))
        raise SignInFailed(CODES_LOCKED.format(_minutes(left)), left, notices)
    if isinstance(credential, str) and credential:
        ok = passkeys.authenticate(session, staff, credential.encode(), challenge)
        accepted = CodeAccepted("passkey") if ok else None
        wrong = WRONG_PASSKEY
    else:
        accepted = check_code(session, staff, code)
        wrong = WRONG_CODE
    if accepted is None:
        if recheck is not None:
            raise SignInFailed(wrong)
        notices = _wrong_code(session, staff)
        left = code_lock_left(staff)
        raise SignInFailed(
            CODES_LOCKED.format(_minutes(left)) if left else wrong, left or None, notices
        )
    if recheck is not None:
        limiter.clear(recheck_key)
    staff.factor_failures = staff.factor_lockouts = 0
    staff.factor_locked_until = None
    session.add(staff)
    session.commit()
    return accepted
