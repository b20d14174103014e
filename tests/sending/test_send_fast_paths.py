"""The send's shortcuts produce exactly what the slow, obvious code produced.

Link tokens are signed without itsdangerous's per-token work but must be the same bytes, verify
with itsdangerous and stay purpose-scoped; return paths keep their MAC; messages go out with
smtplib's low-level commands (pipelined when the relay offers PIPELINING) and must arrive byte for
byte, with refusals classified as before and the connection still usable afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import pytest
from itsdangerous import URLSafeSerializer

from mailing.config import get_settings
from mailing.deliverability import returnpath
from mailing.errors import InvalidLink
from mailing.mail.relay import Deferred, Mailer, PermanentFailure, TransientFailure
from mailing.sending.batch import _LinkSubject
from mailing.subscribers import links
from mailing.subscribers.records import link_check
from mailing.subscribers.tokens import Purpose, sign, sign_link, verify
from tests.conftest import TEST_SECRET
from tests.support.sending import PipeliningSink, Sink, SinkServer

NEVER_EXPIRE = [Purpose.UNSUBSCRIBE, Purpose.MANAGE]


@pytest.mark.parametrize("purpose", NEVER_EXPIRE)
def test_link_tokens_are_byte_for_byte_what_itsdangerous_signs(purpose):
    for subscriber_id, version in [(1, 1), (42, 3), (9_999_999_999, 0), (7, 12345)]:
        who = _LinkSubject(subscriber_id, version, f"reader{subscriber_id}@example.net")
        check = link_check(who)
        payload = {"s": subscriber_id, "v": version, "h": check}
        assert sign_link(purpose, subscriber_id, version, check) == sign(purpose, payload)
        assert links.token_for(purpose, who) == sign(purpose, payload)
        assert verify(purpose, links.token_for(purpose, who)) == payload


def test_a_copys_two_tokens_verify_only_for_their_own_purpose():
    who = _LinkSubject(5, 2, "five@example.net")
    unsubscribe, manage = links.mail_tokens(who)
    assert verify(Purpose.UNSUBSCRIBE, unsubscribe)["s"] == 5
    assert verify(Purpose.MANAGE, manage)["s"] == 5
    for purpose, token in [(Purpose.MANAGE, unsubscribe), (Purpose.UNSUBSCRIBE, manage)]:
        with pytest.raises(InvalidLink):
            verify(purpose, token)
    for other in (Purpose.CONFIRM, Purpose.EXPORT, Purpose.ERASE):
        with pytest.raises(InvalidLink):
            verify(other, unsubscribe)


def test_tokens_signed_the_old_way_keep_verifying():
    # What links.token_for produced before the shortcut: itsdangerous with the purpose's salt.
    old = URLSafeSerializer(TEST_SECRET, salt="mailing.unsubscribe").dumps(
        {"s": 8, "v": 1, "h": "0123456789abcdef"}
    )
    assert verify(Purpose.UNSUBSCRIBE, old)["s"] == 8


def test_after_a_key_rotation_new_tokens_are_signed_with_the_first_key(settings_env):
    settings_env(secret_keys=f"a-new-key-{'x' * 40},{TEST_SECRET}")
    token = sign_link(Purpose.MANAGE, 3, 1, "0123456789abcdef")
    new_only = URLSafeSerializer(f"a-new-key-{'x' * 40}", salt="mailing.manage")
    assert new_only.loads(token)["s"] == 3


def test_return_path_macs_are_unchanged():
    body = "d123-456"
    key = get_settings().secret_key_list[0]
    digest = hmac.new(key.encode(), returnpath.SALT + body.encode(), hashlib.sha256).digest()
    expected = base64.b32encode(digest).decode().lower()[: returnpath.MAC_CHARS]
    ref = returnpath.Ref(returnpath.RefKind.DELIVERY, 456, 123)
    assert returnpath.encode(ref) == f"{body}-{expected}"
    assert returnpath.decode(returnpath.encode(ref)) == ref


AWKWARD = (
    b"From: a@example.org\r\nTo: b@example.net\r\nSubject: dots\r\n\r\n"
    b".a line that starts with a dot\r\n..two\r\n.\r\nlast line without a line break"
)


@pytest.mark.parametrize("sink_class", [Sink, PipeliningSink], ids=["plain", "pipelining"])
def test_copies_arrive_byte_for_byte_and_refusals_are_classified(sink_class):
    sink = sink_class(refuse={"gone@example.net"}, defer={"busy@example.net": 1})
    with SinkServer(sink) as relay, Mailer(_relay_settings(relay.port)) as mailer:
        mailer.send("bounce@example.org", "first@example.net", AWKWARD)
        with pytest.raises(PermanentFailure):
            mailer.send("bounce@example.org", "gone@example.net", AWKWARD)
        with pytest.raises(Deferred):
            mailer.send("bounce@example.org", "busy@example.net", AWKWARD)
        # The same connection goes on: a refusal ends only its own transaction.
        mailer.send("bounce@example.org", "busy@example.net", AWKWARD + b"\r\n")
        sink.wait_for(2, timeout=10)
    assert [r for r, _ in sink.received] == ["first@example.net", "busy@example.net"]
    assert sink.received[0][1] == AWKWARD.replace(b"break", b"break\r\n")
    assert sink.received[1][1] == AWKWARD + b"\r\n"


def test_an_envelope_address_with_a_line_break_sends_nothing():
    sink = PipeliningSink()
    with SinkServer(sink) as relay, Mailer(_relay_settings(relay.port)) as mailer:
        for hostile in ["x@example.net\r\nRCPT TO:<y@example.net>", "x@example.net>\nDATA"]:
            with pytest.raises(ValueError):
                mailer.send("bounce@example.org", hostile, AWKWARD)
            with pytest.raises(ValueError):
                mailer.send(hostile, "first@example.net", AWKWARD)
        mailer.send("bounce@example.org", "first@example.net", AWKWARD)
        sink.wait_for(1, timeout=10)
    assert [r for r, _ in sink.received] == ["first@example.net"]


def _batch(*recipients: str) -> list[tuple[str, str, bytes]]:
    return [("bounce@example.org", r, AWKWARD + b"\r\n" + r.encode() + b"\r\n") for r in recipients]


@pytest.mark.parametrize("sink_class", [Sink, PipeliningSink], ids=["plain", "pipelining"])
def test_send_many_gives_each_message_the_outcome_send_gives_it(sink_class):
    """One message's content and the next one's envelope share a write when the relay allows
    it: a refusal or a deferral still settles only its own message, in order."""
    sink = sink_class(refuse={"gone@example.net"}, defer={"busy@example.net": 1})
    batch = _batch("a@example.net", "gone@example.net", "busy@example.net", "b@example.net")
    batch += _batch("busy@example.net", "c@example.net")
    with SinkServer(sink) as relay, Mailer(_relay_settings(relay.port)) as mailer:
        outcomes = mailer.send_many(batch)
        sink.wait_for(4, timeout=10)
    kinds = [type(o).__name__ if o else None for o in outcomes]
    assert kinds == [None, "PermanentFailure", "Deferred", None, None, None]
    taken = [batch[i] for i in (0, 3, 4, 5)]  # the refusal and the first deferral are not
    assert sink.received == [(to, raw) for _, to, raw in taken]


class DroppingSink(PipeliningSink):
    """Closes the connection instead of answering the DATA of chosen recipients, `times` times
    each: the message was not taken, and the client cannot know that."""

    def __init__(self, drop: dict[str, int]) -> None:
        super().__init__()
        self.drop = drop

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        recipient = envelope.rcpt_tos[0]
        if self.drop.get(recipient, 0) > 0:
            self.drop[recipient] -= 1
            server.transport.close()
            return "421 closing"
        return await super().handle_DATA(server, session, envelope)


def test_a_connection_lost_mid_pipeline_resends_only_the_message_it_left_unknown():
    sink = DroppingSink({"lost@example.net": 1})
    batch = _batch("a@example.net", "b@example.net", "lost@example.net", "c@example.net")
    with SinkServer(sink) as relay, Mailer(_relay_settings(relay.port)) as mailer:
        mailer.send("bounce@example.org", "warm@example.net", AWKWARD)  # pipelining from here
        outcomes = mailer.send_many(batch)
        sink.wait_for(5, timeout=10)
    assert outcomes == [None, None, None, None]
    assert [r for r, _ in sink.received] == [
        "warm@example.net",
        "a@example.net",
        "b@example.net",
        "lost@example.net",
        "c@example.net",
    ]


def test_a_relay_that_keeps_dropping_ends_send_many_early_as_unreachable():
    sink = DroppingSink({"lost@example.net": 5})
    batch = _batch("a@example.net", "lost@example.net", "never@example.net")
    with SinkServer(sink) as relay, Mailer(_relay_settings(relay.port)) as mailer:
        mailer.send("bounce@example.org", "warm@example.net", AWKWARD)
        outcomes = mailer.send_many(batch)
        sink.wait_for(2, timeout=10)
    assert outcomes[0] is None
    assert isinstance(outcomes[1], TransientFailure) and not isinstance(outcomes[1], Deferred)
    assert len(outcomes) == 2  # the message after an unreachable relay was not attempted
    assert [r for r, _ in sink.received] == ["warm@example.net", "a@example.net"]


def _relay_settings(port: int) -> Any:
    return get_settings().model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": port})
