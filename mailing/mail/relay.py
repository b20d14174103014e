"""The one module that talks SMTP: mail handed to the relay over one connection, failures
classified. Only mailing/mail/pipeline.py hands it mail; mailing/mail/lanes.py keeps its
connections.

A 5xx answer for a recipient is permanent (do not retry); a 4xx answer or a broken connection
is transient (retry later). Nothing here logs an address.

A message goes out with smtplib's low-level commands rather than `sendmail`, which re-parses
both addresses and dot-stuffs the whole message with a regex for every copy. When the relay
offers PIPELINING (RFC 2920), MAIL FROM, RCPT TO and DATA go in one write and their three
answers are read together: two round trips a message instead of four; `send_many` also writes
one message's content with the next one's envelope, one round trip a message. Any answer out of
sequence drops the connection, which makes the relay discard the transaction, so a message is
only ever accepted by its final 250.
"""

from __future__ import annotations

import re
import smtplib
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from mailing.config import Settings, get_settings


class TransientFailure(Exception):
    """Try again later: the relay is unreachable or answered 4xx."""


class Deferred(TransientFailure):
    """The relay answered 4xx for this message: it is reachable, try the message again later."""


class PermanentFailure(Exception):
    """Do not try again: the relay answered 5xx for this recipient."""


@dataclass(frozen=True)
class Outcome:
    code: int
    permanent: bool


