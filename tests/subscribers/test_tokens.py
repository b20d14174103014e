"""Confirmation links: tampered, expired, wrong-purpose and forged links get a helpful 400."""

from __future__ import annotations

import time

import pytest
from itsdangerous import URLSafeTimedSerializer
from sqlmodel import select

from mailing.errors import InvalidLink
from mailing.models import Subscriber
from mailing.states import SubscriberStatus
from mailing.subscribers.tokens import Purpose, sign, verify
from tests.conftest import TEST_SECRET
from tests.support.helpers import only_link, subscribe


@pytest.fixture
def pending_link(client, smtp):
    subscribe(client, "token@example.org")
    return only_link(smtp.outbox.wait_for(1)[0], "confirm")


def _status(session):
    session.expire_all()
    return session.exec(select(Subscriber)).one().status


def _assert_invalid_page(answer):
    assert answer.status_code == 400
    assert "This link does not work" in answer.text
    assert 'href="/"' in answer.text  # says what to do next


@pytest.mark.parametrize("method", ["get", "post"])
def test_tampered_token_is_400(client, session, pending_link, method):
    token = pending_link.rsplit("/", 1)[1]
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    _assert_invalid_page(getattr(client, method)(f"/confirm/{tampered}"))
    assert _status(session) == SubscriberStatus.PENDING


def test_altered_payload_is_400(client, session, pending_link):
    token = pending_link.rsplit("/", 1)[1]
    compressed = token.startswith(".")
    payload, rest = token.lstrip(".").split(".", 1)
    mid = len(payload) // 2
    flipped = payload[:mid] + ("e" if payload[mid] != "e" else "f") + payload[mid + 1 :]
    altered = ("." if compressed else "") + flipped + "." + rest
    _assert_invalid_page(client.post(f"/confirm/{altered}"))
    assert _status(session) == SubscriberStatus.PENDING


@pytest.mark.parametrize("junk", ["x", "a.b.c", "." * 40, "%00", "é", "A" * 3000])
def test_garbage_tokens_are_400_never_500(client, junk):
    for method in ("get", "post"):
        assert getattr(client, method)(f"/confirm/{junk}").status_code in (400, 404)


def test_expired_token_is_400_and_says_expired(client, session, pending_link, monkeypatch):
    token = pending_link.rsplit("/", 1)[1]
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 8 * 86400)
    answer = client.post(f"/confirm/{token}")
    _assert_invalid_page(answer)
    assert "expired" in answer.text
    monkeypatch.setattr(time, "time", real)
    assert _status(session) == SubscriberStatus.PENDING


def test_token_for_another_purpose_is_400(client, session, pending_link):
    sub = session.exec(select(Subscriber)).one()
    for purpose in (Purpose.UNSUBSCRIBE, Purpose.MANAGE, Purpose.ERASE):
        other = sign(purpose, {"s": sub.id, "h": "x", "t": ["healthy-minds"]})
        _assert_invalid_page(client.post(f"/confirm/{other}"))
    assert _status(session) == SubscriberStatus.PENDING


def test_token_signed_with_an_unknown_key_is_400(client, session, pending_link):
    sub = session.exec(select(Subscriber)).one()
    forged = URLSafeTimedSerializer("attacker-key", salt="mailing.confirm").dumps(
        {"s": sub.id, "h": "0" * 16, "t": []}
    )
    _assert_invalid_page(client.post(f"/confirm/{forged}"))
    assert _status(session) == SubscriberStatus.PENDING


def test_validly_signed_token_naming_someone_else_is_400(client, smtp, session, pending_link):
    sub = session.exec(select(Subscriber)).one()
    wrong = sign(Purpose.CONFIRM, {"s": sub.id, "h": "0123456789abcdef", "t": []})
    _assert_invalid_page(client.post(f"/confirm/{wrong}"))
    assert _status(session) == SubscriberStatus.PENDING


def test_key_rotation_keeps_old_links_working(client, session, pending_link, settings_env):
    token = pending_link.rsplit("/", 1)[1]
    settings_env(secret_keys=f"new-key-{'n' * 40},{TEST_SECRET}")
    assert verify(Purpose.CONFIRM, token)["s"] > 0
    assert client.post(f"/confirm/{token}").status_code == 200
    assert _status(session) == SubscriberStatus.ACTIVE
    # New links are signed with the new key: they fail once it is removed.
    fresh = sign(Purpose.CONFIRM, {"s": 1, "h": "x", "t": []})
    settings_env(secret_keys=TEST_SECRET)
    with pytest.raises(InvalidLink):
        verify(Purpose.CONFIRM, fresh)


def test_removed_key_no_longer_verifies(client, session, pending_link, settings_env):
    token = pending_link.rsplit("/", 1)[1]
    settings_env(secret_keys=f"only-new-key-{'n' * 40}")
    _assert_invalid_page(client.post(f"/confirm/{token}"))
