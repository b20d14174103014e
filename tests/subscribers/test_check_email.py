"""'Check your email' shows the address typed, so a typo can be spotted, without the address
ever being in a URL or a log: a short-lived signed HttpOnly cookie carries it to the page."""

from __future__ import annotations

import logging

from mailing.subscribers.tokens import Purpose, sign

FORM = {"consent": "yes", "themes": ["healthy-minds"]}


def _sign_up(client, address):
    return client.post("/subscriptions", data={"email": address, **FORM}, follow_redirects=False)


def test_check_your_email_shows_the_address_typed(client, smtp, caplog):
    caplog.set_level(logging.DEBUG)
    answer = _sign_up(client, "resident@exampel.org")  # the typo to spot
    assert answer.status_code == 303
    assert answer.headers["location"] == "/check-your-email"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "Path=/check-your-email" in cookie and "Max-Age=600" in cookie

    page = client.get("/check-your-email")
    assert page.status_code == 200
    assert "resident@exampel.org" in page.text
    assert page.headers["cache-control"] == "no-store"  # personal data: never cached
    smtp.outbox.wait_for(1)
    ours = [r for r in caplog.records if not r.name.startswith(("httpx", "mail.log"))]
    assert not [r for r in ours if "exampel" in r.getMessage()]


def test_the_address_is_escaped(client, smtp):
    # A valid address may hold characters that mean something in HTML.
    _sign_up(client, "a&b@example.org")
    page = client.get("/check-your-email")
    assert "a&amp;b@example.org" in page.text


def test_without_or_with_a_forged_cookie_the_page_names_no_address(client):
    plain = client.get("/check-your-email")
    assert plain.status_code == 200 and "We have sent you an email" in plain.text
    client.cookies.set("check_email", "forged.value.sig", path="/check-your-email")
    forged = client.get("/check-your-email")
    assert forged.status_code == 200 and "We have sent you an email" in forged.text
    # A token signed for another purpose does not pass either.
    other = sign(Purpose.CONFIRM, {"s": 0, "a": "x@example.org"})
    client.cookies.set("check_email", other, path="/check-your-email")
    assert "x@example.org" not in client.get("/check-your-email").text


def test_check_your_email_shows_the_address_in_production(prod, smtp):
    answer = _sign_up(prod, "someone@example.org")
    assert answer.status_code == 303
    assert "Secure" in answer.headers["set-cookie"]
    page = prod.get("/check-your-email")
    assert page.status_code == 200 and "someone@example.org" in page.text
