"""Stage 4, retrieval: for a knowledge-base chat, the passages that answer the question, filled into the
prompt template in place of the last user message (earlier turns stay as they are)."""

from __future__ import annotations

from deployments.gateway.context import RequestContext
from deployments.gateway.protocol import APIError, ChatMessage, ChatRequest, SearchRequest
from deployments.knowledge_api import KnowledgeAPI
from knowledge import prompt


class Retrieval:
    def __init__(self, knowledge: KnowledgeAPI) -> None:
        self.knowledge = knowledge

    async def __call__(self, ctx: RequestContext) -> None:
        request = ctx.parsed()
        if not isinstance(request, ChatRequest) or request.knowledge_base is None:
            return
        engine = ctx.to_engine()
        assert isinstance(engine, ChatRequest)
        messages = [m.model_dump(mode="json", exclude_unset=True) for m in engine.messages]
        question = prompt.question(messages)
        if not question.strip():
            raise _no_question()
        settings = self.knowledge.settings
        search = SearchRequest(
            query=question,
            top_k=request.top_k or settings.default_top_k,
            mode=request.search_mode or "hybrid",
        )
        context, ctx.sources = await self.knowledge.retrieve(request.knowledge_base, search)
        filled = prompt.rag_messages(messages, context, settings.prompt_template)
        ctx.engine_request = engine.model_copy(
            update={"messages": [ChatMessage.model_validate(m) for m in filled]}
        )


def _no_question() -> APIError:
    return APIError(
        400,
        "a knowledge-base chat needs a user message with text content",
        param="messages",
        code="invalid_value",
    )