class Mailer:
    """Use as a context manager; `send` reconnects once if the relay dropped the connection."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._smtp: smtplib.SMTP | None = None
        # The shortest time, over the last send_many's pipelined writes, from a write to the
        # relay's first answer to it: the relay's round trip, whatever else slowed the others.
        self.round_trip: float | None = None

    def __enter__(self) -> Mailer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _connect(self) -> smtplib.SMTP:
        """A greeted (and, if configured, encrypted and logged-in) connection. A relay that
        refuses our EHLO and HELO refuses us, not a recipient: that is an unreachable relay,
        and the half-open connection is closed rather than kept (smtplib would not greet it
        again, so every later command would be answered 503)."""
        s = self.settings
        smtp: smtplib.SMTP | None = None
        try:
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout)
            if s.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if s.smtp_username:
                smtp.login(s.smtp_username, s.smtp_password or "")
            smtp.ehlo_or_helo_if_needed()  # (again after STARTTLS, which forgets the greeting)
        except (OSError, smtplib.SMTPException) as exc:
            if smtp is not None:
                smtp.close()
            raise TransientFailure(f"cannot reach relay: {type(exc).__name__}") from exc
        return smtp

    def send(self, envelope_from: str, to: str, raw: bytes) -> None:
        for attempt in (1, 2):
            if self._smtp is None:
                self._smtp = self._connect()
            try:
                _transact(self._smtp, envelope_from, to, raw)
                return
            except smtplib.SMTPRecipientsRefused as exc:
                code = next(iter(exc.recipients.values()))[0]
                self._raise_for(code)
            except smtplib.SMTPResponseException as exc:
                if exc.smtp_code == 421 or not (400 <= exc.smtp_code < 600):
                    self._drop()
                    if attempt == 1:
                        continue
                    raise TransientFailure(f"relay closed: {exc.smtp_code}") from exc
                self._reset()
                self._raise_for(exc.smtp_code)
            except (TimeoutError, smtplib.SMTPServerDisconnected, OSError) as exc:
                self._drop()
                if attempt == 1:
                    continue
                raise TransientFailure(f"connection lost: {type(exc).__name__}") from exc

    def send_many(self, messages: Sequence[Message]) -> list[Exception | None]:
        """Send messages in order; one outcome for each message attempted: None when the relay
        took it, or the PermanentFailure, Deferred or TransientFailure that `send` would raise.
        An unreachable relay ends the list early, its TransientFailure last: the messages after
        it were not attempted.

        When the relay offers PIPELINING, a message's content and the next message's envelope
        go in one write and their four answers are read together: one round trip a message
        instead of two. Trouble with the connection itself (a drop, a 421, a garbled answer)
        hands the message it concerns to `send`, which reconnects once, so every failure is
        classified as `send` classifies it, and a message is still only ever taken by its 250.
        """
        outcomes: list[Exception | None] = []
        self.round_trip = None
        while len(outcomes) < len(messages):
            if self._smtp is not None and _offers_pipelining(self._smtp):
                self._pipeline(messages, outcomes)
                if len(outcomes) == len(messages):
                    break
            try:
                self.send(*messages[len(outcomes)])
                outcomes.append(None)
            except (PermanentFailure, Deferred) as exc:
                outcomes.append(exc)
            except TransientFailure as exc:
                outcomes.append(exc)
                break
        return outcomes

    def _pipeline(self, messages: Sequence[Message], outcomes: list[Exception | None]) -> None:
        """Send from messages[len(outcomes)] on, appending each settled outcome; returns at the
        end or, with the connection dropped, at the first message whose fate is unknown."""
        smtp = self._smtp
        assert smtp is not None
        start = len(outcomes)
        envelopes = [_envelope(smtp, sender, to, raw) for sender, to, raw in messages[start:]]
        content = b""  # the previous message's, once its envelope was accepted
        try:
            for k, envelope in enumerate(envelopes):
                sent_at = time.perf_counter()
                smtp.send(content + envelope)
                if content:
                    outcomes.append(self._settled(_reply(smtp), 250))
                replies = [_reply(smtp) for _ in range(3)]
                self._timed(time.perf_counter() - sent_at)
                refused = next(
                    (code for code, ok in zip(replies, _ACCEPTED, strict=True) if code not in ok),
                    None,
                )
                if refused is None:
                    content = _stuffed(messages[start + k][2])
                    continue
                content = b""
                outcomes.append(self._settled(refused, 0))
                if 354 in replies:  # DATA accepted after a refusal: close, as sendmail does
                    raise _Lost
                smtp.rset()
            if content:
                smtp.send(content)
                outcomes.append(self._settled(_reply(smtp), 250))
        except (_Lost, TimeoutError, smtplib.SMTPException, OSError):
            self._drop()

    def _timed(self, seconds: float) -> None:
        if self.round_trip is None or seconds < self.round_trip:
            self.round_trip = seconds

    def _settled(self, code: int, accepted: int) -> Exception | None:
        """The outcome an answer gives a message: None for `accepted`, a failure for 4xx or
        5xx; anything else (421, garbage) means the connection cannot be trusted."""
        if code == accepted:
            return None
        if code == 421 or not 400 <= code < 600:
            raise _Lost
        return _failure_for(code)

    def _raise_for(self, code: int) -> None:
        raise _failure_for(code)

    def _reset(self) -> None:
        try:
            if self._smtp is not None:
                self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.close()
            finally:
                self._smtp = None

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
            finally:
                self._smtp = None


# An address as validated at sign-up (email_validator, no SMTPUTF8): no quoting, spaces,
# brackets or line breaks, so `<address>` is what smtplib's quoteaddr would make of it.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~@-]+\Z")


def _path(address: str) -> bytes:
    if _PLAIN_ADDRESS.match(address):
        return b"<" + address.encode("ascii") + b">"
    if "\r" in address or "\n" in address:
        # smtplib's putcmd refuses these too: a line break would inject an SMTP command.
        raise ValueError("line break in an envelope address")
    return smtplib.quoteaddr(address).encode("ascii")


def _stuffed(raw: bytes) -> bytes:
    """The DATA payload: leading dots doubled (what smtplib's regex does, as plain replaces)
    and the end-of-data line appended."""
    body = raw.replace(b"\n.", b"\n..")
    if body.startswith(b"."):
        body = b"." + body
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


Message = tuple[str, str, bytes]  # the envelope sender, the recipient, the message
_ACCEPTED = ((250,), (250, 251), (354,))  # what MAIL FROM, RCPT TO and DATA answer when all is well


def _failure_for(code: int) -> PermanentFailure | Deferred:
    """A refusal for one message: 5xx permanent, 4xx deferred."""
    if 500 <= code < 600:
        return PermanentFailure(f"refused: {code}")
    return Deferred(f"deferred: {code}")


class _Lost(Exception):
    """The connection can no longer be trusted to say what became of a message."""


def _offers_pipelining(smtp: smtplib.SMTP) -> bool:
    smtp.ehlo_or_helo_if_needed()
    return bool(smtp.has_extn("pipelining"))


def _reply(smtp: smtplib.SMTP) -> int:
    return smtp.getreply()[0]


def _envelope_lines(smtp: smtplib.SMTP, envelope_from: str, to: str, raw: bytes) -> list[bytes]:
    size = b" SIZE=%d" % len(raw) if smtp.has_extn("size") else b""  # as sendmail does
    return [
        b"MAIL FROM:" + _path(envelope_from) + size + b"\r\n",
        b"RCPT TO:" + _path(to) + b"\r\n",
        b"DATA\r\n",
    ]


def _envelope(smtp: smtplib.SMTP, envelope_from: str, to: str, raw: bytes) -> bytes:
    return b"".join(_envelope_lines(smtp, envelope_from, to, raw))


def _transact(smtp: smtplib.SMTP, envelope_from: str, to: str, raw: bytes) -> None:
    """One message, raising the exceptions `sendmail` raises for the same answers."""
    smtp.ehlo_or_helo_if_needed()
    mail, rcpt, data = _envelope_lines(smtp, envelope_from, to, raw)
    if smtp.has_extn("pipelining"):
        smtp.send(mail + rcpt + data)
        replies = [smtp.getreply() for _ in range(3)]
    else:
        replies = []
        for command in (mail, rcpt, data):
            smtp.send(command)
            replies.append(smtp.getreply())
            if replies[-1][0] not in (250, 251, 354):
                break
    (mail_code, mail_text), *rest = replies
    if mail_code != 250:
        _abandon(smtp, replies)
        raise smtplib.SMTPSenderRefused(mail_code, mail_text, envelope_from)
    rcpt_code, rcpt_text = rest[0]
    if rcpt_code not in (250, 251):
        _abandon(smtp, replies)
        raise smtplib.SMTPRecipientsRefused({to: (rcpt_code, rcpt_text)})
    data_code, data_text = rest[1]
    if data_code != 354:
        _abandon(smtp, replies)
        raise smtplib.SMTPDataError(data_code, data_text)
    smtp.send(_stuffed(raw))
    code, text = smtp.getreply()
    if code != 250:
        _abandon(smtp, [(code, text)])
        raise smtplib.SMTPDataError(code, text)


def _abandon(smtp: smtplib.SMTP, replies: list[tuple[int, bytes]]) -> None:
    """End a refused transaction as sendmail does: RSET, or close on 421. Also close if the
    relay said 354 to a DATA it should have refused, so nothing sent next becomes a message."""
    if any(code in (354, 421) for code, _ in replies):
        smtp.close()
        return
    try:
        smtp.rset()
    except (smtplib.SMTPException, OSError):
        smtp.close()
