"""Handing mail to the SMTP relay over one persistent connection, with failures classified.

A 5xx answer for a recipient is permanent (do not retry); a 4xx answer or a broken connection
is transient (retry later). Nothing here logs an address.
"""

from __future__ import annotations

import smtplib
import ssl
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any

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
        s = self.settings
        try:
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout)
            if s.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if s.smtp_username:
                smtp.login(s.smtp_username, s.smtp_password or "")
        except (OSError, smtplib.SMTPException) as exc:
            raise TransientFailure(f"cannot reach relay: {type(exc).__name__}") from exc
        return smtp

    def send(self, envelope_from: str, to: str, raw: bytes) -> None:
        for attempt in (1, 2):
            if self._smtp is None:
                self._smtp = self._connect()
            try:
                self._smtp.sendmail(envelope_from, [to], raw)
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

    def _raise_for(self, code: int) -> None:
        if 500 <= code < 600:
            raise PermanentFailure(f"refused: {code}")
        raise Deferred(f"deferred: {code}")

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


_local = threading.local()


def thread_mailer() -> Mailer:
    """A persistent connection for this worker thread, kept open across chunks and tasks (and
    replaced when the relay settings change)."""
    settings = get_settings()
    key = (settings.smtp_host, settings.smtp_port, settings.smtp_username)
    current: tuple[tuple[Any, ...], Mailer] | None = getattr(_local, "mailer", None)
    if current is None or current[0] != key:
        if current is not None:
            current[1].close()
        current = (key, Mailer(settings))
        _local.mailer = current
    return current[1]
