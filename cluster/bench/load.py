"""A closed-loop streaming load: C concurrent streams, each sending chat requests back to back."""

from __future__ import annotations

import asyncio
import ssl
import statistics
import time
from dataclasses import dataclass, field

import httpx

from deployments.gateway import sse

PROMPTS = [
    "Explain how a bank should protect customer data.",
    "Write a short note about maintaining factory machines.",
    "Describe the water cycle to a student.",
    "List some tips for writing clear reports.",
    "What makes a good team meeting?",
    "Summarise the benefits of regular exercise.",
    "How does a library organise its books?",
    "Give advice for a first day at a new job.",
]


def pct_of(values: list[float], pct: float, empty: float = float("nan")) -> float:
    """The nearest-rank percentile of `values`; `empty` when there are none."""
    if not values:
        return empty
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


@dataclass
class LevelResult:
    concurrency: int
    requests: int
    output_tokens: int
    wall_s: float
    ttft_s: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def tok_per_s(self) -> float:
        return self.output_tokens / self.wall_s if self.wall_s else 0.0

    def ttft_pct(self, pct: float) -> float:
        return pct_of(self.ttft_s, pct)

    def as_dict(self) -> dict[str, float]:
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "output_tokens": self.output_tokens,
            "wall_s": round(self.wall_s, 3),
            "tok_per_s": round(self.tok_per_s, 1),
            "ttft_p50_ms": round(self.ttft_pct(50) * 1000, 1),
            "ttft_p95_ms": round(self.ttft_pct(95) * 1000, 1),
            "ttft_mean_ms": round(statistics.fmean(self.ttft_s) * 1000, 1) if self.ttft_s else float("nan"),
            "errors": self.errors,
        }


def chat_body(model: str, prompt: str, max_tokens: int) -> dict[str, object]:
    # ignore_eos: every request generates exactly max_tokens, so all engines do the same work.
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def _one(client: httpx.AsyncClient, url: str, body: dict[str, object]) -> tuple[float, int]:
    start = time.perf_counter()
    ttft, tokens = -1.0, 0
    async with client.stream("POST", url, json=body) as resp:
        if resp.status_code != 200:
            await resp.aread()
            raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:200]}")
        reader = sse.WireReader()
        async for piece in resp.aiter_text():
            for event in reader.feed(piece):
                if ttft < 0 and event.texts():
                    ttft = time.perf_counter() - start
                if event.usage:
                    tokens = int(event.usage["completion_tokens"])
    return ttft, tokens


async def run_level(
    base_url: str,
    model: str,
    concurrency: int,
    requests: int,
    max_tokens: int,
    headers: dict[str, str] | None = None,
    verify: ssl.SSLContext | bool = True,
    extra: dict[str, object] | None = None,
) -> LevelResult:
    """`headers`: the credential the server wants (raychat's service key; none for plain vLLM);
    `verify`: the TLS context that trusts the server (raychat's CA for its HTTPS edge); `extra`: fields
    added to every body (raychat's `cache: false`, so the question cache never answers a benchmark)."""
    url = f"{base_url}/v1/chat/completions"
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    result = LevelResult(concurrency=concurrency, requests=requests, output_tokens=0, wall_s=0.0)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async with httpx.AsyncClient(headers=headers or {}, timeout=600, limits=limits, verify=verify) as client:

        async def stream_worker() -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    body = {**chat_body(model, PROMPTS[i % len(PROMPTS)], max_tokens), **(extra or {})}
                    ttft, tokens = await _one(client, url, body)
                    result.ttft_s.append(ttft)
                    result.output_tokens += tokens
                except Exception:
                    result.errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(stream_worker() for _ in range(concurrency)))
        result.wall_s = time.perf_counter() - start
    return result
