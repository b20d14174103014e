"""Helpers for the update-sending tests: subscribers in bulk, a fast counting SMTP sink, staff.

Subscribers are inserted straight into the tables (executemany), thousands in a second, because
the sign-up flow is not what these tests are about.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import sqlalchemy as sa
from aiosmtpd.controller import Controller

from mailing.db import get_engine
from mailing.models import Subscriber, SubscriberTheme, Update, utcnow


def add_subscribers(
    count: int, themes: list[str], *, status: str = "active", prefix: str = "person"
) -> list[str]:
    """Insert `count` subscribers with these themes and status; returns their addresses."""
    now = utcnow()
    emails = [f"{prefix}{i}@example.net" for i in range(count)]
    engine = get_engine()
    with engine.begin() as conn:
        conn.execute(
            sa.insert(Subscriber.__table__),  # type: ignore[attr-defined]
            [
                {
                    "email": e,
                    "email_key": e,
                    "status": status,
                    "token_version": 1,
                    "created_at": now,
                    "updated_at": now,
                    "confirmed_at": now if status != "pending" else None,
                }
                for e in emails
            ],
        )
        ids = conn.execute(
            sa.text("SELECT id FROM subscriber WHERE email LIKE :p ORDER BY id"),
            {"p": f"{prefix}%@example.net"},
        ).scalars()
        rows = [{"subscriber_id": i, "theme": t} for i in ids for t in themes]
        if rows:
            conn.execute(sa.insert(SubscriberTheme.__table__), rows)  # type: ignore[attr-defined]
    return emails


def api_staff(role: str, email: str | None = None) -> str:
    """A staff member with this role; returns their API token."""
    from mailing.db import session_scope
    from mailing.staff import members as staff
    from mailing.states import StaffRole

    with session_scope() as session:
        _, token = staff.create_staff(
            session, email or f"{role}@staff.example.org", StaffRole(role)
        )
    return token


def draft(subject: str = "News", body: str = "Hello **all**.", themes: Iterable[str] = ()) -> int:
    from mailing import updates
    from mailing.db import session_scope

    with session_scope() as session:
        update = updates.create_draft(session, None, subject, body, list(themes))
        assert update.id is not None
        return update.id


def start(update_id: int, *, enqueue: bool = True) -> int:
    """Start sending through the one send path; returns the number of recipients. Without
    `enqueue` the broker never hears of it (as if it lost the message)."""
    from mailing import sending
    from mailing.db import session_scope
    from workers.enqueue import publish_update_batches

    def nowhere(update_id: int, tasks: int, countdown: float) -> None:
        pass

    with session_scope() as session:
        request = sending.request_send(
            session, update_id, None, publish_update_batches if enqueue else nowhere
        )
    return request.recipients


def taken_and_failed(update_id: int) -> tuple[int, int]:
    """The update's copies the relay took and those that failed so far (the kept counts; its
    own `sent` and `failed` are written when the send finishes)."""
    from mailing.figures import kept_counts

    with get_engine().connect() as conn:
        return kept_counts.taken_and_failed(conn, [update_id])[update_id]


def update_row(update_id: int) -> Update:
    from sqlmodel import Session

    with Session(get_engine(), expire_on_commit=False) as session:
        found = session.get(Update, update_id)
        assert found is not None
        return found


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition (not a fixed sleep): fail with `what` if it is not true in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_sent(update_id: int, timeout: float = 120.0) -> Update:
    wait_until(lambda: update_row(update_id).status.value == "sent", timeout, "the update sent")
    return update_row(update_id)


@dataclass
class Sink:
    """An SMTP handler that keeps every message (raw) and answers 550 for chosen recipients."""

    refuse: set[str] = field(default_factory=set)
    defer: dict[str, int] = field(default_factory=dict)  # answer 450 this many times first
    received: list[tuple[str, bytes]] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 No such mailbox here"
        if self.defer.get(address, 0) > 0:
            self.defer[address] -= 1
            return "450 4.2.1 Mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.received.append((rcpt, envelope.content))
            self.lock.notify_all()
        return "250 Message accepted"

    def count(self) -> int:
        with self.lock:
            return len(self.received)

    def wait_for(self, n: int, timeout: float) -> None:
        with self.lock:
            if not self.lock.wait_for(lambda: len(self.received) >= n, timeout=timeout):
                raise AssertionError(f"only {len(self.received)} of {n} mails arrived")

    def recipients(self) -> Counter[str]:
        with self.lock:
            return Counter(r for r, _ in self.received)

    def messages(self) -> list[tuple[str, EmailMessage]]:
        with self.lock:
            got = list(self.received)
        return [(r, message_from_bytes(raw, policy=policy.default)) for r, raw in got]  # type: ignore[misc]


class PipeliningSink(Sink):
    """The test relay, also offering PIPELINING (RFC 2920) in its EHLO answer."""

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


class GreetingRefusingSink(Sink):
    """A relay that answers 554 to EHLO and HELO on its first `refusals` connections (as one
    does while it is listed, or before its access rules allow us), then greets normally."""

    def __init__(self, refusals: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.refusals = refusals  # connections still to refuse
        self.greetings_refused = 0

    def _refuse(self, session: Any) -> bool:
        with self.lock:
            if not hasattr(session, "refused"):
                session.refused = self.refusals > 0
                self.refusals -= session.refused
            self.greetings_refused += session.refused
            return bool(session.refused)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        if self._refuse(session):
            return ["554 5.7.1 Not accepting mail from you right now"]
        session.host_name = hostname
        return responses

    async def handle_HELO(self, server: Any, session: Any, envelope: Any, hostname: str) -> str:
        if self._refuse(session):
            return "554 5.7.1 Not accepting mail from you right now"
        session.host_name = hostname
        return f"250 {server.hostname}"


class SinkServer:
    """A Sink on a loopback port (a fixed one can be given, to bring a relay 'back up')."""

    def __init__(self, sink: Sink | None = None, port: int = 0) -> None:
        from mailing.mail.devcapture import _free_port

        self.sink = sink or Sink()
        self.port = port or _free_port()
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SinkServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
