"""`mailing inbound`: the SMTP receiver for mail to @{MAILING_BOUNCE_DOMAIN}: bounces to
`bounce+{ref}@`, complaint reports, and unsubscribes sent to `unsubscribe+{token}@`.

It is never a relay: a recipient outside the bounce domain is refused at RCPT. A message over
`inbound_max_bytes` is refused (552) without being kept. Whatever a message holds, it is answered
250 once it is dealt with (bounces are never bounced), or 451 when the database is unreachable so
the sending MTA tries again later; nothing sent to it can crash it. Each recipient is handled in
its own transaction, in a worker thread, so a slow database never stalls the SMTP conversation of
other senders.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SMTPSession
from sqlmodel import Session

from mailing.config import ConfigError, get_settings
from mailing.db import get_engine
from mailing.deliverability import returnpath, rules
from mailing.deliverability.classify import Kind, classify
from mailing.metrics import INBOUND_MESSAGES

log = logging.getLogger(__name__)
# aiosmtpd logs every command (RCPT TO holds a return path or an unsubscribe token) at INFO and
# every line of every message at DEBUG: only its errors may reach our logs.
logging.getLogger("mail.log").setLevel(logging.ERROR)

MAX_RECIPIENTS = 50


def receive(recipient: str, raw: bytes) -> rules.Outcome:
    """Deal with one message for one recipient in the bounce domain; commits."""
    local = recipient.rpartition("@")[0]
    lowered = local.lower()
    with Session(get_engine(), expire_on_commit=False) as session:
        if lowered.startswith(returnpath.UNSUBSCRIBE_PREFIX):
            outcome = rules.email_unsubscribe(session, local[len(returnpath.UNSUBSCRIBE_PREFIX) :])
        else:
            verdict = classify(raw)
            ref: returnpath.Ref | None = None
            if lowered.startswith(returnpath.BOUNCE_PREFIX):
                # The return path is the authority on which copy this is about.
                ref = returnpath.decode(local[len(returnpath.BOUNCE_PREFIX) :])
                if ref is None:
                    INBOUND_MESSAGES.labels(rules.Outcome.FORGED).inc()
                    return rules.Outcome.FORGED
            elif verdict.kind == Kind.COMPLAINT and verdict.ref:
                # A feedback loop's own address: the report shows the original's return path.
                ref = returnpath.decode(verdict.ref)
            outcome = rules.take(session, verdict, ref)
        session.commit()
    INBOUND_MESSAGES.labels(outcome).inc()
    return outcome


class Handler:
    """aiosmtpd hooks: who may be written to, and what happens to what arrives."""

    def __init__(self, domain: str) -> None:
        self.domain = domain.lower()

    async def handle_RCPT(
        self,
        server: SMTP,
        session: SMTPSession,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address.rpartition("@")[2].lower() != self.domain:
            INBOUND_MESSAGES.labels(rules.Outcome.REFUSED_RECIPIENT).inc()
            return "550 5.7.1 Relaying denied: only mail for the bounce domain is taken here"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: SMTPSession, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        recipients = list(envelope.rcpt_tos)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, _receive_all, recipients, raw)
        except sa.exc.SQLAlchemyError as exc:
            INBOUND_MESSAGES.labels(rules.Outcome.ERROR).inc()
            log.warning(
                "inbound: database unavailable (%s); asked the sender to retry", type(exc).__name__
            )
            return "451 4.3.0 Temporarily unable to process; try again later"
        except Exception:
            INBOUND_MESSAGES.labels(rules.Outcome.ERROR).inc()
            log.exception("inbound: could not process a message; asked the sender to retry")
            return "451 4.3.0 Temporarily unable to process; try again later"
        return "250 OK"


def _receive_all(recipients: list[str], raw: bytes) -> None:
    for recipient in recipients:
        receive(recipient, raw)


class _Receiver(SMTP):
    """aiosmtpd's SMTP, counting the messages it refuses for their size."""

    async def push(self, status: Any) -> None:
        if str(status).startswith("552"):
            INBOUND_MESSAGES.labels(rules.Outcome.TOO_BIG).inc()
        await super().push(status)


class InboundServer(Controller):
    """The receiver on a host and port, in a thread of its own (start() / stop())."""

    def __init__(self, host: str = "127.0.0.1", port: int = 2525) -> None:
        settings = get_settings()
        if not settings.bounce_domain:
            raise ConfigError(
                "mailing inbound needs MAILING_BOUNCE_DOMAIN: the domain whose mail it takes."
            )
        super().__init__(
            Handler(settings.bounce_domain),
            hostname=host,
            port=port,
            server_hostname=settings.bounce_domain,
            data_size_limit=settings.inbound_max_bytes,
            timeout=60,
        )

    def factory(self) -> SMTP:
        return _Receiver(self.handler, **self.SMTP_kwargs)


def serve(host: str, port: int) -> None:
    """Run until SIGINT or SIGTERM (the `mailing inbound` command)."""
    import signal

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server = InboundServer(host, port)
    server.start()
    log.info("inbound: taking mail for %s on %s:%s", get_settings().bounce_domain, host, port)
    try:
        stop.wait()
    finally:
        server.stop()
