"""Chat and search latency while something else runs (an ingestion), against the same probe when idle.

A background thread sends, one after another with a pause, a knowledge-base search and a short chat
through the service URL, and records each answer's latency by kind; `p95()` summarises a window.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import httpx

from cluster import credentials
from cluster.bench.load import pct_of
from cluster.settings import RaychatSettings

PROBE_TEXT = "The feed pump of line 3 is serviced every quarter by the maintenance crew."


class LatencyProbe:
    def __init__(self, url: str, settings: RaychatSettings, pause_s: float = 0.5) -> None:
        self.url = url
        self.pause_s = pause_s
        self.model = settings.llm.model_id
        self.http = httpx.Client(headers=credentials.auth_headers(settings), timeout=300)
        self.kb = f"bench_probe_{uuid.uuid4().hex[:6]}"
        self.samples: list[tuple[str, float, int]] = []  # (kind, seconds, status)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LatencyProbe:
        base = f"{self.url}/v1/knowledge_bases"
        self.http.post(base, json={"name": self.kb}).raise_for_status()
        files = {"files": ("probe.txt", PROBE_TEXT.encode(), "text/plain")}
        self.http.post(f"{base}/{self.kb}/documents", files=files).raise_for_status()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
        self.http.delete(f"{self.url}/v1/knowledge_bases/{self.kb}")
        self.http.close()

    def _one(self, kind: str) -> None:
        if kind == "search":
            path, body = f"/v1/knowledge_bases/{self.kb}/search", {"query": "feed pump service", "top_k": 3}
        else:
            messages = [{"role": "user", "content": "Name one colour."}]
            path, body = "/v1/chat/completions", {"model": self.model, "messages": messages, "max_tokens": 8}
            body["cache"] = False
        started = time.perf_counter()
        try:
            status = self.http.post(f"{self.url}{path}", json=body).status_code
        except httpx.HTTPError:
            status = 0
        self.samples.append((kind, time.perf_counter() - started, status))

    def _loop(self) -> None:
        while not self._stop.is_set():
            for kind in ("search", "chat"):
                self._one(kind)
                if self._stop.wait(self.pause_s):
                    return

    def start(self) -> None:
        self.samples = []
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="latency-probe")
        self._thread.start()

    def stop(self) -> list[tuple[str, float, int]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=300)
            self._thread = None
        return list(self.samples)

    def idle(self, seconds: float) -> dict[str, Any]:
        self.start()
        time.sleep(seconds)
        return p95(self.stop())


def p95(samples: list[tuple[str, float, int]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("chat", "search"):
        times = [s for k, s, _ in samples if k == kind]
        out[f"{kind}_p95_s"] = round(pct_of(times, 95), 3) if times else None
        out[f"{kind}_requests"] = len(times)
        out[f"{kind}_failed"] = sum(1 for k, _, status in samples if k == kind and status != 200)
    return out
