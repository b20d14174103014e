"""CORS for JSON sign-ups from MAILING_ALLOWED_ORIGINS only, and the embeddable sign-up form."""

from __future__ import annotations

from html import unescape
from html.parser import HTMLParser

from mailing.subscribers import consent
from mailing.themes import THEMES
from mailing.web.cors import parse_origins
from tests.support.helpers import count, only_link

STRATEGY = "https://www.london.gov.uk"
PREFLIGHT = {
    "origin": STRATEGY,
    "access-control-request-method": "POST",
    "access-control-request-headers": "content-type",
}
SIGNUP = {"email": "cors@example.org", "themes": ["healthy-minds"], "consent": True}


def test_origins_setting_is_a_comma_separated_list():
    assert parse_origins("") == ()
    assert parse_origins(" https://a.example , https://b.example/,") == (
        "https://a.example",
        "https://b.example",
    )


def test_preflight_from_an_allowed_origin_is_answered(client, settings_env):
    settings_env(allowed_origins=f"https://other.example,{STRATEGY}")
    answer = client.options("/subscriptions", headers=PREFLIGHT)
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == STRATEGY
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert "content-type" in answer.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in answer.headers


def test_json_signup_from_an_allowed_origin_can_be_read_by_that_origin(client, settings_env, smtp):
    settings_env(allowed_origins=STRATEGY)
    answer = client.post("/subscriptions", json=SIGNUP, headers={"origin": STRATEGY})
    assert answer.status_code == 202
    assert answer.json() == {"status": "pending"}
    assert answer.headers["access-control-allow-origin"] == STRATEGY
    assert "access-control-allow-credentials" not in answer.headers
    smtp.outbox.wait_for(1)

    bad = client.post("/subscriptions", json={"email": "x"}, headers={"origin": STRATEGY})
    assert bad.status_code == 422  # errors are readable too, so the page can show them
    assert bad.headers["access-control-allow-origin"] == STRATEGY


def test_other_origins_get_no_cors_headers(client, settings_env):
    settings_env(allowed_origins=STRATEGY)
    preflight = client.options(
        "/subscriptions", headers={**PREFLIGHT, "origin": "https://evil.example"}
    )
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    answer = client.post(
        "/subscriptions", json={"email": "x"}, headers={"origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in answer.headers


def test_without_the_setting_there_is_no_cors(client):
    preflight = client.options("/subscriptions", headers=PREFLIGHT)
    assert preflight.status_code == 405
    assert "access-control-allow-origin" not in preflight.headers
    answer = client.post("/subscriptions", json={"email": "x"}, headers={"origin": STRATEGY})
    assert "access-control-allow-origin" not in answer.headers


def test_cors_covers_only_json_posts_to_subscriptions(client, settings_env):
    settings_env(allowed_origins=STRATEGY)
    for path in ("/", "/check-your-email", "/healthz", "/confirm/x", "/embed/signup-snippet"):
        answer = client.get(path, headers={"origin": STRATEGY})
        assert "access-control-allow-origin" not in answer.headers, path
    preflight = client.options("/confirm/x", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in preflight.headers
    form = client.post(
        "/subscriptions", data={"email": ""}, headers={"origin": STRATEGY}, follow_redirects=False
    )
    assert form.status_code == 422
    assert "access-control-allow-origin" not in form.headers


class Form(HTMLParser):
    """The snippet's form: its attributes, inputs, labels and text."""

    def __init__(self) -> None:
        super().__init__()
        self.form: dict[str, str] = {}
        self.inputs: list[dict[str, str]] = []
        self.labels: dict[str, str] = {}
        self.tags: list[str] = []
        self.text: list[str] = []
        self._label_for: str | None = None

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        if tag == "form":
            self.form = a
        elif tag == "input":
            self.inputs.append(a)
        elif tag == "label":
            self._label_for = a.get("for")
            self.labels[self._label_for] = ""

    def handle_endtag(self, tag):
        if tag == "label":
            self._label_for = None

    def handle_data(self, data):
        words = " ".join(data.split())
        if self._label_for is not None:
            self.labels[self._label_for] = (self.labels[self._label_for] + " " + words).strip()
        self.text.append(words)

    def named(self, name):
        return [i for i in self.inputs if i.get("name") == name]


def parse(html: str) -> Form:
    f = Form()
    f.feed(html)
    return f


def test_snippet_is_a_plain_form_posting_to_the_service(client):
    snippet = client.get("/embed/signup-snippet.txt")
    assert snippet.status_code == 200
    assert snippet.headers["content-type"].startswith("text/plain")
    f = parse(snippet.text)
    assert f.form["method"] == "post"
    assert f.form["action"] == "http://testserver/subscriptions"
    assert "script" not in f.tags and "style" not in f.tags
    assert "style=" not in snippet.text and "onclick" not in snippet.text.lower()

    [email] = f.named("email")
    assert email["type"] == "email" and f.labels[email["id"]] == "Email address"
    themes = f.named("themes")
    assert [t["value"] for t in themes] == list(THEMES)
    assert [f.labels[t["id"]] for t in themes] == list(THEMES.values())
    [agree] = f.named("consent")
    assert agree["type"] == "checkbox" and agree["value"] == "yes"
    assert f.labels[agree["id"]] == consent.CONSENT_TEXT  # the exact words we record
    assert consent.PRIVACY_NOTICE_TEXT in " ".join(f.text)
    [honeypot] = f.named("website")
    assert honeypot["tabindex"] == "-1"
    [source] = f.named("source")
    assert source["type"] == "hidden" and source["value"]


def test_snippet_links_to_the_base_url(client, settings_env):
    settings_env(base_url="https://updates.london.gov.uk/")
    f = parse(client.get("/embed/signup-snippet.txt").text)
    assert f.form["action"] == "https://updates.london.gov.uk/subscriptions"


def test_posting_the_snippet_as_filled_in_signs_a_resident_up(client, smtp):
    f = parse(client.get("/embed/signup-snippet.txt").text)
    data = {i["name"]: i.get("value", "") for i in f.inputs if i.get("type") == "hidden"}
    data.update(email="snippet@example.org", themes=["healthy-living"], consent="yes", website="")
    answer = client.post("/subscriptions", data=data, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/check-your-email"
    [mail] = smtp.outbox.wait_for(1)
    assert mail.to == ["snippet@example.org"]
    client.post(only_link(mail, "confirm"))
    assert count("subscriber", "WHERE status = 'active'") == 1
    assert count("consent_event", f"WHERE source = '{data['source']}'") >= 1


def test_snippet_page_shows_the_html_to_copy(client):
    page = client.get("/embed/signup-snippet")
    assert page.status_code == 200
    raw = client.get("/embed/signup-snippet.txt").text
    # Shown as text in a read-only box, escaped: never as a live second form on the page.
    assert '<textarea id="snippet"' in page.text and "readonly" in page.text
    assert "&lt;form" in page.text
    assert page.text.count("<form") == 0
    box = page.text.split('aria-describedby="snippet-hint">', 1)[1].split("</textarea>", 1)[0]
    assert unescape(box) == raw
    assert consent.CONSENT_TEXT in raw  # word for word, quotes as typed
