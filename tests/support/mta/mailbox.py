"""The mailbox server: aiosmtpd on loopback that refuses chosen recipients (550 5.1.1), defers
others (451) and keeps everything else with its envelope sender."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from tests.support.sending import SinkServer


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


def mailbox_server(mailbox: Mailbox | None = None) -> SinkServer:
    """The mailbox on a loopback port: `with mailbox_server() as server: server.sink...`."""
    return SinkServer(mailbox or Mailbox())  # type: ignore[arg-type]
