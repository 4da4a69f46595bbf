"""Which LLM replica a chat goes to: the one that already holds the longest prefix of its prompt.

RAG chats share long prefixes (the system prompt, then the knowledge context retrieved for similar
questions), and vLLM keeps what it computed for a prefix in its KV cache (prefix caching): a replica that
has seen the prefix skips most of the prefill, which is most of the time to first token. Ray Serve LLM's
`PrefixCacheAffinityRouter` routes by that, falling back to Serve's power-of-two choice when the replicas'
queues differ by more than `llm.router_imbalance`. It runs inside every process that holds a handle to the
LLM deployment (the gateway replicas) and keeps one shared prefix tree in a named actor.

What it lacks for raychat, added here:
- with one replica there is nothing to choose, yet every request would make two blocking calls to the tree
  actor on the gateway's event loop: skipped (Serve's default choice, no round trip);
- recording the prompt after routing waits for the tree actor, on the same event loop, on the token path:
  sent without waiting (the tree learns a moment later; the request is not held);
- a prompt given as token ids, or a call without a request (health checks), has no text: Ray's router
  divides by the text's length, so those go by Serve's default choice instead.
"""

from __future__ import annotations

import time
from typing import Any

from ray.serve._private.request_router import PowerOfTwoChoicesRequestRouter  # Serve's default
from ray.serve.llm.request_router import PrefixCacheAffinityRouter

ROUTER_PATH = "deployments.llm_router.PrefixAffinityRouter"


class PrefixAffinityRouter(PrefixCacheAffinityRouter):
    async def choose_replicas(self, candidate_replicas: list[Any], pending_request: Any = None) -> Any:
        if len(candidate_replicas) < 2 or self._prompt_text(pending_request) is None:
            return await PowerOfTwoChoicesRequestRouter.choose_replicas(
                self, candidate_replicas=candidate_replicas, pending_request=pending_request
            )
        return await super().choose_replicas(candidate_replicas, pending_request)

    def on_request_routed(self, pending_request: Any, replica_id: Any, result: Any) -> None:
        text = self._prompt_text(pending_request)
        if text is None or len(self._replica_id_set) < 2:
            return
        # Not waited for: the tree actor learns the prefix while the request goes on.
        self._tree_actor.insert.remote(text, replica_id.to_full_id_str(), time.time())

    def _prompt_text(self, pending_request: Any) -> str | None:
        if pending_request is None or not pending_request.args:
            return None
        try:
            text = self._extract_text_from_request(pending_request)
        except ValueError:  # not a chat or completion request
            return None
        return text or None
