"""What both adapters need from the client and nothing framework-specific: building or adopting a
:class:`~glimp_llm.Glimp`, naming its models without loading them, the routing trace put into metadata,
and streaming text that never leaks a stop string or the start of a tool call.

No routing happens here: every request goes through :class:`~glimp_llm.Glimp`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from glimp_llm.chat_template import ChatTemplate
from glimp_llm.client import Glimp
from glimp_llm.config import EngineConfig, GlimpConfig
from glimp_llm.engines.base import Message
from glimp_llm.errors import ConfigurationError
from glimp_llm.router import Router
from glimp_llm.trace import RoutedResult

PROVIDER = "glimp"


def resolve_glimp(glimp: Glimp | None, config: GlimpConfig | str | None, router: Router | None = None) -> Glimp:
    """The client an adapter uses: the one given, a new one around an existing ``router`` (its engines and
    settings), or a new one from ``config`` (``None``: the embedded default). Engines start on first use,
    so constructing an adapter never loads a model."""
    given = [name for name, value in (("glimp", glimp), ("config", config), ("router", router)) if value is not None]
    if len(given) > 1:
        raise ConfigurationError(
            f"pass one of glimp= (an existing Glimp client), router= (an existing Router) or config= (a "
            f"GlimpConfig to build one), not both {' and '.join(given)}"
        )
    if glimp is not None:
        if not isinstance(glimp, Glimp):
            raise ConfigurationError(f"glimp= must be a glimp_llm.Glimp client; got {type(glimp).__name__}")
        return glimp
    if router is not None:
        if not isinstance(router, Router):
            raise ConfigurationError(f"router= must be a glimp_llm.Router; got {type(router).__name__}")
        return Glimp(router=router)
    if config is not None and not isinstance(config, GlimpConfig | str):
        raise ConfigurationError(
            f"config= must be a GlimpConfig or a path to a config file; got {type(config).__name__}"
        )
    return Glimp(config)


def engine_label(cfg: EngineConfig) -> str:
    """A model's name as configured (no engine is started to learn it)."""
    model = getattr(cfg, "model", None)
    if isinstance(model, str) and model:
        return model
    return f"{cfg.kind}:{getattr(cfg, 'name', 'engine')}"


def pair_label(glimp: Glimp) -> str:
    """``small->large`` (or the one name when both roles use the same model): the ``model_name``
    frameworks report, e.g. ``qwen2.5-coder-0.5b-instruct->qwen2.5-coder-1.5b-instruct``. Engines the
    client adopted (``router=``, ``small=``/``large=``) are named by their own ``name``."""
    if glimp.manager.adopted:
        small, large = glimp.manager.small.name, glimp.manager.large.name
    else:
        small, large = engine_label(glimp.config.small), engine_label(glimp.config.large)
    return small if small == large else f"{small}->{large}"


def routing_trace(result: RoutedResult) -> dict[str, Any]:
    """The routing summary plus one compact line per step (who wrote it, the glimpse entropy, how
    many tokens, why it ended): what LangSmith-style tracing and LlamaIndex ``raw`` show."""
    trace: dict[str, Any] = dict(result.summary())
    trace["steps_detail"] = [
        {
            "index": s.index,
            "model": s.model,
            "entropy": None if s.entropy is None else round(s.entropy, 4),
            "tokens": s.tokens,
            "ended_by": s.ended_by,
            "glimpse_reused": s.glimpse_reused,
        }
        for s in result.steps
    ]
    return trace


def usage_dict(result: RoutedResult) -> dict[str, int]:
    """OpenAI-style token counts (the keys LangChain's ``llm_output`` and LlamaIndex's
    ``TokenCountingHandler`` read)."""
    u = result.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens}


def template_supports_tools(glimp: Glimp) -> bool:
    """Whether the small model's chat template renders ``tools`` itself (Qwen2.5 does, SmolLM2 does
    not). Starts the engines if needed: call it off the caller's event loop."""
    return ChatTemplate(glimp.small_info.chat_template).supports_tools


