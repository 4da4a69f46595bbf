"""raychat's Locust suite: streamed chat (time to first token as its own entry), knowledge-base chat,
embeddings and knowledge-base search, mixed by the weights in config.yaml.

    locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:8080 -u 20 -r 10 -t 20s
    RAYCHAT_TIER=2 locust -f loadtests/locustfile.py --headless --host ...   # a tier's load shape
    make loadtest TIER=1|2|3 INGRESS=nginx|traefik|direct

A 503 from backpressure (the LLM queue is full; the answer carries Retry-After) is a failure named
"... [503 backpressure]", so it is counted apart from other failures rather than hidden.
RAYCHAT_LOADTEST_CONFIG points at another config file. RAYCHAT_API_KEY, when set, is sent as a bearer token
on every request (`raychat loadtest` sets it to the service key); RAYCHAT_TLS_CA_CERT and
RAYCHAT_TLS_CLIENT_CERT/KEY let it call Serve's mTLS port directly.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from locust import HttpUser, LoadTestShape, between, events, task

from deployments.gateway import protocol, sse

sys.path.insert(0, str(Path(__file__).parent))
from shapes import SHAPES, load_config  # noqa: E402

CONFIG = load_config(
    Path(os.environ.get("RAYCHAT_LOADTEST_CONFIG") or Path(__file__).with_name("config.yaml"))
)
MODEL = CONFIG["model"]
KB = CONFIG["knowledge_base"]
USERS = CONFIG["users"]
API_KEY = os.environ.get("RAYCHAT_API_KEY")
AUTH = {"Authorization": f"Bearer {API_KEY}"} if API_KEY else {}

if os.environ.get("RAYCHAT_TIER"):
    # Exactly one shape in this module's namespace: the tier asked for.
    class TierShape(SHAPES[os.environ["RAYCHAT_TIER"]], LoadTestShape):  # type: ignore[misc]
        abstract = False


@events.test_start.add_listener
def _prepare_knowledge_base(environment: Any, **_: Any) -> None:
    """The knowledge-base users need a small knowledge base; create it once (409 = already there)."""
    import httpx

    host = environment.host
    with httpx.Client(base_url=host, headers=AUTH, timeout=120) as client:
        client.post("/v1/knowledge_bases", json={"name": KB, "description": "Locust fixture"})
        listed = client.get(f"/v1/knowledge_bases/{KB}/documents").json().get("data", [])
        if not listed:
            files = [
                ("files", (f"doc{i}.txt", text.encode(), "text/plain"))
                for i, text in enumerate(CONFIG["documents"])
            ]
            client.post(f"/v1/knowledge_bases/{KB}/documents", files=files).raise_for_status()


def _backpressure(response: Any, name: str) -> bool:
    if response.status_code == 503 and "retry-after" in response.headers:
        response.failure(f"{name} [503 backpressure]")
        return True
    return False


def _fire(kind: str, name: str, seconds: float) -> None:
    events.request.fire(
        request_type=kind,
        name=name,
        response_time=seconds * 1000,
        response_length=0,
        exception=None,
        context={},
    )


def _chat(prompt: str, **fields: Any) -> dict[str, Any]:
    """A chat body checked against the gateway's own protocol, so the suite cannot drift from the API."""
    request = protocol.ChatRequest.model_validate(
        {"model": MODEL, "messages": [{"role": "user", "content": prompt}], **fields}
    )
    return request.model_dump(mode="json", exclude_unset=True)


def _between() -> Any:
    low, high = CONFIG["wait_time_s"]
    return between(low, high)


class RaychatUser(HttpUser):
    """Every user's session sends the credential (RAYCHAT_API_KEY) with each request."""

    abstract = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client.headers.update(AUTH)
        # Straight at Serve's port with mTLS on: raychat's CA and the ingress's client certificate.
        if os.environ.get("RAYCHAT_TLS_CA_CERT"):
            self.client.verify = os.environ["RAYCHAT_TLS_CA_CERT"]
            self.client.cert = (os.environ["RAYCHAT_TLS_CLIENT_CERT"], os.environ["RAYCHAT_TLS_CLIENT_KEY"])


class StreamedChatUser(RaychatUser):
    weight = USERS["streamed_chat"]["weight"]
    wait_time = _between()

    @task
    def chat_stream(self) -> None:
        body = _chat(
            random.choice(CONFIG["prompts"]),
            max_tokens=USERS["streamed_chat"]["max_tokens"],
            temperature=0.7,
            stream=True,
        )
        began = time.perf_counter()
        with self.client.post(
            "/v1/chat/completions", json=body, stream=True, catch_response=True, name="chat stream"
        ) as response:
            if _backpressure(response, "chat stream"):
                return
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")
                return
            first = None
            done = False
            reader = sse.WireReader()
            for piece in response.iter_content(chunk_size=None):
                for event in reader.feed(piece):
                    if first is None and event.texts():
                        first = time.perf_counter()
                    done = done or event.done
            if not done:
                response.failure("stream ended without [DONE]")
                return
            ended = time.perf_counter()
            # Locust times a streamed request to its headers; these two entries time the answer itself.
            if first is not None:
                _fire("TTFT", "chat stream: time to first token", first - began)
            _fire("STREAM", "chat stream: whole answer", ended - began)


class KnowledgeChatUser(RaychatUser):
    weight = USERS["knowledge_chat"]["weight"]
    wait_time = _between()

    @task
    def knowledge_chat(self) -> None:
        body = _chat(
            random.choice(CONFIG["prompts"]),
            max_tokens=USERS["knowledge_chat"]["max_tokens"],
            knowledge_base=KB,
        )
        with self.client.post(
            "/v1/chat/completions", json=body, catch_response=True, name="knowledge chat"
        ) as response:
            if _backpressure(response, "knowledge chat"):
                return
            if response.status_code != 200 or "sources" not in response.json():
                response.failure(f"status {response.status_code}")


class CachedChatUser(RaychatUser):
    """Deterministic questions the question cache answers: load on the proxies and the serving path."""

    weight = USERS["cached_chat"]["weight"]
    wait_time = _between()

    @task
    def cached_chat(self) -> None:
        body = _chat(
            random.choice(CONFIG["prompts"]), max_tokens=USERS["cached_chat"]["max_tokens"], temperature=0
        )
        with self.client.post(
            "/v1/chat/completions", json=body, catch_response=True, name="cached chat"
        ) as response:
            if _backpressure(response, "cached chat"):
                return
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")


class EmbeddingsUser(RaychatUser):
    weight = USERS["embeddings"]["weight"]
    wait_time = _between()

    @task
    def embeddings(self) -> None:
        texts = random.sample(CONFIG["prompts"], 2)
        with self.client.post(
            "/v1/embeddings", json={"input": texts}, catch_response=True, name="embeddings"
        ) as response:
            if response.status_code != 200 or len(response.json().get("data", [])) != 2:
                response.failure(f"status {response.status_code}")


class KnowledgeSearchUser(RaychatUser):
    weight = USERS["kb_search"]["weight"]
    wait_time = _between()

    @task
    def search(self) -> None:
        query = random.choice(CONFIG["prompts"])
        with self.client.post(
            f"/v1/knowledge_bases/{KB}/search",
            data=json.dumps({"query": query, "top_k": 3}),
            headers={"Content-Type": "application/json"},
            catch_response=True,
            name="kb search",
        ) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")
