"""The one exception hierarchy: every rule broken in mailing/ raises one of these, and
mailing/web/errors.py maps each kind to its answer (JSON `{"detail"}` for the API, a page for
the console). Nothing matches on message text; the message is safe to show to the person who
caused it.
"""

from __future__ import annotations


class MailingError(Exception):
    """Base of every domain error."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(MailingError):
    status_code = 404


class Conflict(MailingError):
    """The thing is not in a state that allows this (409)."""

    status_code = 409


class Invalid(MailingError):
    """Bad values; `errors` maps each field to what is wrong with it (422)."""

    status_code = 422

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


class Forbidden(MailingError):
    status_code = 403


class TooMany(MailingError):
    """A limit was reached; try again after `retry_after` seconds (429)."""

    status_code = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(MailingError):
    """A part we depend on (the relay) did not take the work; nothing changed (503)."""

    status_code = 503
