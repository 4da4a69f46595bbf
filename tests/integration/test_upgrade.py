"""`raychat upgrade` under a steady, bounded load through Nginx and Traefik (plain and streamed chats,
knowledge-base chats): a green that fails under load is rolled back by itself, a new version that fails its
smoke test never gets a request, a rolling upgrade replaces the running app's replicas in place, and an
upgrade of the bundled model to another dtype and served name finishes with zero failed requests and every
later answer from green. Runs on the shared stack as the tests before left it, then stops it
(`changes_stack`): the tests that restart the stack come after, on the test settings again.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from cluster.settings import load_settings
from cluster.upgrade.blue_green import colours_status
from tests.conftest import ROOT, TEST_ENV, Stack, run_raychat, tls_context

DATA = Path(TEST_ENV["RAYCHAT_DATA_DIR"])


def record_numbers(name: str, numbers: dict[str, object]) -> None:
    """An upgrade's numbers (phases, requests, failures, p95), printed and kept beside the upgrade's own
    report in the test data dir's logs/, for the closing note of a run that passed (pytest shows no output
    of passing tests)."""
    text = json.dumps(numbers, default=str)
    print(f"{name} numbers:", text)
    (DATA / "logs").mkdir(parents=True, exist_ok=True)
    (DATA / "logs" / f"numbers-{name}.json").write_text(text)


KB = "upgrade-kb"
FACT = "The harbour master of Tromsø in this story is called Ingrid Dahl and she sails a red boat."
# Short holds: each step is still judged at every check, it only takes less time here.
FAST_STEPS = {"hold_s": 6, "check_interval_s": 1, "drain_timeout_s": 120}


# A connection that closed before any byte of an answer came back.
_NOT_ANSWERED = (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError, httpx.WriteError)


class NotAnswered(Exception):
    pass


@dataclass
class Outcome:
    kind: str
    ok: bool
    status: int
    version: str | None
    detail: str = ""
    proxy: str = ""
    at: float = 0.0
    resent: bool = False  # the first try's connection closed before any answer (see `_one`)
    seconds: float = 0.0


@dataclass
class Load:
    """A few client threads through both proxies until stopped; every outcome kept."""

    stack: Stack
    model: str
    threads: int = 4
    # Between one thread's requests: a steady load that leaves the new replicas' start some CPU (two
    # cores here), as a service with headroom does.
    pause_s: float = 0.5
    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Load:
        self._workers = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for worker in self._workers:
            worker.join(timeout=180)

    def _run(self, index: int) -> None:
        base = [self.stack.url, self.stack.traefik_url][index % 2]
        rng = random.Random(index)
        with httpx.Client(
            base_url=base, headers=self.stack.headers, timeout=120, verify=tls_context()
        ) as http:
            while not self.stop.is_set():
                kind = ["chat", "stream", "kb"][rng.randrange(3)]
                at = time.time()
                try:
                    outcome = self._one(http, kind, rng)
                except NotAnswered:
                    # Closed before any answer: Nginx's reload closes idle keep-alive connections (a
                    # race with a client sending on one, as at any server's restart); the request was
                    # never read, and the openai client resends it just so. Counted as resent.
                    outcome = self._one(http, kind, rng)
                    outcome.resent = True
                outcome.proxy, outcome.at, outcome.seconds = base, at, time.time() - at
                self.outcomes.append(outcome)
                self.stop.wait(self.pause_s)

    def _one(self, http: httpx.Client, kind: str, rng: random.Random) -> Outcome:
        question = f"Question {rng.randrange(10_000)}: who is the harbour master?"
        body: dict[str, object] = {
            "model": self.model,
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 12,
            "cache": False,
        }
        if kind == "kb":
            body["knowledge_base"] = KB
        if kind != "stream":
            try:
                r = http.post("/v1/chat/completions", json=body)
            except _NOT_ANSWERED as exc:
                raise NotAnswered from exc
            except httpx.HTTPError as exc:
                return Outcome(kind, False, 0, None, f"{type(exc).__name__}: {exc}")
            ok = r.status_code == 200 and r.json()["choices"][0]["message"]["content"] is not None
            return Outcome(kind, ok, r.status_code, r.headers.get("x-raychat-version"), r.text[:200])
        done, error = False, ""
        try:
            stream = http.stream("POST", "/v1/chat/completions", json={**body, "stream": True})
            r = stream.__enter__()
        except _NOT_ANSWERED as exc:
            raise NotAnswered from exc
        except httpx.HTTPError as exc:
            return Outcome(kind, False, 0, None, f"{type(exc).__name__}: {exc}")
        try:  # the answer has begun: anything that breaks it now is a failure
            for line in r.iter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: ") and '"error"' in line:
                    error = line
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            stream.__exit__(None, None, None)
        version = r.headers.get("x-raychat-version")
        return Outcome(kind, r.status_code == 200 and done and not error, r.status_code, version, error)

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]


def upgrade(
    stack: Stack, tmp_path: Path, changes: dict, *args: str, drop_env: tuple[str, ...] = ()
) -> tuple[int, str]:
    """`raychat upgrade --config NEW.yaml`; the test stack's env, less the variables NEW.yaml replaces
    (a RAYCHAT_* variable wins over the file)."""
    config = tmp_path / f"green-{uuid.uuid4().hex[:6]}.yaml"
    config.write_text(yaml.safe_dump(changes))
    env = {k: v for k, v in stack.env.items() if k not in drop_env}
    result = run_raychat(env, "upgrade", "--config", str(config), *args, timeout=1200)
    return result.returncode, result.stdout + result.stderr


def colours(stack: Stack) -> dict:
    """What `raychat status` shows as "colours", read as it does (the routing record), without starting a
    process that connects to Ray for each look (`test_lifecycle` runs `status` itself)."""
    return colours_status(load_settings(None, data_dir=stack.env["RAYCHAT_DATA_DIR"]))


@dataclass
class Churn:
    """Documents added to and deleted from the knowledge base through Nginx until stopped; `live` is
    what the knowledge base must hold afterwards."""

    stack: Stack
    live: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Churn:
        self._worker = threading.Thread(target=self._run, daemon=True)
        self._worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._worker.join(timeout=180)

    def _run(self) -> None:
        rng = random.Random(7)
        url = f"{self.stack.url}/v1/knowledge_bases/{KB}/documents"
        i = 0
        while not self.stop.is_set():
            i += 1
            if self.live and i % 3 == 0:
                doc = rng.choice(sorted(self.live))
                r = self.stack.http.delete(f"{url}/{doc}")
                if r.status_code == 200:
                    self.live.discard(doc)
                else:
                    self.failures.append(f"delete {doc}: {r.status_code} {r.text[:200]}")
            else:
                doc = f"walrus-{i}.txt"
                text = f"Churn document {i}: the walrus number {i} sleeps on the ice floe."
                r = self.stack.http.post(url, files={"files": (doc, text.encode(), "text/plain")})
                if r.status_code == 200 and r.json()["data"][0]["status"] in ("ingested", "unchanged"):
                    self.live.add(doc)
                else:
                    self.failures.append(f"upload {doc}: {r.status_code} {r.text[:200]}")
            time.sleep(0.5)


ACCESS_LOGS = (DATA / "logs" / "nginx-access.log", DATA / "logs" / "traefik-access.log")


def log_sizes() -> list[int]:
    return [path.stat().st_size if path.exists() else 0 for path in ACCESS_LOGS]


def versions_seen_by_proxies(sizes: list[int]) -> Counter[str]:
    """X-Raychat-Version of every request both proxies logged after `sizes` (from `log_sizes`)."""
    nginx_log, traefik_log = (
        path.read_bytes()[size:].decode() for path, size in zip(ACCESS_LOGS, sizes, strict=True)
    )
    seen: Counter[str] = Counter(line.rsplit("version=", 1)[1].strip() for line in nginx_log.splitlines())
    for line in traefik_log.splitlines():
        seen[json.loads(line).get("downstream_X-Raychat-Version", "-")] += 1
    return seen


@pytest.fixture(scope="module")
def upgrade_stack(stack: Stack) -> Iterator[Stack]:
    """The stack up (already, unless a test before stopped it), with a knowledge base to chat with;
    stopped afterwards (`down` forgets the colours: the next `up` deploys the test settings again)."""
    up = stack.raychat("up", timeout=900)
    assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
    stack.http.delete(f"{stack.url}/v1/knowledge_bases/{KB}")  # a kept stack's earlier run
    stack.http.post(f"{stack.url}/v1/knowledge_bases", json={"name": KB})
    files = {"files": ("harbour.txt", FACT.encode(), "text/plain")}
    upload = stack.http.post(f"{stack.url}/v1/knowledge_bases/{KB}/documents", files=files)
    assert upload.status_code == 200, upload.text
    yield stack
    if os.environ.get("RAYCHAT_TEST_KEEP_STACK") != "1":
        stack.raychat("down", timeout=180)


@pytest.mark.changes_stack
def test_a_green_failing_under_load_is_rolled_back_without_failed_requests(
    upgrade_stack: Stack, tmp_path: Path
) -> None:
    stack = upgrade_stack
    blue = colours(stack)["blue"]["version"]
    # Passes the smoke test (one request at a time) but refuses a second concurrent generation: a
    # capacity setting that only production traffic shows.
    changes = {
        "llm": {"max_ongoing_requests": 1, "max_queued_requests": 1, "target_ongoing_requests": 1},
        "upgrade": {**FAST_STEPS, "steps": [50, 100], "hold_s": 15},
    }
    drop = (
        "RAYCHAT_LLM__MAX_ONGOING_REQUESTS",
        "RAYCHAT_LLM__MAX_QUEUED_REQUESTS",
        "RAYCHAT_LLM__TARGET_ONGOING_REQUESTS",
    )
    with Load(stack, model=TEST_ENV.get("RAYCHAT_LLM__MODEL_ID", "smollm2-135m-instruct"), threads=6) as load:
        code, output = upgrade(stack, tmp_path, changes, drop_env=drop)
        time.sleep(1)
    assert code == 4, output[-3000:]
    assert "5xx" in output, output[-3000:]
    assert load.failures() == [], load.failures()[:5]
    assert len(load.outcomes) > 20
    assert "green" not in colours(stack) and colours(stack)["blue"]["version"] == blue
    after = stack.http.post(
        f"{stack.url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "cache": False},
    )
    assert after.status_code == 200 and after.headers["x-raychat-version"] == blue


@pytest.mark.changes_stack
def test_a_new_version_failing_its_smoke_test_never_gets_a_request(
    upgrade_stack: Stack, tmp_path: Path
) -> None:
    """Rolling: its one-replica canary fails the smoke test (the code both strategies share), and not one
    of the running app's replicas is replaced."""
    stack = upgrade_stack
    blue = colours(stack)["blue"]["version"]
    sizes = log_sizes()
    stored = stack.http.post(
        f"{stack.url}/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "Remember: " + "lighthouse " * 40}],
            "max_tokens": 2,
            "session_id": f"upgrade-{uuid.uuid4().hex[:8]}",
        },
    )
    assert stored.status_code == 200, stored.text
    # A context window too small for any chat prompt: the engine starts, the first smoke chat fails.
    changes = {"llm": {"max_model_len": 48}, "upgrade": FAST_STEPS}
    with Load(stack, model="smollm2-135m-instruct", threads=2) as load:
        code, output = upgrade(
            stack, tmp_path, changes, "--strategy", "rolling", drop_env=("RAYCHAT_LLM__MAX_MODEL_LEN",)
        )
    assert code == 4, output[-3000:]
    assert "smoke test" in output and "the canary failed" in output, output[-3000:]
    # The smaller window was reported before anything moved, with the stored sessions it trims.
    shrink = re.search(r"context window shrinks to 48 tokens: (\d+) of (\d+) stored sessions", output)
    assert shrink and 1 <= int(shrink.group(1)) <= int(shrink.group(2)), output[-3000:]
    assert "rollout:" not in output  # the running app was never touched
    assert load.failures() == [] and load.outcomes
    assert {o.version for o in load.outcomes} == {blue}
    seen = versions_seen_by_proxies(sizes)
    assert set(seen) <= {blue, "-", ""}, seen  # no proxy ever got an answer from the new version
    assert "green" not in colours(stack) and colours(stack)["blue"]["version"] == blue


