"""Sign-ups written in batches: the requests that arrive while earlier ones are in the database
are written together, in one transaction with one commit, and each is answered once that
commit is done (a 202 still means the request is stored).

Under load a sign-up's own work is small beside what every statement, commit and thread hand-off
costs; gathered, those costs are paid once for many (bench/subscribe.py; the figures are in the
README's performance section). With no load a request is written on its own at once: nothing
waits for a batch to fill. If a batch fails as a whole, each of its requests is tried again on
its own, so one bad request cannot fail the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from weakref import WeakKeyDictionary

import anyio

from mailing.subscribers.signup import SignupRequest

log = logging.getLogger(__name__)

Write = Callable[[Sequence[SignupRequest]], list[int | None]]
Waiting = tuple[SignupRequest, "asyncio.Future[int | None]"]


class SignupBatcher:
    """One per event loop: WRITERS batches may be in the database at once, while the loop
    gathers the next. One a process measured best (bench/subscribe.py, 32 connections, three
    runs each, back to back: 668, 759, 652 sign-ups a second with one; 666, 591, 577 with two)."""

    WRITERS = 1
    MAX_BATCH = 64

    def __init__(self, write: Write) -> None:
        self._write = write
        self._waiting: list[Waiting] = []
        self._writers = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def accept(self, request: SignupRequest) -> int | None:
        """Store the request; returns its notice id (None when the hourly cap held it back)."""
        answer: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, answer))
        if self._writers < self.WRITERS:
            self._spawn()
        return await answer

    def _spawn(self) -> None:
        self._writers += 1
        task = asyncio.get_running_loop().create_task(self._write_all())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_all(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self.MAX_BATCH]
                del self._waiting[: self.MAX_BATCH]
                try:
                    outcomes = await anyio.to_thread.run_sync(
                        self._write_batch, [request for request, _ in batch]
                    )
                except BaseException:  # the loop is shutting down: no request waits for ever
                    for _, answer in batch:
                        answer.cancel()
                    raise
                for (_, answer), outcome in zip(batch, outcomes, strict=True):
                    if answer.done():  # the client went away; the request is stored all the same
                        continue
                    if isinstance(outcome, BaseException):
                        answer.set_exception(outcome)
                    else:
                        answer.set_result(outcome)
        finally:
            self._writers -= 1

    def _write_batch(self, requests: list[SignupRequest]) -> list[int | BaseException | None]:
        try:
            return list(self._write(requests))
        except Exception as exc:
            if len(requests) == 1:
                return [exc]
            log.warning("a batch of %d sign-ups failed; writing each on its own", len(requests))
        outcomes: list[int | BaseException | None] = []
        for request in requests:
            try:
                outcomes.extend(self._write([request]))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes


_batchers: WeakKeyDictionary[asyncio.AbstractEventLoop, SignupBatcher] = WeakKeyDictionary()


def batcher_for_loop(write: Write) -> SignupBatcher:
    """The running loop's batcher (its futures and tasks belong to that loop)."""
    loop = asyncio.get_running_loop()
    batcher = _batchers.get(loop)
    if batcher is None:
        batcher = _batchers[loop] = SignupBatcher(write)
    return batcher
