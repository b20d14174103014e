"""`mailing dev`: the newcomer's one command. Sign up and confirm through /dev/outbox, for real."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from html import unescape

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dev(folder, port: int, **settings: str) -> subprocess.Popen:
    """`mailing dev` in `folder` on every default setting but `settings`, output in one pipe."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILING_")}
    return subprocess.Popen(
        [sys.executable, "-m", "mailing.cli", "dev", "--port", str(port)],
        cwd=folder,
        env={**env, **settings},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture
def dev_server(tmp_path):
    port = _free_port()
    proc = start_dev(tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(
                "mailing dev did not come up:\n" + (proc.stdout.read() if proc.stdout else "")
            )
        time.sleep(0.1)  # polling for readiness, not waiting for an outcome
    yield base, tmp_path
    proc.terminate()
    try:
        output, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    # The log of the whole session never holds the address or a token.
    assert "newcomer" not in output
    assert not re.search(r"/confirm/[A-Za-z0-9_.-]{20,}", output)


def _outbox_links(base: str, kind: str, wait: float = 20) -> list[str]:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        page = httpx.get(f"{base}/dev/outbox").text
        found = [
            unescape(u) for u in re.findall(r'href="(http://[^"]+/' + kind + r'/[^"]+)"', page)
        ]
        if found:
            return found
        time.sleep(0.1)  # the worker sends in the background; poll the page a person would reload
    return []


def _staff_token(cwd) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILING_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailing.cli",
            "staff",
            "create",
            "s@gla.example",
            "--role",
            "sender",
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def test_dev_signs_up_and_confirms_through_the_outbox(dev_server):
    base, cwd = dev_server
    assert "Sign up for updates" in httpx.get(base + "/").text
    answer = httpx.post(
        base + "/subscriptions",
        data={"email": "newcomer@example.org", "themes": ["healthy-places"], "consent": "yes"},
    )
    assert answer.status_code == 303
    [link] = _outbox_links(base, "confirm")
    assert link.startswith(base + "/confirm/")
    assert httpx.get(link).status_code == 200
    confirmed = httpx.post(link)
    assert confirmed.status_code == 200 and "You are subscribed" in confirmed.text
    assert (cwd / "var" / "mailing.db").exists()  # SQLite under ./var/


def test_dev_runs_beat_jobs_so_a_scheduled_update_goes_out(dev_server):
    """`mailing dev` runs no beat process: its own schedule must start a scheduled update."""
    from datetime import UTC, datetime, timedelta

    base, cwd = dev_server
    httpx.post(
        base + "/subscriptions",
        data={"email": "reader@example.org", "themes": ["healthy-places"], "consent": "yes"},
    )
    [link] = _outbox_links(base, "confirm")
    assert httpx.post(link).status_code == 200
    auth = {"Authorization": f"Bearer {_staff_token(cwd)}"}
    update = httpx.post(
        base + "/admin/updates",
        json={"subject": "Parks this spring", "body": "New parks.", "themes": ["healthy-places"]},
        headers=auth,
    ).json()
    when = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    scheduled = httpx.post(
        f"{base}/admin/updates/{update['id']}/schedule", json={"send_at": when}, headers=auth
    )
    assert scheduled.status_code == 200 and scheduled.json()["status"] == "scheduled"
    # The reconciler (every 30 s by default) starts it; the outbox shows the update's email.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if "Parks this spring" in httpx.get(base + "/dev/outbox").text:
            break
        time.sleep(0.2)  # polling the page a person would reload
    else:
        pytest.fail("the scheduled update never went out under mailing dev")
    assert httpx.get(f"{base}/admin/updates/{update['id']}", headers=auth).json()["status"] in {
        "sending",
        "sent",
    }
