"""The mailbox server: aiosmtpd on loopback that refuses chosen recipients (550 5.1.1), defers
others (451) and keeps everything else with its envelope sender."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller

from mailing.devcapture import _free_port


@dataclass
class Mailbox:
    refuse: set[str] = field(default_factory=set)
    defer: set[str] = field(default_factory=set)
    received: list[tuple[str, str, bytes]] = field(default_factory=list)  # (mail_from, rcpt, raw)
    lock: threading.Condition = field(default_factory=threading.Condition)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 <" + address + ">: Recipient address rejected: User unknown"
        if address in self.defer:
            return "451 4.2.1 Mailbox temporarily unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.received.append((envelope.mail_from, rcpt, envelope.content))
            self.lock.notify_all()
        return "250 OK queued"

    def wait_for(self, n: int, timeout: float) -> list[tuple[str, str, bytes]]:
        with self.lock:
            if not self.lock.wait_for(lambda: len(self.received) >= n, timeout=timeout):
                raise AssertionError(f"only {len(self.received)} of {n} mails arrived")
            return list(self.received)

    def recipients(self) -> set[str]:
        with self.lock:
            return {r for _, r, _ in self.received}


class MailboxServer:
    def __init__(self, mailbox: Mailbox | None = None) -> None:
        self.mailbox = mailbox or Mailbox()
        self.port = _free_port()
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> MailboxServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
