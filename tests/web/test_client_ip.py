"""Who the client is, for the per-IP limit: the socket's peer, or behind a proxy named in
MAILING_TRUSTED_PROXIES the right-most X-Forwarded-For hop that is not a trusted proxy. Driven
through a real `mailing serve` subprocess, as the spoofing would be."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from starlette.requests import Request

from mailing.web.deps import client_ip
from tests.conftest import BROKER, REDIS, TEST_SECRET

LIMITED = "/erasure-requests"  # a public POST; an empty body is a 422 after the limit is counted


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(database: str, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILING_")}
    env.update(
        MAILING_ENV="production",
        MAILING_DATABASE_URL=database,
        MAILING_SECRET_KEYS=TEST_SECRET,
        # Configured, never used: these requests enqueue nothing.
        MAILING_BROKER_URL=BROKER or "memory://",
    )
    if REDIS:
        env["MAILING_REDIS_URL"] = REDIS
    env.update({f"MAILING_{k.upper()}": v for k, v in settings.items()})
    return env


@pytest.fixture
def serve(database, tmp_path) -> Iterator:
    """Start `mailing serve` with some settings; yields a function that returns its base URL."""
    procs: list[subprocess.Popen] = []

    def start(**settings: str) -> str:
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailing.cli", "serve", "--port", str(port)],
            env=_env(database, **settings),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    return base
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("mailing serve did not start:\n" + (proc.stderr.read() or ""))
            time.sleep(0.1)  # polling for readiness with a deadline

    yield start
    for proc in procs:
        proc.terminate()
        try:
            _, errors = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, errors = proc.communicate()
        assert "Traceback" not in (errors or "")


def _post(base: str, forwarded_for: bytes | str | None = None) -> int:
    headers = {"x-forwarded-for": forwarded_for} if forwarded_for is not None else {}
    return httpx.post(base + LIMITED, json={}, headers=headers, timeout=10).status_code


def test_spoofed_forwarded_for_from_loopback_does_not_change_the_bucket(serve):
    base = serve()  # every setting at its default, production: 30 a minute per client
    answers = [_post(base, f"203.0.113.{i}") for i in range(31)]
    assert answers == [422] * 30 + [429]
    assert _post(base) == 429
    assert _post(base, "198.51.100.99, 203.0.113.250") == 429


def test_behind_a_trusted_proxy_each_resident_has_their_own_bucket(serve):
    base = serve(trusted_proxies="127.0.0.0/8, 10.0.0.0/8", rate_limit_per_ip="2")
    assert [_post(base, "203.0.113.10") for _ in range(3)] == [422, 422, 429]
    assert _post(base, "203.0.113.20") == 422  # another resident
    # Resident A writing a hop of their own: the proxy appended their real address after it.
    assert _post(base, "198.51.100.1, 203.0.113.10") == 429
    assert _post(base, "203.0.113.10, 10.0.0.7") == 429  # through two trusted proxies
    assert _post(base, "203.0.113.30, 10.0.0.7") == 422  # a third resident, through both
    assert _post(base, "[2001:db8::1]:4711") == 422 and _post(base, "2001:db8::1") == 422
    assert _post(base, "2001:db8::1") == 429


MALFORMED: list[bytes | str] = [
    "garbage",
    "",
    ",, ,",
    "1.2.3.4.5",
    "999.1.1.1",
    "::::",
    "[2001:db8::1",
    "unknown",
    "203.0.113.9:port",
    "203.0.113.9 203.0.113.8",
    "x" * 2000,
    b"\xff\xfe203.0.113.7",
    "203.0.113.7%eth0",
]


def test_malformed_forwarded_for_values_fall_back_to_the_proxy_and_never_fail(serve):
    base = serve(trusted_proxies="127.0.0.1/32", rate_limit_per_ip=str(len(MALFORMED)))
    # Each value differs: were any of them a bucket of its own, the limit would never bite.
    assert [_post(base, value) for value in MALFORMED] == [422] * len(MALFORMED)
    assert _post(base, "yet-another-made-up-value") == 429
    assert _post(base, "203.0.113.77") == 422  # a well-formed resident is still their own


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"MAILING_TRUSTED_PROXIES": "10.0.0.0/8, not-a-network"}, "MAILING_TRUSTED_PROXIES"),
        ({"MAILING_TRUST_FORWARDED_FOR": "true"}, "MAILING_TRUSTED_PROXIES"),
    ],
)
def test_serve_refuses_proxy_settings_it_cannot_honour(database, tmp_path, setting, message):
    env = _env(database)
    env.update(setting)
    result = subprocess.run(
        [sys.executable, "-m", "mailing.cli", "serve", "--port", str(_free_port())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def _request(peer: str, *forwarded: bytes) -> Request:
    headers = [(b"x-forwarded-for", value) for value in forwarded]
    return Request({"type": "http", "headers": headers, "client": (peer, 1234)})


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("127.0.0.1", [b"203.0.113.5"], "203.0.113.5"),
        ("127.0.0.1", [b"198.51.100.1, 203.0.113.5"], "203.0.113.5"),
        ("127.0.0.1", [b"198.51.100.1", b"203.0.113.5"], "203.0.113.5"),  # two headers, in order
        ("127.0.0.1", [b"203.0.113.5, 10.1.2.3"], "203.0.113.5"),
        ("127.0.0.1", [b"10.1.2.3, 10.1.2.4"], "10.1.2.3"),  # all proxies: the farthest
        ("127.0.0.1", [], "127.0.0.1"),
        ("127.0.0.1", [b"bogus, 10.1.2.3"], "10.1.2.3"),
        ("127.0.0.1", [b"203.0.113.5, bogus"], "127.0.0.1"),
        ("198.51.100.8", [b"203.0.113.5"], "198.51.100.8"),  # not a trusted proxy: not believed
    ],
)
def test_client_ip_is_the_right_most_untrusted_hop(settings_env, peer, forwarded, expected):
    settings_env(trusted_proxies="127.0.0.1/32,10.0.0.0/8")
    assert client_ip(_request(peer, *forwarded)) == expected


def test_with_no_trusted_proxies_forwarded_for_is_ignored(settings_env):
    assert client_ip(_request("127.0.0.1", b"203.0.113.5")) == "127.0.0.1"
