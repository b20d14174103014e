"""Benchmark of `mailing import`: time and peak memory for a large list, on PostgreSQL.

    .venv/bin/python bench/import.py --rows 500000 --server postgresql+psycopg://postgres@/postgres
        [--broker redis://127.0.0.1:6380/14] [--asked 0.1]

Writes a CSV of `--rows` distinct addresses (a share `--asked` without consented_at, so they are
sent a re-permission email; the rest with a consent time and one of a few wordings, as an old
provider's export has), creates a throwaway database and migrates it, then runs the real
command three times as a child process: a dry run, the import, and the same file again (which
must change nothing). For each it prints the wall time, the child's peak RSS and the counts.
No worker runs: the re-permission emails wait in the outbox (and, with --broker, on the
`updates` queue, which the script empties afterwards). Not a test: it asserts only that the
counts are what the file holds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from throwaway import drop_database, make_database  # noqa: E402

MAILING = [sys.executable, "-m", "mailing.cli"]
WORDINGS = (
    "Yes, send me the health inequalities newsletter",
    "Tick to hear about the Mayor's health work",
    "I agree to receive emails from the GLA health team",
)
THEMES = ("", "healthy-minds", "healthy-places;healthy-living", "healthy-children")


def write_file(path: Path, rows: int, asked: float) -> int:
    """The CSV; returns how many rows have no consent time."""
    every = max(1, round(1 / asked)) if asked > 0 else 0
    without = 0
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write("email,themes,frequency,consented_at,consent_wording\n")
        for i in range(rows):
            theme = THEMES[i % len(THEMES)]
            frequency = "weekly" if i % 5 == 0 else ""
            if every and i % every == 0:
                without += 1
                f.write(f"Person.{i}@Example.org,{theme},{frequency},,\n")
            else:
                day = 1 + i % 28
                wording = WORDINGS[i % len(WORDINGS)]
                f.write(f"person.{i}@example.org,{theme},{frequency},2024-05-{day:02d}T09:30:00Z,")
                f.write(f'"{wording}"\n')
    return without


def run(env: dict[str, str], *args: str) -> tuple[float, float, dict[str, int]]:
    """Wall seconds, peak RSS in MiB, and the counts of one `mailing import`."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*MAILING, "import", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"mailing import failed ({proc.returncode})")
    counts = json.loads(out.decode().splitlines()[-1])
    return elapsed, usage.ru_maxrss / 1024, counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--server", required=True, help="a PostgreSQL server URL")
    parser.add_argument("--broker", default="", help="a redis:// URL (emptied afterwards)")
    parser.add_argument("--asked", type=float, default=0.1, help="share without consent time")
    options = parser.parse_args()

    url, name = make_database(options.server)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILING_")}
    env.update(
        MAILING_ENV="production",
        MAILING_DATABASE_URL=url,
        MAILING_SECRET_KEYS="bench-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
    )
    if options.broker:
        env["MAILING_BROKER_URL"] = options.broker
    try:
        subprocess.run([*MAILING, "migrate"], env=env, check=True, capture_output=True)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "list.csv"
            without = write_file(path, options.rows, options.asked)
            size = path.stat().st_size / 1024 / 1024
            print(f"{options.rows:,} rows ({size:.1f} MiB), {without:,} without a consent time")
            source = ("--source", "bench export")
            for label, extra in (("dry run", ("--dry-run",)), ("import", ()), ("re-run", ())):
                seconds, rss, counts = run(env, str(path), *source, *extra)
                rate = options.rows / seconds
                print(
                    f"{label:8} {seconds:7.1f} s  {rate:8,.0f} rows/s  peak RSS {rss:6.1f} MiB  "
                    f"{json.dumps(counts)}"
                )
                if label == "re-run":
                    assert counts["unchanged"] == options.rows, counts
                else:
                    assert counts["asked"] == without, counts
                    assert counts["imported"] == options.rows - without, counts
    finally:
        drop_database(options.server, name)
        if options.broker:
            import redis

            redis.Redis.from_url(options.broker).flushdb()


if __name__ == "__main__":
    main()