def prefilled_prompt(
    glimp: Glimp, messages: Sequence[Message], tools: Sequence[dict[str, Any]] | None, prefill: str
) -> str:
    """The chat-templated prompt with the assistant turn opened *and already begun* with ``prefill``,
    as raw text (``RouteRequest(raw=True)``). Used to force a tool call: the model continues a
    ``<tool_call>`` block instead of deciding whether to open one.

    A raw prompt skips what the router adds to templated prompts, so the two things that matter for
    these models are added here the same way: the configured system prompt and the BOS token. (The
    ``<think>`` opening of thinking models is deliberately not added: a forced call answers directly.)
    """
    msgs = list(messages)
    system = glimp.config.router.system_prompt
    if system and not any(m.get("role") == "system" for m in msgs):
        msgs.insert(0, {"role": "system", "content": system})
    text = glimp.render_chat(msgs, tools=tools)
    info = glimp.small_info
    if info.add_bos and info.bos_token and not text.startswith(info.bos_token):
        text = info.bos_token + text
    return text + prefill


class StreamingText:
    """Turns the router's token texts into deltas a user may see.

    * A stop string is never shown, not even in part: a tail that could be the start of one is held
      back until the next token decides (the router cuts its final text the same way).
    * ``pause_markers`` (e.g. ``<tool_call>``): from the first one on, nothing more is streamed; the
      adapter parses the whole text at the end and sends the remainder of the visible content then.
    * ``pause_on_leading_json``: a response that starts with ``{`` (or ``[``, a list of calls) may be a
      bare JSON tool call, so it is held back too.

    :meth:`finish` reconciles with the authoritative final text: what was shown is always a prefix of
    it, so streamed chunks add up to exactly what ``invoke`` returns.
    """

    def __init__(
        self, stops: Sequence[str] = (), pause_markers: Sequence[str] = (), *, pause_on_leading_json: bool = False
    ) -> None:
        self._stops = tuple(s for s in stops if s)
        self._markers = tuple(m for m in pause_markers if m)
        self._json = pause_on_leading_json
        self._watch = self._stops + self._markers
        self._longest = max((len(s) for s in self._watch), default=0)
        self._buffer = ""
        self._shown = 0
        self._paused = False

    @property
    def shown(self) -> str:
        return self._buffer[: self._shown]

    def push(self, text: str) -> str:
        """Add the next piece of generated text; return what may be shown now (possibly "")."""
        if self._paused or not text:
            self._buffer += text
            return ""
        self._buffer += text
        buf = self._buffer
        if self._json:
            lead = buf.lstrip()
            if not lead:
                return ""  # only whitespace so far: it might still open a JSON object
            if lead.startswith(("{", "[")):
                self._paused = True
                return ""
            self._json = False
        limit = len(buf)
        start = max(0, self._shown - self._longest)
        hits = [i for s in self._watch if (i := buf.find(s, start)) >= 0]
        if hits:
            limit = min(hits)
            self._paused = True
        else:
            limit -= self._held_tail(buf)
        while limit > self._shown and buf[limit - 1] == "\ufffd":  # half a multi-byte character
            limit -= 1
        if limit <= self._shown:
            return ""
        delta = buf[self._shown : limit]
        self._shown = limit
        return delta

    def _held_tail(self, buf: str) -> int:
        """Length of the longest suffix of ``buf`` that is a proper prefix of a watched string."""
        for n in range(min(self._longest - 1, len(buf)), 0, -1):
            tail = buf[-n:]
            if any(w.startswith(tail) for w in self._watch):
                return n
        return 0

    def finish(self, final_text: str) -> str:
        """The rest of ``final_text`` after what was already shown ("" if it does not extend it)."""
        shown = self.shown
        return final_text[len(shown) :] if final_text.startswith(shown) else ""
