"""A stranger's sign-up for someone's active address is not written into the owner's consent
record: their ledger and data export show only what they asked for and confirmed. The owner is
still told ("already subscribed"). Production defaults."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.support.helpers import only_link, subscribe
from tests.support.residents import confirmed
from tests.support.selfservice import next_mail

MINDS, PLACES, LIVING = "healthy-minds", "healthy-places", "healthy-living"


def _export(prod: TestClient, smtp: Any, preferences: str) -> dict[str, Any]:
    asked = next_mail(smtp, lambda: prod.post(preferences, json={"action": "export"}))
    answer = prod.get(only_link(asked, "my-data"))
    assert answer.status_code == 200
    return dict(answer.json())


def test_a_strangers_sign_up_for_an_active_address_is_not_in_the_owners_record(
    prod: TestClient, smtp: Any
) -> None:
    owner = "owner@example.net"
    preferences = confirmed(prod, smtp, owner, [MINDS])
    before = _export(prod, smtp, preferences)["consent_ledger"]
    assert [e["event"] for e in before] == ["requested", "confirmed"]

    told = next_mail(smtp, lambda: subscribe(prod, owner, [PLACES, LIVING], frequency="weekly"))
    assert told.subject.startswith("You are already subscribed")

    data = _export(prod, smtp, preferences)
    assert data["consent_ledger"] == before
    assert data["themes"] == [MINDS]
    assert data["subscriber"]["frequency"] == "immediate"
    assert not [e for e in data["consent_ledger"] if PLACES in (e.get("themes") or [])]


def test_a_sign_up_for_an_unsubscribed_address_is_still_recorded_as_a_request(
    prod: TestClient, smtp: Any
) -> None:
    """The first half of a double opt-in: confirming it brings them back."""
    preferences = confirmed(prod, smtp, "back@example.net", [MINDS])
    assert prod.post(preferences, json={"themes": []}).json()["status"] == "unsubscribed"
    mail = next_mail(smtp, lambda: subscribe(prod, "back@example.net", [PLACES]))
    assert prod.post(only_link(mail, "confirm")).status_code == 200
    ledger = _export(prod, smtp, preferences)["consent_ledger"]
    assert [e["event"] for e in ledger][-2:] == ["requested", "confirmed"]
