"""Sign-up to welcome on the defaults, as a deployment runs it: `mailing serve` and `mailing
worker` subprocesses with MAILING_ENV=production and every other setting at its default, a
private Redis, the suite's database, an SMTP sink.

Residents sign up from several clients at once, through the batched writer (`SignupBatcher`),
the notice publisher (`NoticePublisher`) and `send_notices`. The server is sent SIGTERM in the
middle of the stream: what it accepted up to and while shutting down reaches the broker before
the process ends, not left to the outbox sweep (beat is not running here). Every accepted
resident gets exactly one confirmation, and nobody else any; confirming sends each exactly one
welcome. (uvicorn polls its draining connections every 0.1 s, longer than the publisher gathers
ids, so on a healthy broker this holds even without the app's shutdown wait; the wait is for a
slow broker, and test_notice_publisher.py tests it.)
"""

from __future__ import annotations

import re
import signal
import threading
import time
from typing import Any

import httpx
import pytest

from mailing.mail.devcapture import _free_port
from tests.sending.test_recovery_defaults import _defaults_env
from tests.sending.test_redis_faults import (  # noqa: F401  (fixtures)
    PrivateRedis,
    Services,
    private_redis,
    services,
)
from tests.support.helpers import count
from tests.support.sending import SinkServer

CLIENTS = 8  # each from its own loopback address: its own 30-a-minute bucket, on the defaults
EACH = 25  # sign-ups a client tries at most, under that limit
CONFIRMING = 10  # residents who go on to confirm
CONFIRM = re.compile(r"https://updates\.example\.org/confirm/([A-Za-z0-9._-]+)")


def _serve(running: Services, env: dict[str, str]) -> tuple[Any, str]:
    port = _free_port()
    proc = running.spawn("serve", ["serve", "--port", str(port)], env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # polling for readiness with a deadline
    pytest.fail("mailing serve did not start")


class Residents:
    """Clients signing up one after another until the server goes away; each keeps the
    addresses the server accepted (202 for JSON, 303 for the form)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.accepted: list[str] = []
        self.other: list[int] = []
        self.lock = threading.Condition()

    def run(self, client: int) -> None:
        transport = httpx.HTTPTransport(local_address=f"127.0.0.{10 + client}")
        with httpx.Client(transport=transport, timeout=30) as http:
            for n in range(EACH):
                email = f"resident{client}-{n}@example.org"
                themes = ["healthy-minds", "healthy-places"][: 1 + n % 2]
                try:
                    if n % 2:  # the form, as the strategy's page posts it
                        form = {"email": email, "consent": "on", "themes": themes}
                        answer = http.post(f"{self.base}/subscriptions", data=form)
                    else:
                        body = {"email": email, "themes": themes, "consent": True}
                        answer = http.post(f"{self.base}/subscriptions", json=body)
                except httpx.TransportError:
                    return  # the server has gone
                with self.lock:
                    if answer.status_code in (202, 303):
                        self.accepted.append(email)
                    else:
                        self.other.append(answer.status_code)
                    self.lock.notify_all()

    def wait_for(self, n: int) -> None:
        with self.lock:
            assert self.lock.wait_for(lambda: len(self.accepted) >= n, timeout=60)


@pytest.mark.slow
def test_sign_ups_accepted_up_to_sigterm_each_get_one_confirmation_then_a_welcome(
    database: str,
    private_redis: PrivateRedis,  # noqa: F811
    services: Services,  # noqa: F811
) -> None:
    with SinkServer() as relay:
        env = _defaults_env(private_redis, relay.port)
        server, base = _serve(services, env)
        residents = Residents(base)
        clients = [threading.Thread(target=residents.run, args=(c,)) for c in range(CLIENTS)]
        for client in clients:
            client.start()
        residents.wait_for(CLIENTS * EACH // 3)
        server.send_signal(signal.SIGTERM)  # mid-stream: sign-ups are in flight
        for client in clients:
            client.join(timeout=60)
        # uvicorn finishes what is in flight, shuts down, then re-raises the signal.
        assert server.wait(timeout=30) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in services.logs[-1].read_text()
        accepted = residents.accepted
        assert residents.other == []
        assert len(accepted) < CLIENTS * EACH  # the server went before the clients finished
        assert count("subscriber", "WHERE status = 'pending'") == len(accepted)

        services.worker(env, concurrency=1, queues=None)  # every queue, as deployed
        relay.sink.wait_for(len(accepted), timeout=60)
        confirmations = relay.sink.messages()
        assert sorted(r for r, _ in confirmations) == sorted(accepted)  # one each

        server, base = _serve(services, env)
        confirming = confirmations[:CONFIRMING]
        for rcpt, message in confirming:
            (token,) = CONFIRM.findall(message.get_body(("plain",)).get_content())
            answer = httpx.post(
                f"{base}/confirm/{token}", headers={"accept": "application/json"}, timeout=30
            )
            assert answer.status_code == 200, rcpt
            assert answer.json()["status"] == "active"
        relay.sink.wait_for(len(accepted) + CONFIRMING, timeout=60)
        welcomes = relay.sink.messages()[len(accepted) :]
    assert sorted(r for r, _ in welcomes) == sorted(r for r, _ in confirming)
    assert all(m["Subject"].startswith("Welcome") for _, m in welcomes)
    assert count("subscriber", "WHERE status = 'active'") == CONFIRMING
    assert count("notice") == 0  # every notice left the outbox once the relay took it
    for log in services.logs:
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, log.name
        assert "@example.org" not in text, log.name  # no address in any service's log
