"""The state machines: each status enum with its allowed transitions, in one place."""

from __future__ import annotations

from enum import StrEnum


class SubscriberStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"


class UpdateStatus(StrEnum):
    DRAFT = "draft"
    SENDING = "sending"
    SENT = "sent"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    # The subscriber unsubscribed (or was erased) after the send began: nothing goes out.
    CANCELLED = "cancelled"


class ConsentEventKind(StrEnum):
    REQUESTED = "requested"
    CONFIRMED = "confirmed"
    CHANGED = "changed"
    WITHDRAWN = "withdrawn"


class StaffRole(StrEnum):
    EDITOR = "editor"
    SENDER = "sender"
    ADMIN = "admin"


class InvalidTransition(RuntimeError):
    pass


SUBSCRIBER_TRANSITIONS: dict[SubscriberStatus, set[SubscriberStatus]] = {
    SubscriberStatus.PENDING: {SubscriberStatus.ACTIVE},
    SubscriberStatus.ACTIVE: {SubscriberStatus.UNSUBSCRIBED},
    # Re-subscribing always goes through a fresh confirmation.
    SubscriberStatus.UNSUBSCRIBED: {SubscriberStatus.ACTIVE},
}

UPDATE_TRANSITIONS: dict[UpdateStatus, set[UpdateStatus]] = {
    UpdateStatus.DRAFT: {UpdateStatus.SENDING},
    UpdateStatus.SENDING: {UpdateStatus.SENT},
    UpdateStatus.SENT: set(),
}

DELIVERY_TRANSITIONS: dict[DeliveryStatus, set[DeliveryStatus]] = {
    DeliveryStatus.PENDING: {DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.CANCELLED},
    DeliveryStatus.SENT: set(),
    DeliveryStatus.FAILED: set(),
    DeliveryStatus.CANCELLED: set(),
}

# Roles are ordered: each may do everything the ones before it may.
ROLE_RANK: dict[StaffRole, int] = {StaffRole.EDITOR: 1, StaffRole.SENDER: 2, StaffRole.ADMIN: 3}


def check_subscriber(old: SubscriberStatus, new: SubscriberStatus) -> None:
    if new != old and new not in SUBSCRIBER_TRANSITIONS[old]:
        raise InvalidTransition(f"subscriber cannot go from {old} to {new}")


def check_update(old: UpdateStatus, new: UpdateStatus) -> None:
    if new != old and new not in UPDATE_TRANSITIONS[old]:
        raise InvalidTransition(f"update cannot go from {old} to {new}")


def check_delivery(old: DeliveryStatus, new: DeliveryStatus) -> None:
    if new != old and new not in DELIVERY_TRANSITIONS[old]:
        raise InvalidTransition(f"delivery cannot go from {old} to {new}")


def role_allows(role: StaffRole, needed: StaffRole) -> bool:
    return ROLE_RANK[role] >= ROLE_RANK[needed]
