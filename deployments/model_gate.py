"""One model call at a time, with queries before bulk work: the Embedding deployment's scheduling.

Ingestion sends thousands of texts; a search sends one. Both need the same model, which runs one call at
a time (its tokenizer is not safe to share between threads, and two calls would only split the cores).
Bulk work goes in slices (`knowledge.embedding_bulk_slice` texts), and whenever the model frees, a waiting
query batch goes first, so a search waits for at most one slice instead of an ingestion's whole queue.
Ray-free asyncio, so it is tested on its own.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from enum import IntEnum
from typing import Any, TypeVar

T = TypeVar("T")


class Priority(IntEnum):
    QUERY = 0
    BULK = 1


class ModelGate:
    def __init__(self) -> None:
        self._busy = False
        self._waiting: dict[Priority, deque[asyncio.Future[None]]] = {p: deque() for p in Priority}
        self.calls: dict[Priority, int] = dict.fromkeys(Priority, 0)

    async def run(self, priority: Priority, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a worker thread once the model is this caller's."""
        await self._acquire(priority)
        try:
            self.calls[priority] += 1
            return await asyncio.to_thread(fn, *args)
        finally:
            self._release()

    async def _acquire(self, priority: Priority) -> None:
        if not self._busy:
            self._busy = True
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[priority].append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # handed the model just as the caller went away: pass it on
            raise

    def _release(self) -> None:
        for priority in Priority:  # queries first
            queue = self._waiting[priority]
            while queue:
                turn = queue.popleft()
                if not turn.done():
                    turn.set_result(None)  # the model stays busy: it is the waiter's now
                    return
        self._busy = False
