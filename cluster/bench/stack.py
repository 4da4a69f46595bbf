"""The stack a benchmark runs against: the running one, or one brought up for the run and stopped after."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from cluster.settings import RaychatSettings


@contextmanager
def running_stack(settings: RaychatSettings) -> Iterator[str]:
    """Yields the service URL; stops the stack afterwards only if this run started it."""
    from cluster import local, processes

    was_running = processes.is_running(settings.run_dir, local.RAY_HEAD)
    url = local.up(settings)
    try:
        yield url
    finally:
        if not was_running:
            local.down(settings)
