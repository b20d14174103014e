"""Personal data never appears in logs: not from our code; the redacting filter catches slips."""

from __future__ import annotations

import io
import json
import logging

from mailing.logs import JsonFormatter, RedactingFilter, redact
from tests.support.helpers import only_link, subscribe

ADDRESS = "Privacy.Person-4471@Example.org"


def test_signup_flow_logs_no_address_or_token(client, smtp, caplog):
    caplog.set_level(logging.DEBUG)
    subscribe(client, ADDRESS, ["healthy-minds"])
    link = only_link(smtp.outbox.wait_for(1)[0], "confirm")
    client.get(link)
    client.post(link)
    client.post("/subscriptions", json={"email": ADDRESS + "\n", "consent": True})
    # httpx is the test's own HTTP client and mail.log the test's SMTP server: not the service
    # (`mailing dev` quiets its capture's mail.log to warnings, which hold no addresses).
    records = [r for r in caplog.records if not r.name.startswith(("httpx", "mail.log"))]
    text = "\n".join(r.getMessage() + repr(r.args) for r in records).lower()
    assert records, "the flow should log something"
    assert "privacy.person-4471" not in text
    assert link.rsplit("/", 1)[1].lower() not in text


def test_redacting_filter_catches_addresses_and_tokens_in_any_log_line():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("test.redaction")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("failed for %s at /unsubscribe/abc.DEF-123_x", "someone@example.org")
        try:
            raise ValueError("bad address someone@example.org")
        except ValueError:
            log.exception("boom")
    finally:
        log.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    assert lines and all("request_id" in line for line in lines)
    output = stream.getvalue()
    assert "someone@example.org" not in output
    assert "abc.DEF-123_x" not in output
    assert "<address>" in output and "/unsubscribe/<token>" in output


def test_redact_handles_url_encoded_addresses():
    assert "example.org" not in redact("GET /?email=someone%40example.org")
