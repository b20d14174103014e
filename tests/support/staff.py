"""Staff for the tests: `make_staff` (one member with a console password; the one helper for it),
and signing them in to the console with a second factor: an authenticator app
(TOTP) enrolled straight in the database with a known secret, and codes computed from it.

Codes are computed for the current 30-second step, or the next if that one is used (the server
allows ±1 step), so signing the same person in twice in a row needs no wait and no replay.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlmodel import col, select

from mailing.models import FactorKind, StaffFactor, utcnow
from mailing.staff import totp

TEST_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
SECOND_FACTOR_PATH = "/admin/login/second-factor"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def give_totp(email: str, secret: str = TEST_SECRET) -> None:
    """Enrol an authenticator app for this staff member (if they exist and have none)."""
    from mailing.db import session_scope
    from mailing.staff.members import find_staff

    with session_scope() as session:
        staff = find_staff(session, email)
        if staff is None:
            return
        have = session.exec(
            select(StaffFactor)
            .where(col(StaffFactor.staff_id) == staff.id)
            .where(col(StaffFactor.kind) == FactorKind.TOTP)
        ).first()
        if have is None:
            session.add(
                StaffFactor(
                    staff_id=staff.id,
                    kind=FactorKind.TOTP,
                    name="Test phone",
                    totp_secret=totp.seal(secret),
                )
            )


def next_code(email: str) -> str:
    """A code the server will accept now for this person's (first) authenticator app."""
    from mailing.db import session_scope
    from mailing.staff.members import find_staff

    with session_scope() as session:
        staff = find_staff(session, email)
        assert staff is not None, email
        factor = session.exec(
            select(StaffFactor)
            .where(col(StaffFactor.staff_id) == staff.id)
            .where(col(StaffFactor.kind) == FactorKind.TOTP)
            .order_by(col(StaffFactor.id))
        ).first()
        assert factor is not None and factor.totp_secret, "no authenticator app enrolled"
        secret = totp.unseal(factor.totp_secret)
        assert secret is not None
        last = factor.totp_last_step
    # The current step's code, or the next one's if that is used already: both stay inside the
    # server's window even if a step boundary passes before the code arrives. When both are
    # used, wait (on the clock, with a deadline) for the next step to begin.
    deadline = time.monotonic() + totp.STEP_SECONDS + 5
    while True:
        now = totp.step_at(utcnow())
        step = now if last is None else max(now, last + 1)
        if step <= now + 1:
            return totp.code_at(secret, step)
        assert time.monotonic() < deadline, "the TOTP step did not advance"
        time.sleep(0.2)


def second_factor_step(client, answer, email: str):
    """After a password POST: if it led to the second-factor step, give a computed code and
    return that answer (a redirect to `next` on success); else return the answer unchanged."""
    location = answer.headers.get("location", "") if answer.status_code == 303 else ""
    if not location.startswith(SECOND_FACTOR_PATH):
        return answer
    form = client.get(location)
    next_path = parse_qs(urlsplit(location).query).get("next", ["/admin"])[0]
    return client.post(
        SECOND_FACTOR_PATH,
        data={
            "csrf_token": _CSRF.search(form.text).group(1),
            "next": next_path,
            "second_factor_code": next_code(email),
        },
        follow_redirects=False,
    )


def browser_second_factor(p, email: str) -> None:
    """In a real browser on the second-factor page: type a computed code and continue."""
    p.wait_for_url(lambda url: SECOND_FACTOR_PATH in url)
    p.get_by_label("Code from your authenticator app, or a recovery code").fill(next_code(email))
    p.get_by_role("button", name="Continue").click()


PASSWORD = "correct horse battery staple"


def make_staff(session: Any, email: str, role: str = "editor", password: str = PASSWORD) -> Any:
    """A staff member with this role and a console password (no second factor yet)."""
    from mailing.staff.members import create_staff
    from mailing.states import StaffRole

    staff, _token = create_staff(session, email, StaffRole(role), password=password)
    session.commit()
    return staff
