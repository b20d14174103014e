"""The one exception hierarchy: every rule broken in mailing/ raises one of these, and
mailing/web/errors.py maps each kind to its answer (JSON `{"detail"}` for the API, a page for
the console). Nothing matches on message text; the message is safe to show to the person who
caused it.
"""

from __future__ import annotations

from enum import StrEnum

from mailing.states import SubscriberStatus


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
    """This person may not do this, whatever the state (403)."""

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


class LinkProblem(StrEnum):
    """What is wrong with a link from an email (the 400 page says which, and what to do)."""

    INVALID = "invalid"  # forged, altered, revoked (erased), misdirected or for another purpose
    EXPIRED = "expired"  # a confirmation, data or erase link past its age
    USED = "used"  # a confirmation link already used (it works once)


LINK_PROBLEM_TEXT: dict[LinkProblem, str] = {
    LinkProblem.INVALID: "This link is not valid.",
    LinkProblem.EXPIRED: "This link has expired.",
    LinkProblem.USED: "This link has already been used.",
}


class InvalidLink(MailingError):
    """A link in an email that cannot act (400): `problem` says why."""

    status_code = 400

    def __init__(self, problem: LinkProblem = LinkProblem.INVALID) -> None:
        super().__init__(LINK_PROBLEM_TEXT[problem])
        self.problem = problem


class NotActive(Conflict):
    """Themes and frequency can only be changed on an active subscription (409)."""

    def __init__(self, status: SubscriberStatus) -> None:
        super().__init__(f"The subscription is {status.value}: no themes to change.")
        self.status = status
