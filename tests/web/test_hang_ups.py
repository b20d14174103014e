"""A client that hangs up in the middle of its request body, against a real `mailing serve`
(production, every setting at its default): nothing is stored, and the access log says 499 (the
client closed the request), not 500: no answer failed, and a 500 would page someone."""

from __future__ import annotations

import json
import socket

import pytest

from tests.sending.test_redis_faults import Services, services  # noqa: F401  (fixture)
from tests.subscribers.test_signup_defaults import _serve
from tests.support.helpers import table_snapshot
from tests.support.sending import wait_until
from tests.web.test_client_ip import _env

PARTS = [
    ("application/json", b'{"email": "hang-up@example.org", "consent": tr'),
    ("application/x-www-form-urlencoded", b"email=hang-up%40example.org&cons"),
]


def _access_lines(running: Services) -> list[dict[str, object]]:
    lines = running.logs[-1].read_text(errors="replace").splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    return [e for e in events if e.get("logger") == "mailing.access" and e["method"] == "POST"]


@pytest.mark.parametrize(("content_type", "part"), PARTS, ids=["json", "form"])
def test_a_body_cut_short_by_the_client_stores_nothing_and_is_logged_499(
    database: str,
    services: Services,  # noqa: F811
    content_type: str,
    part: bytes,
) -> None:
    _, base = _serve(services, _env(database))
    before = table_snapshot()
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as conn:
        head = (
            "POST /subscriptions HTTP/1.1\r\nHost: updates.example.org\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(part) + 40}\r\n\r\n"
        )
        conn.sendall(head.encode() + part)  # 40 bytes short, then the client hangs up
    wait_until(lambda: len(_access_lines(services)) == 1, 30, "the request to be logged")
    [event] = _access_lines(services)
    assert event["status"] == 499
    assert table_snapshot() == before
    assert "Traceback" not in services.logs[-1].read_text()
