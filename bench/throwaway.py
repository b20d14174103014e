"""What the benchmarks set up and tear down: a free loopback port, a throwaway PostgreSQL
database, and process groups to stop; and the CPU time processes used."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import uuid
from pathlib import Path

import sqlalchemy as sa


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_database(server_url: str) -> tuple[str, str]:
    """Create an empty database on this server; returns its URL and its name."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    url = sa.engine.make_url(server_url).set(database=name)
    return url.render_as_string(hide_password=False), name


def drop_database(server_url: str, name: str) -> None:
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def stop_groups(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process group (a worker and its pool children), SIGKILL if it lingers."""
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(p.pid, signal.SIGKILL)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processes_cpu(name: str) -> float:
    """CPU seconds so far of every process with this command name (PostgreSQL's backends,
    Redis, `mailing serve` and its workers) that this user can read; those that end in between
    are not counted."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "comm").read_text().strip() == name:
                total += cpu_seconds(int(proc.name))
        except OSError:
            continue
    return total


def tree_cpu(pid: int) -> float:
    """CPU seconds so far of a process and every process below it (uvicorn's workers)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit():
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(proc.name))
        except OSError:
            continue
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            total += cpu_seconds(current)
        except OSError:
            continue
        todo.extend(children.get(current, []))
    return total
