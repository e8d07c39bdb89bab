"""A routed request as one engine's prompt: the one place a chat turn becomes text and token ids.

Every routed request passes here (:meth:`Router.prepare_prompt` delegates), once per engine when the two
models do not share a tokenizer: the decisions that depend on the model are made with *that* model's
template, not the small model's for both.

1. ``raw`` prompts are used as they are;
2. otherwise the configured system prompt joins a conversation that has none;
3. a template that cannot render tools (SmolLM2) gets the tool instruction and the earlier calls and
   results as text (:func:`~glimp_llm.chat.tools.fallback_messages`); one that can (Qwen2.5) gets the tools;
4. the template opens the assistant turn; then either the forced-call ``prefill`` begins the answer
   (``tool_choice``: the model continues a ``<tool_call>`` block), or thinking models get ``<think>``
   (a forced call answers directly, so the two never meet);
5. the BOS token, for models that want one and whose template did not write it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from glimp_llm.chat.content import template_message
from glimp_llm.chat.tools import fallback_messages
from glimp_llm.chat_template import ChatTemplate
from glimp_llm.config import RouterConfig
from glimp_llm.engines.base import Engine, Message

if TYPE_CHECKING:
    from glimp_llm.router import RouteRequest


def thinking(engine: Engine, config: RouterConfig) -> bool:
    """Whether ``engine`` reasons inside ``<think>`` under ``config.thinking`` (auto: its template says)."""
    if config.thinking == "auto":
        return ChatTemplate(engine.info.chat_template).is_thinking
    return config.thinking == "on"


async def render_prompt(request: RouteRequest, engine: Engine, config: RouterConfig) -> str:
    """The prompt text of ``request`` for ``engine`` (steps 1-5 of the module docstring)."""
    if request.messages is None and request.raw:
        assert request.prompt is not None
        return request.prompt
    messages: list[Message] = (
        [template_message(m) for m in request.messages]
        if request.messages is not None
        else [{"role": "user", "content": request.prompt}]
    )
    if config.system_prompt and not any(m.get("role") == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": config.system_prompt})
    tools = list(request.tools) if request.tools else None
    if not ChatTemplate(engine.info.chat_template).supports_tools:
        messages, tools = fallback_messages(messages, tools), None
    text = await engine.render_chat(messages, tools=tools, add_generation_prompt=True)
    if request.prefill:
        text += request.prefill
    elif thinking(engine, config) and not text.rstrip().endswith("<think>"):
        text += "<think>\n"
    info = engine.info
    if info.add_bos and info.bos_token and not text.startswith(info.bos_token):
        text = info.bos_token + text
    return text


async def prompt_ids(request: RouteRequest, engine: Engine, config: RouterConfig) -> list[int]:
    """The token ids of ``request``'s prompt for ``engine``."""
    return await engine.tokenize(await render_prompt(request, engine, config))