@pytest.mark.changes_stack
def test_a_rolling_upgrade_replaces_replicas_in_place_without_failed_requests(
    upgrade_stack: Stack, tmp_path: Path
) -> None:
    """Another dtype, one replica at a time in the running app: a new replica starts before an old one
    stops, and what clients get is judged by version from the proxies' logs."""
    stack = upgrade_stack
    before = colours(stack)["blue"]
    changes = {"llm": {"dtype": "bfloat16"}, "serve": {"release": "rolled-2"}, "upgrade": FAST_STEPS}
    with Load(stack, model="smollm2-135m-instruct", threads=4) as load:
        time.sleep(2)
        started = time.time()
        code, output = upgrade(
            stack, tmp_path, changes, "--strategy", "rolling", drop_env=("RAYCHAT_LLM__DTYPE",)
        )
        time.sleep(1)
    assert code == 0, output[-4000:]
    report, _ = json.JSONDecoder().raw_decode(output[output.index("{\n") :])
    assert report["outcome"] == "upgraded" and report["strategy"] == "rolling"
    for phase in ("canary ready", "smoke test", "canary deleted", "rollout", "hold"):
        assert phase in report["phases"]
    during = sorted(o.seconds for o in load.outcomes if o.at >= started)
    record_numbers(
        "rolling-upgrade",
        {
            "phases": report["phases"],
            "requests": len(load.outcomes),
            "during_upgrade": len(during),
            "failed": len(load.failures()),
            "p95_during_s": round(during[int(0.95 * (len(during) - 1))], 3),
            "versions": Counter(o.version for o in load.outcomes),
        },
    )
    assert load.failures() == [], load.failures()[:5]
    assert Counter(o.version for o in load.outcomes)["rolled-2"] > 0
    state = colours(stack)
    assert state["blue"]["app"] == before["app"] and state["blue"]["version"] == "rolled-2"
    assert "green" not in state
    for base in (stack.url, stack.traefik_url):
        r = stack.http.post(
            f"{base}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "cache": False},
        )
        assert r.status_code == 200 and r.headers["x-raychat-version"] == "rolled-2", r.text


