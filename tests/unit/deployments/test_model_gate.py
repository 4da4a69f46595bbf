"""The Embedding deployment's model gate: one call at a time, waiting queries before waiting bulk slices."""

from __future__ import annotations

import asyncio
import threading

import pytest

from deployments.model_gate import ModelGate, Priority


def test_a_query_goes_before_bulk_slices_that_waited_longer() -> None:
    async def main() -> list[str]:
        gate, order = ModelGate(), []
        running = threading.Event()
        release = threading.Event()

        def first() -> None:
            running.set()
            release.wait(5)

        def work(name: str) -> str:
            order.append(name)
            return name

        busy = asyncio.create_task(gate.run(Priority.BULK, first))
        await asyncio.to_thread(running.wait, 5)
        bulk = [asyncio.create_task(gate.run(Priority.BULK, work, f"slice {i}")) for i in range(3)]
        await asyncio.sleep(0.01)
        query = asyncio.create_task(gate.run(Priority.QUERY, work, "query"))
        await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(busy, query, *bulk)
        assert gate.calls == {Priority.QUERY: 1, Priority.BULK: 4}
        return order

    assert asyncio.run(main()) == ["query", "slice 0", "slice 1", "slice 2"]


def test_never_two_calls_at_once_and_a_cancelled_waiter_does_not_hold_the_model() -> None:
    async def main() -> int:
        gate, inside, most = ModelGate(), 0, 0
        lock = threading.Lock()

        def work() -> None:
            nonlocal inside, most
            with lock:
                inside += 1
                most = max(most, inside)
            threading.Event().wait(0.005)
            with lock:
                inside -= 1

        tasks = [asyncio.create_task(gate.run(Priority(i % 2), work)) for i in range(12)]
        await asyncio.sleep(0)
        tasks[5].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert sum(isinstance(r, asyncio.CancelledError) for r in results) == 1
        await asyncio.wait_for(gate.run(Priority.QUERY, work), 2)  # the model is free again
        return most

    assert asyncio.run(main()) == 1


def test_an_error_in_a_call_frees_the_model() -> None:
    async def main() -> None:
        gate = ModelGate()

        def boom() -> None:
            raise ValueError("bad batch")

        with pytest.raises(ValueError, match="bad batch"):
            await gate.run(Priority.BULK, boom)
        assert await asyncio.wait_for(gate.run(Priority.QUERY, len, "ok"), 2) == 2

    asyncio.run(main())
