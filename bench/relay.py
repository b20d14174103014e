"""An SMTP sink that behaves like a relay D ms away: a real asyncio SMTP server (not a mock of
our code) that offers PIPELINING and answers each line D ms after it arrives.

    .venv/bin/python bench/relay.py --port 2525 --latency 20

Every command line (and the end of each message's content) is answered D ms after the bytes
that completed it arrived, in order, answers that fall due together in one write. So a client
that pipelines (one message's content, the next one's MAIL, RCPT and DATA in one write) pays
one round trip a message, and one that waits for every answer (smtplib's `sendmail`) pays four
or five. With D = 0 it answers at once, as the loopback sink always did. It counts the messages
it accepted (answered 250 after their content) and the time of the last one, in shared values,
so a benchmark can read them from another process.
Not a test fixture: the benchmarks in bench/ run it in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing as mp
import time
from typing import Any


class RelayProtocol(asyncio.Protocol):
    """One SMTP connection. `count` and `last` are multiprocessing Values (messages accepted,
    time.time() of the last acceptance); `arrivals`, if given, gets (recipient, time) for
    recipients starting with "<probe"."""

    def __init__(self, latency: float, count: Any, last: Any, arrivals: Any = None) -> None:
        self.latency = latency
        self.count, self.last = count, last
        self.arrivals = arrivals
        self.rcpt = b""
        self.buffer = bytearray()
        self.scan = 0  # where to resume looking for the end of a message
        self.in_data = False
        # answers not written yet: (due, bytes, recipient of an accepted message or None)
        self.due: collections.deque[tuple[float, bytes, bytes | None]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.closing = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.answer(b"220 sink ESMTP\r\n", None, self.loop.time())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.due.clear()

    # --- answers, each `latency` after the line it answers arrived -----------------------

    def answer(self, line: bytes, accepted: bytes | None, arrived: float) -> None:
        if not self.latency:
            self.transport.write(line)
            if accepted is not None:
                self.accepted(accepted)
            return
        self.due.append((arrived + self.latency, line, accepted))
        if self.timer is None:
            self.timer = self.loop.call_at(self.due[0][0], self.flush)

    def flush(self) -> None:
        self.timer = None
        now = self.loop.time()
        out = bytearray()
        accepted: list[bytes] = []
        while self.due and self.due[0][0] <= now:
            _, line, rcpt = self.due.popleft()
            out += line
            if rcpt is not None:
                accepted.append(rcpt)
        if self.transport.is_closing():
            return
        self.transport.write(bytes(out))
        for rcpt in accepted:
            self.accepted(rcpt)
        if self.due:
            self.timer = self.loop.call_at(self.due[0][0], self.flush)
        elif self.closing:
            self.transport.close()

    def accepted(self, rcpt: bytes) -> None:
        with self.count.get_lock():
            self.count.value += 1
        self.last.value = time.time()
        if self.arrivals is not None and rcpt.startswith(b"<probe"):
            self.arrivals.put((rcpt.decode(), time.time()))

    # --- the commands ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        arrived = self.loop.time()
        self.buffer += data
        while not self.closing:
            if self.in_data:
                end = self.buffer.find(b"\r\n.\r\n", self.scan)
                if end < 0:
                    self.scan = max(0, len(self.buffer) - 4)
                    return
                del self.buffer[: end + 5]
                self.scan = 0
                self.in_data = False
                self.answer(b"250 OK queued\r\n", self.rcpt, arrived)
                continue
            end = self.buffer.find(b"\r\n")
            if end < 0:
                return
            verb = bytes(self.buffer[:4]).upper()
            if verb == b"RCPT":
                self.rcpt = bytes(self.buffer[:end]).partition(b":")[2].strip().lower()
            del self.buffer[: end + 2]
            if verb in (b"EHLO", b"HELO"):
                self.answer(b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n", None, arrived)
            elif verb == b"DATA":
                self.in_data = True
                self.answer(b"354 go ahead\r\n", None, arrived)
                # so that the end marker is found even for an empty body
                self.buffer[0:0] = b"\r\n"
            elif verb == b"QUIT":
                self.answer(b"221 bye\r\n", None, arrived)
                self.closing = True
                if not self.due:
                    self.transport.close()
                return
            else:
                self.answer(b"250 OK\r\n", None, arrived)


def run_relay(
    port: int,
    count: Any,
    last: Any,
    ready: Any,
    arrivals: Any = None,
    latency_ms: float = 0.0,
) -> None:
    """Serve on 127.0.0.1:port until terminated (the target of a multiprocessing.Process)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: RelayProtocol(latency_ms / 1000, count, last, arrivals),
            "127.0.0.1",
            port,
            backlog=512,
        )
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def start_relay(port: int, latency_ms: float = 0.0, arrivals: Any = None) -> tuple[Any, Any, Any]:
    """Start the relay in its own process; returns (process, count, last) once it listens."""
    count, last, ready = mp.Value("q", 0), mp.Value("d", 0.0), mp.Event()
    process = mp.Process(
        target=run_relay, args=(port, count, last, ready, arrivals, latency_ms), daemon=True
    )
    process.start()
    if not ready.wait(10):
        raise RuntimeError("the relay did not start")
    return process, count, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--latency", type=float, default=0.0, help="ms before each answer")
    args = parser.parse_args()
    process, count, _ = start_relay(args.port, args.latency)
    print(f"relay on 127.0.0.1:{args.port}, answering {args.latency} ms late", flush=True)
    try:
        while True:
            time.sleep(5)
            print(f"accepted: {count.value}", flush=True)
    except KeyboardInterrupt:
        process.terminate()


if __name__ == "__main__":
    main()
