"""The state machines: every status, and every change of status as a named transition.

This is the only module that spells a status. A transition names the statuses it may start from
and the one it leads to; `transition(...)` turns it into one conditional UPDATE, so a change that
is not declared here cannot happen, and two racing callers cannot both win (the loser's UPDATE
matches no row). The database refuses any status not listed here (CHECK constraints, migration
0002), and tests/test_states.py fails if a status literal appears anywhere else in the code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement
from sqlmodel import Session


class SubscriberStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    # A hard bounce (or repeated soft bounces): suppressed like an unsubscribe.
    BOUNCED = "bounced"


class UpdateStatus(StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"
    SENT = "sent"
    CANCELLED = "cancelled"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    # The subscriber left (or the send was cancelled) before it went: nothing went out.
    CANCELLED = "cancelled"
    # After the relay took it: the recipient's server refused it, or they reported it as spam.
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class NoticeKind(StrEnum):
    """One-off emails to one subscriber (the notice outbox)."""

    CONFIRM = "confirm"
    ALREADY_SUBSCRIBED = "already_subscribed"
    ERASE_LINK = "erase_link"
    EXPORT_LINK = "export_link"
    WELCOME = "welcome"
    # Imported without evidence of consent: one email asking them to confirm (imports.py).
    REPERMISSION = "repermission"
    # Consent older than MAILING_CONSENT_REFRESH_YEARS: one email asking them to stay.
    CONSENT_REFRESH = "consent_refresh"
    SIGN_IN_FAILURES = "sign_in_failures"  # to an admin: an account sees repeated failures
    STAFF_INVITE = "staff_invite"  # to a staff member (notice.staff_id): their one-time link
    REVIEW_REQUEST = "review_request"  # to a sender: an editor asks them to review an update
    UPDATE_SENT = "update_sent"  # to the update's author: it has gone
    SEND_PAUSED = "send_paused"  # to senders and admins: a send stopped itself (the guard)


class ConsentEventKind(StrEnum):
    REQUESTED = "requested"
    CONFIRMED = "confirmed"
    CHANGED = "changed"
    WITHDRAWN = "withdrawn"
    # Consent given elsewhere, brought in by `mailing import` with its evidence.
    IMPORTED = "imported"
    # Consent refresh (subscribers/refresh.py): asked to stay, stayed, or did not answer in time.
    REFRESH_ASKED = "refresh-asked"
    RENEWED = "renewed"
    LAPSED = "lapsed"


class ConsentChannel(StrEnum):
    """How a consent event reached us (the ledger's `channel`)."""

    FORM = "form"  # the sign-up form
    API = "api"  # JSON from the site's own pages or the embed snippet
    EMAIL_LINK = "email-link"  # a link's page in one of our emails (confirm, preferences)
    ONE_CLICK = "one-click"  # RFC 8058 one-click unsubscribe, as a mailbox provider sends it
    EMAIL = "email"  # a message to the List-Unsubscribe mailto: address
    COMPLAINT = "complaint"  # a spam complaint (feedback loop)
    SUPPORT_DESK = "support-desk"  # staff acting for the person, who asked by another channel
    CONSENT_REFRESH = "consent-refresh"  # the consent refresh (asked, renewed, lapsed)
    IMPORT = "import"  # a list brought in with `mailing import`


class ErasureReason(StrEnum):
    """Why a subscriber's rows were deleted (erasure_log.reason)."""

    REQUEST = "request"  # they asked, from an emailed erase link
    UNCONFIRMED = "unconfirmed"  # a sign-up never confirmed, past its link's expiry
    RETENTION = "retention"  # unsubscribed or bounced for longer than the retention period
    REAPPLIED = "reapplied"  # erased again from the erasure journal after a restore


class Frequency(StrEnum):
    """How often a subscriber hears from us: each update as it is sent, or a weekly summary."""

    IMMEDIATE = "immediate"
    WEEKLY = "weekly"


class DigestStatus(StrEnum):
    """A weekly summary for one subscriber and week (mailing/sending/digests.py)."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    # They unsubscribed, switched to each update, or were erased before it went: nothing went.
    CANCELLED = "cancelled"


class StaffRole(StrEnum):
    EDITOR = "editor"
    SENDER = "sender"
    ADMIN = "admin"


S = TypeVar("S", bound=StrEnum)


@dataclass(frozen=True)
class Transition(Generic[S]):
    """A named change of status: from any of `source` to `target`."""

    name: str
    source: frozenset[S]
    target: S

    def allows(self, current: S) -> bool:
        return current in self.source


def _t(name: str, source: Iterable[S], target: S) -> Transition[S]:
    return Transition(name, frozenset(source), target)


Sub = SubscriberStatus
Upd = UpdateStatus
Dlv = DeliveryStatus


class SubscriberTransitions:
    # Confirming is the only way in, and the only way back after leaving or bouncing.
    CONFIRM = _t("confirm", {Sub.PENDING, Sub.UNSUBSCRIBED, Sub.BOUNCED}, Sub.ACTIVE)
    UNSUBSCRIBE = _t("unsubscribe", {Sub.ACTIVE}, Sub.UNSUBSCRIBED)
    BOUNCE = _t("bounce", {Sub.ACTIVE}, Sub.BOUNCED)
    # An admin undoing a storm (a relay that refused everyone): never an unsubscribe or complaint.
    REINSTATE = _t("reinstate", {Sub.BOUNCED}, Sub.ACTIVE)


class UpdateTransitions:
    SCHEDULE = _t("schedule", {Upd.DRAFT}, Upd.SCHEDULED)
    UNSCHEDULE = _t("unschedule", {Upd.SCHEDULED}, Upd.DRAFT)
    # "Send now" (console, API, CLI) starts a draft only: a scheduled update waits for its time
    # (START_DUE, the reconciler) unless it is unscheduled first. One rule for every entry point.
    START = _t("start", {Upd.DRAFT}, Upd.SENDING)
    START_DUE = _t("start_due", {Upd.SCHEDULED}, Upd.SENDING)
    PAUSE = _t("pause", {Upd.SENDING}, Upd.PAUSED)
    RESUME = _t("resume", {Upd.PAUSED}, Upd.SENDING)
    CANCEL = _t("cancel", {Upd.SCHEDULED, Upd.SENDING, Upd.PAUSED}, Upd.CANCELLED)
    FINISH = _t("finish", {Upd.SENDING}, Upd.SENT)
    # An admin re-sends a sent update to copies that failed in a storm (then it finishes again).
    RESEND = _t("resend", {Upd.SENT}, Upd.SENDING)
    # The email could not be built (it passed validation once, the builder refused it later):
    # the send is stopped with a message rather than retried for ever.
    ABANDON = _t("abandon", {Upd.SENDING, Upd.PAUSED}, Upd.CANCELLED)


class DeliveryTransitions:
    SEND = _t("send", {Dlv.PENDING}, Dlv.SENT)
    FAIL = _t("fail", {Dlv.PENDING}, Dlv.FAILED)
    CANCEL = _t("cancel", {Dlv.PENDING}, Dlv.CANCELLED)
    # A bounce can come back after the relay took the message, or while it was still queued.
    BOUNCE = _t("bounce", {Dlv.PENDING, Dlv.SENT}, Dlv.BOUNCED)
    COMPLAIN = _t("complain", {Dlv.SENT, Dlv.BOUNCED}, Dlv.COMPLAINED)
    RETRY = _t("retry", {Dlv.FAILED}, Dlv.PENDING)  # re-sending copies a storm refused


class DigestTransitions:
    SEND = _t("send", {DigestStatus.PENDING}, DigestStatus.SENT)
    FAIL = _t("fail", {DigestStatus.PENDING}, DigestStatus.FAILED)
    CANCEL = _t("cancel", {DigestStatus.PENDING}, DigestStatus.CANCELLED)


# The statuses in which an update may still be edited, and those that count as "in flight".
EDITABLE_UPDATE = frozenset({Upd.DRAFT})
IN_FLIGHT_UPDATE = frozenset({Upd.SENDING, Upd.PAUSED})
# Subscribers we must never mail (beyond a confirmation request of a fresh sign-up).
SUPPRESSED_SUBSCRIBER = frozenset({Sub.UNSUBSCRIBED, Sub.BOUNCED})
# Deliveries that went out (the relay took them).
DELIVERED = frozenset({Dlv.SENT, Dlv.BOUNCED, Dlv.COMPLAINED})


def transition(
    conn: Session | Connection,
    table: sa.Table,
    t: Transition[Any],
    where: ColumnElement[bool],
    values: Mapping[str, Any] | None = None,
    *,
    params: Mapping[str, Any] | None = None,
) -> int:
    """Apply `t` to the rows of `table` that match `where` and are in one of its source statuses;
    returns how many rows changed. `values` may set other columns in the same statement;
    `params` are the values of bound parameters in `where` or `values`."""
    result = conn.execute(transition_statement(table, t, where, values), params)
    return int(getattr(result, "rowcount", 0) or 0)


def transition_statement(
    table: sa.Table,
    t: Transition[Any],
    where: ColumnElement[bool],
    values: Mapping[str, Any] | None = None,
) -> sa.Update:
    """The UPDATE that `transition` runs, for a hot path to build once with bound parameters
    and execute many times (it answers the same: only rows in a source status change)."""
    return (
        sa.update(table)
        .where(where, table.c.status.in_([s.value for s in t.source]))
        .values(status=t.target.value, **(values or {}))
    )


def values_of(enum: type[StrEnum]) -> list[str]:
    return [member.value for member in enum]


# Roles are ordered: each may do everything the ones before it may.
ROLE_RANK: dict[StaffRole, int] = {StaffRole.EDITOR: 1, StaffRole.SENDER: 2, StaffRole.ADMIN: 3}


def role_allows(role: StaffRole, needed: StaffRole) -> bool:
    return ROLE_RANK[role] >= ROLE_RANK[needed]


# Which column of which table holds which status (the CHECK constraints and the literal test).
STATUS_COLUMNS: dict[tuple[str, str], type[StrEnum]] = {
    ("subscriber", "status"): SubscriberStatus,
    ("theme_update", "status"): UpdateStatus,
    ("delivery", "status"): DeliveryStatus,
    ("consent_event", "kind"): ConsentEventKind,
    ("staff", "role"): StaffRole,
    ("weekly_digest", "status"): DigestStatus,
}
