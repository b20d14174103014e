"""Return paths and the mailto: unsubscribe: every copy's envelope sender names its delivery (or
notice) by a signed ref, never by address; every update offers a mailto: unsubscribe."""

from __future__ import annotations

import re
from email import message_from_bytes, policy

import pytest

from mailing.deliverability import returnpath
from mailing.deliverability.returnpath import Ref, RefKind
from tests.conftest import TEST_SECRET
from tests.support.deliverability import DOMAIN
from tests.support.mta.mailbox import mailbox_server
from tests.support.sending import add_subscribers, draft, start, wait_sent


def test_a_ref_names_the_delivery_and_its_subscriber_and_no_address(settings_env):
    settings_env(bounce_domain=DOMAIN)
    ref = Ref(RefKind.DELIVERY, subscriber_id=42, delivery_id=4242)
    text = returnpath.encode(ref)
    assert re.fullmatch(r"d4242-42-[a-z2-7]{12}", text)
    assert returnpath.decode(text) == ref
    assert returnpath.decode(text.upper()) == ref  # a mail system that folds case breaks nothing
    sender = returnpath.for_delivery("updates@example.org", 4242, 42)
    assert sender == f"bounce+{text}@{DOMAIN}"
    assert len(sender.split("@")[0]) <= 64  # RFC 5321's limit for a local part


def test_a_notice_ref_names_only_the_subscriber(settings_env):
    settings_env(bounce_domain=DOMAIN)
    text = returnpath.encode(Ref(RefKind.NOTICE, 7))
    assert returnpath.decode(text) == Ref(RefKind.NOTICE, 7)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("a" if t[-1] != "a" else "b"),
        lambda t: t.replace("d12-", "d13-"),
        lambda t: t.replace("-34-", "-35-"),
        lambda t: "n34-" + t.rsplit("-", 1)[1],
        lambda t: t + "a",
        lambda t: t[:-1],
        lambda t: "",
        lambda t: "d12-34-" + "=" * 12,
    ],
)
def test_an_altered_or_forged_ref_names_nothing(settings_env, mangle):
    settings_env(bounce_domain=DOMAIN)
    text = returnpath.encode(Ref(RefKind.DELIVERY, 34, 12))
    assert returnpath.decode(mangle(text)) is None


def test_refs_made_before_a_key_rotation_still_verify(settings_env):
    settings_env(bounce_domain=DOMAIN)
    old = returnpath.encode(Ref(RefKind.DELIVERY, 1, 2))
    settings_env(secret_keys="a-new-signing-key-0123456789-abcdefghijklmnop," + TEST_SECRET)
    assert returnpath.decode(old) == Ref(RefKind.DELIVERY, 1, 2)
    assert returnpath.encode(Ref(RefKind.DELIVERY, 1, 2)) != old
    settings_env(secret_keys="a-new-signing-key-0123456789-abcdefghijklmnop")
    assert returnpath.decode(old) is None


def _send_update_through(server, n: int) -> list[tuple[str, str, bytes]]:
    emails = add_subscribers(n, ["healthy-places"], prefix="envelope")
    update_id = draft(themes=["healthy-places"])
    start(update_id)
    wait_sent(update_id)
    received = server.sink.wait_for(n, timeout=60)
    assert {r for _, r, _ in received} == set(emails)
    return received


def test_every_update_copy_has_its_own_return_path_and_a_mailto_unsubscribe(
    database, worker, settings_env
):
    with mailbox_server() as server:
        settings_env(bounce_domain=DOMAIN, smtp_host="127.0.0.1", smtp_port=server.port)
        received = _send_update_through(server, 3)
    senders = set()
    for mail_from, rcpt, raw in received:
        local, _, domain = mail_from.partition("@")
        assert domain == DOMAIN and local.startswith("bounce+")
        assert rcpt.split("@")[0] not in mail_from
        ref = returnpath.decode(local.removeprefix("bounce+"))
        assert ref is not None and ref.kind == RefKind.DELIVERY
        senders.add(mail_from)
        msg = message_from_bytes(raw, policy=policy.default)
        header = " ".join(str(msg["List-Unsubscribe"]).split())
        https, mailto = re.fullmatch(
            r"<http://testserver/unsubscribe/([^>]+)>, <mailto:unsubscribe\+([^>@]+)@bounce\.test>",
            header,
        ).groups()
        assert https == mailto
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert str(msg["From"]).endswith("<updates@example.org>")
    assert len(senders) == 3


def test_without_a_bounce_domain_copies_keep_the_from_address_and_no_mailto(
    database, worker, settings_env
):
    with mailbox_server() as server:
        settings_env(smtp_host="127.0.0.1", smtp_port=server.port)
        received = _send_update_through(server, 2)
    for mail_from, _, raw in received:
        assert mail_from == "updates@example.org"
        msg = message_from_bytes(raw, policy=policy.default)
        assert "mailto:" not in str(msg["List-Unsubscribe"])


def test_a_confirmation_email_has_a_return_path_naming_its_subscriber(client, settings_env):
    from tests.conftest import drain_worker
    from tests.support.helpers import subscribe

    with mailbox_server() as server:
        settings_env(bounce_domain=DOMAIN, smtp_host="127.0.0.1", smtp_port=server.port)
        assert subscribe(client, "notice@example.net", ["healthy-minds"]).status_code == 202
        drain_worker()
        [(mail_from, rcpt, _)] = server.sink.wait_for(1, timeout=30)
    assert rcpt == "notice@example.net"
    ref = returnpath.decode(mail_from.split("@")[0].removeprefix("bounce+"))
    assert ref is not None and ref.kind == RefKind.NOTICE