@pytest.mark.changes_stack
def test_upgrade_to_another_dtype_name_and_embedding_under_load(upgrade_stack: Stack, tmp_path: Path) -> None:
    """One green for both: another dtype and served name for the model, and with --reindex another
    embedding dimension, while documents are added and deleted."""
    stack = upgrade_stack
    old_model = "smollm2-135m-instruct"
    question = {
        "model": old_model,
        "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": 4,
        "temperature": 0,
    }
    blue_app = colours(stack)["blue"]["app"]
    first = stack.http.post(f"{stack.url}/v1/chat/completions", json=question)
    assert stack.http.post(f"{stack.url}/v1/chat/completions", json=question).headers["x-cache"] == "hit"
    assert first.status_code == 200
    changes = {
        "llm": {"model_id": "smollm2-v2", "dtype": "bfloat16"},
        "serve": {"release": "green-2"},
        "knowledge": {"embedding_dimension": 128},
        "upgrade": FAST_STEPS,
    }
    with Load(stack, model=old_model, threads=4) as load, Churn(stack) as churn:
        time.sleep(4)  # steady state first, for the latency to compare with
        started = time.time()
        code, output = upgrade(stack, tmp_path, changes, "--reindex", drop_env=("RAYCHAT_LLM__DTYPE",))
        time.sleep(1)
    assert code == 0, output[-4000:]
    report, _ = json.JSONDecoder().raw_decode(output[output.index("{\n") :])
    assert report["outcome"] == "upgraded"
    phases = ("green ready", "re-index", "smoke test", "step 10%", "step 50%", "step 100%", "writes to green")
    for phase in (*phases, "blue drained"):
        assert phase in report["phases"]
    failures = load.failures()
    steady = sorted(o.seconds for o in load.outcomes if o.at < started)
    during = sorted(o.seconds for o in load.outcomes if o.at >= started)
    record_numbers(
        "blue-green-upgrade",
        {
            "phases": report["phases"],
            "requests": len(load.outcomes),
            "during_upgrade": len(during),
            "failed": len(failures),
            "resent_after_a_closed_idle_connection": sum(o.resent for o in load.outcomes),
            "p95_steady_s": round(steady[int(0.95 * (len(steady) - 1))], 3),
            "p95_during_s": round(during[int(0.95 * (len(during) - 1))], 3),
            "reindex": report.get("reindex"),
            "documents_live_after_churn": len(churn.live),
            "churn_failures": churn.failures[:3],
        },
    )
    assert failures == [], failures[:5]
    versions = Counter(o.version for o in load.outcomes)
    assert versions["green-2"] > 0 and len(load.outcomes) > 20, versions
    state = colours(stack)
    assert state["blue"]["version"] == "green-2" and "green" not in state and state["blue"]["app"] != blue_app
    # Every answer from green now, through both proxies, under the old name (an alias) and the new one.
    for base in (stack.url, stack.traefik_url):
        for model in (old_model, "smollm2-v2"):
            r = stack.http.post(
                f"{base}/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            )
            assert r.status_code == 200 and r.headers["x-raychat-version"] == "green-2", r.text
    models = stack.http.get(f"{stack.url}/v1/models").json()["data"]
    assert [m["id"] for m in models] == ["smollm2-v2", old_model]
    assert models[1]["alias_of"] == "smollm2-v2" and models[0]["version"]
    # The question blue cached is not served as green's answer.
    again = stack.http.post(f"{stack.url}/v1/chat/completions", json=question)
    assert again.status_code == 200 and again.headers["x-cache"] == "miss"
    assert os.path.exists(ROOT / ".test-data" / "run" / "colours.json")
    # The re-index: green's tables have the new dimension and hold exactly the live documents.
    assert churn.failures == [] and churn.live
    kbs = {k["name"]: k for k in stack.http.get(f"{stack.url}/v1/knowledge_bases").json()["data"]}
    assert kbs[KB]["dim"] == 128
    docs = stack.http.get(f"{stack.url}/v1/knowledge_bases/{KB}/documents").json()["data"]
    assert {d["document"] for d in docs} == churn.live | {"harbour.txt"}
    hits = stack.http.post(
        f"{stack.url}/v1/knowledge_bases/{KB}/search",
        json={"query": "walrus sleeps on the ice floe", "mode": "fulltext", "top_k": 100},
    ).json()["data"]
    # Every live document found, no deleted one (the n-gram full-text index may also match harbour.txt).
    assert {h["document"] for h in hits} - {"harbour.txt"} == churn.live
    vector_hits = stack.http.post(
        f"{stack.url}/v1/knowledge_bases/{KB}/search",
        json={"query": "Who is the harbour master of Tromsø?", "mode": "vector", "top_k": 1},
    ).json()["data"]
    assert vector_hits[0]["document"] == "harbour.txt"
