"""The welcome email: sent once, right after confirming, through the notice queue, holding the
themes, the frequency and the same links and headers as an update."""

from __future__ import annotations

from sqlmodel import select

from mailing.models import Subscriber
from tests.conftest import drain_worker
from tests.support.helpers import only_link, subscribe
from tests.support.sending import wait_until

MINDS, PLACES = "healthy-minds", "healthy-places"


def _confirm(client, smtp, email, themes, **extra):
    smtp.outbox.clear()
    subscribe(client, email, themes, **extra)
    [mail] = smtp.outbox.wait_for(1)
    return only_link(mail, "confirm")


def _welcomes(smtp):
    return [m for m in smtp.outbox.messages() if m.subject.startswith("Welcome")]


def test_confirming_sends_a_welcome_with_themes_frequency_and_links(client, smtp):
    link = _confirm(client, smtp, "new@example.net", [MINDS, PLACES])
    assert client.post(link).status_code == 200
    wait_until(lambda: len(_welcomes(smtp)) == 1, 30, "the welcome email")
    [mail] = _welcomes(smtp)
    text = mail.part("plain")
    assert mail.to == ["new@example.net"]
    assert "Healthy Minds" in text and "Healthy Places" in text
    assert "each update, as soon as it is sent" in text
    unsubscribe = only_link(mail, "unsubscribe")
    preferences = only_link(mail, "preferences")
    assert mail.message["List-Unsubscribe"] == f"<http://testserver{unsubscribe}>"
    assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail.message["List-Id"]
    assert mail.message.get_content_type() == "multipart/alternative"
    assert f'href="http://testserver{preferences}"' in mail.part("html")
    # The links work: the preferences page opens, one click unsubscribes.
    assert client.get(preferences).status_code == 200
    assert client.post(unsubscribe, content=b"List-Unsubscribe=One-Click").status_code == 200


def test_confirming_twice_sends_one_welcome(client, smtp):
    link = _confirm(client, smtp, "twice@example.net", [MINDS])
    client.post(link)
    client.post(link)
    wait_until(lambda: len(_welcomes(smtp)) >= 1, 30, "the welcome email")
    drain_worker()
    assert len(_welcomes(smtp)) == 1


def test_no_welcome_for_someone_who_left_before_it_went(client, smtp, session):
    """The welcome is built when the worker runs: unsubscribed by then, nothing goes."""
    from mailing.mail import notices, outbox
    from mailing.states import NoticeKind

    link = _confirm(client, smtp, "gone@example.net", [MINDS])
    client.post(link)
    wait_until(lambda: len(_welcomes(smtp)) == 1, 30, "the welcome email")
    client.post(only_link(_welcomes(smtp)[0], "unsubscribe"))
    sub = session.exec(select(Subscriber).where(Subscriber.email == "gone@example.net")).one()
    late = outbox.queue(session, sub.id, NoticeKind.WELCOME)  # as if its task ran only now
    session.commit()
    assert notices.send(late) is False


def test_welcome_says_weekly_for_a_weekly_subscriber(client, smtp):
    link = _confirm(client, smtp, "weekly@example.net", [MINDS], frequency="weekly")
    client.post(link)
    wait_until(lambda: len(_welcomes(smtp)) == 1, 30, "the welcome email")
    assert "one weekly summary, on Saturday mornings" in _welcomes(smtp)[0].part("plain")
