"""Every resident page carries the security headers: a CSP with no inline script, no framing,
no Referer (tokens live in URLs), no sniffing; and HSTS in production only."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from mailing.models import Subscriber
from mailing.web.app import create_app
from tests.conftest import drain_worker
from tests.support.helpers import only_link, subscribe

# Each page reached as a resident reaches it, and the status it answers with.
EXPECTED = {
    "sign-up": 200,
    "sign-up with errors": 422,
    "check your email": 200,
    "invalid link": 400,
    "embeddable snippet": 200,
    "confirm": 200,
    "confirmed": 200,
    "preferences": 200,
    "preferences with errors": 422,
    "preferences saved": 200,
    "unsubscribe": 200,
    "unsubscribed": 200,
    "invalid unsubscribe link": 400,
    "erasure request": 200,
    "erasure request with errors": 422,
    "erasure requested": 202,
    "erase": 200,
    "erased": 200,
}


def directives(csp: str) -> dict[str, list[str]]:
    out = {}
    for part in csp.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


def resident_pages(client, smtp) -> dict[str, object]:
    """Each resident page by name, reached the way a resident reaches it."""
    answers: dict[str, object] = {
        "sign-up": client.get("/"),
        "sign-up with errors": client.post("/subscriptions", data={"email": ""}),
        "check your email": client.get("/check-your-email"),
        "invalid link": client.get("/confirm/not-a-token"),
        "embeddable snippet": client.get("/embed/signup-snippet"),
    }
    assert subscribe(client, "headers@example.org", ["healthy-minds"]).status_code == 202
    [mail] = smtp.outbox.wait_for(1)
    link = only_link(mail, "confirm")
    answers["confirm"] = client.get(link)
    answers["confirmed"] = client.post(link)
    drain_worker()  # the welcome email goes before the outbox is emptied

    # The subscriber's own links, from the email a second sign-up sends.
    smtp.outbox.clear()
    subscribe(client, "headers@example.org")
    [mail] = smtp.outbox.wait_for(1)
    preferences = only_link(mail, "preferences")
    unsubscribe = only_link(mail, "unsubscribe")
    answers["preferences"] = client.get(preferences)
    answers["preferences with errors"] = client.post(preferences, data={})
    answers["preferences saved"] = client.post(
        preferences, data={"action": "save", "themes": ["healthy-living"]}
    )
    answers["unsubscribe"] = client.get(unsubscribe)
    answers["unsubscribed"] = client.post(unsubscribe, data={"via": "page"})
    answers["invalid unsubscribe link"] = client.get("/unsubscribe/forged")

    smtp.outbox.clear()
    answers["erasure request"] = client.get("/erasure-requests")
    answers["erasure request with errors"] = client.post("/erasure-requests", data={"email": ""})
    answers["erasure requested"] = client.post(
        "/erasure-requests", data={"email": "headers@example.org"}
    )
    [mail] = smtp.outbox.wait_for(1)
    erase = only_link(mail, "erase")
    answers["erase"] = client.get(erase)
    answers["erased"] = client.post(erase)
    return answers


def check_headers(name: str, answer, *, production: bool) -> None:
    h = answer.headers
    assert answer.status_code == EXPECTED[name], (name, answer.status_code)
    assert h["content-type"].startswith("text/html"), name
    csp = directives(h["content-security-policy"])
    script = csp.get("script-src", csp.get("default-src"))
    assert script == ["'self'"], (name, script)  # no 'unsafe-inline', no 'unsafe-eval'
    assert "'unsafe-inline'" not in csp.get("style-src", []), name
    assert csp["frame-ancestors"] == ["'none'"], name
    assert csp["object-src"] == ["'none'"], name
    assert csp["base-uri"] == ["'none'"], name
    assert h["x-frame-options"] == "DENY", name
    assert h["referrer-policy"] == "no-referrer", name
    assert h["x-content-type-options"] == "nosniff", name
    if production:
        hsts = h["strict-transport-security"]
        assert "max-age=" in hsts and int(hsts.split("max-age=")[1].split(";")[0]) >= 31536000
    else:
        assert "strict-transport-security" not in h, name


@pytest.mark.parametrize("env", ["dev", "production"])
def test_every_resident_page_sends_the_security_headers(
    env, database, smtp, worker, settings_env, session
):
    settings_env(env=env)
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        pages = resident_pages(client, smtp)
        assert pages.keys() == EXPECTED.keys()
        for name, answer in pages.items():
            check_headers(name, answer, production=env == "production")
    assert session.exec(select(Subscriber)).all() == []  # the walk ended with an erasure


def test_pages_put_no_inline_script_or_style_in_the_html(client, smtp):
    for name, answer in resident_pages(client, smtp).items():
        html = answer.text.lower()
        assert "<script" not in html, name
        assert " style=" not in html and "<style" not in html, name
        assert "onclick=" not in html and "javascript:" not in html, name
