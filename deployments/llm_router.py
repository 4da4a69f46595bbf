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
  divides by the text's length, so those go by Serve's default choice instead;
- the prefix tree is a detached actor that outlives the replicas and the routers that knew them, so it can
  name a replica that is gone; Ray's router then raises, and Serve leaves the request unrouted for good
  (seen here: a chat that never answered after a redeploy). Any failure of the prefix choice falls back
  to Serve's default choice, and a replica the tree named but that is gone is dropped from it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

# The policy itself, not `ray.serve.llm.request_router`'s public alias of it (an empty subclass): that
# package's __init__ imports vLLM's OpenAI protocol, about 11 s of CPU in every process that reads this
# deployment's config (each `raychat status` or `upgrade` asks Serve for it). tests/unit pins the two.
from ray.llm._internal.serve.routing_policies.prefix_aware.prefix_aware_router import (
    PrefixCacheAffinityRouter,
)
from ray.serve._private.common import ReplicaID
from ray.serve._private.request_router import PowerOfTwoChoicesRequestRouter  # Serve's default

ROUTER_PATH = "deployments.llm_router.PrefixAffinityRouter"
log = logging.getLogger("raychat.llm_router")


class PrefixAffinityRouter(PrefixCacheAffinityRouter):
    async def choose_replicas(self, candidate_replicas: list[Any], pending_request: Any = None) -> Any:
        if len(candidate_replicas) >= 2 and self._prompt_text(pending_request) is not None:
            try:
                return await super().choose_replicas(candidate_replicas, pending_request)
            except Exception as exc:  # noqa: BLE001 - any failure here would leave the request unrouted
                self._forget_gone_replica(exc)
                log.warning("prefix routing failed (%r); Serve's default choice instead", exc)
        return await PowerOfTwoChoicesRequestRouter.choose_replicas(
            self, candidate_replicas=candidate_replicas, pending_request=pending_request
        )

    def _forget_gone_replica(self, exc: Exception) -> None:
        """The shared tree outlives replicas and the routers that knew them: a replica that is gone may
        still be in it (Ray's router then fails with a KeyError on that replica, and Serve would never
        route the request at all). Drop it from the tree."""
        gone = exc.args[0] if isinstance(exc, KeyError) and exc.args else None
        if isinstance(gone, ReplicaID):
            self._tree_actor.remove_tenants.remote([gone.to_full_id_str()])

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
