"""What every server dialect answers, and the ``/v1/completions`` protocol three of them share.

A :class:`Dialect` is how one kind of server is asked for the engine contract's facts and calls: start-up
facts (vocabulary, window, template, end ids), tokenize/detokenize, a glimpse with top-k logprobs, a streamed
step with token ids. This base speaks OpenAI's ``/v1/completions`` with a token-id prompt, which vLLM, SGLang
and trtllm-serve share; each of their modules states only where its server differs, and llama-server, which
is asked through its native ``/completion``, overrides the calls themselves.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from glimp_llm.chat_template import ChatTemplate
from glimp_llm.engines.base import (
    Completion,
    Delta,
    EngineInfo,
    FinishReason,
    Glimpse,
    Message,
    SamplingParams,
    TokenScores,
)
from glimp_llm.engines.replicas import Replica
from glimp_llm.engines.tensorrt_llm_validate import tokenizer_facts
from glimp_llm.entropy import entropy_from_topk
from glimp_llm.errors import ConfigurationError, EngineFailureError, MalformedResponseError

if TYPE_CHECKING:
    from glimp_llm.engines.openai_compat import OpenAICompatEngine
    from glimp_llm.engines.servers.transport import ServerTransport

Emit = Callable[[Delta], None]
#: Tokenised by both models to tell whether they can exchange token ids (see ``tokenizer_fingerprint``).
FINGERPRINT_PROBE = "Step 1: 12 + 7 = 19.\n\nThe naïve café's résumé — 東京 🙂 <think>\tdef f(x): return x**2"


class Dialect:
    """One kind of server, as the engine sees it. Subclasses name themselves and override what differs."""

    name: ClassVar[str]
    owned_by: ClassVar[str]
    """What ``GET /v1/models`` says in ``owned_by`` (what ``dialect="auto"`` reads)."""
    can_score: ClassVar[bool] = False

    def __init__(self, engine: OpenAICompatEngine) -> None:
        self.engine = engine
        self.http: ServerTransport = engine.http

    # ------------------------------------------------------------------------------ start-up facts
    async def describe(self, replica: Replica) -> EngineInfo:
        """Window from the model card, vocabulary from the configuration (these servers do not report it),
        template and end ids from ``tokenizer_from``."""
        e = self.engine
        models = await model_cards(self.http, replica)
        card = next((m for m in models if m.get("id") == e.model), None)
        if card is None:
            raise ConfigurationError(
                f"engine {e.name!r}: the server serves {[m.get('id') for m in models]}, not model={e.model!r}"
            )
        window = e.context_window_setting or card.get("max_model_len")
        if e.vocab_size_setting is None or not isinstance(window, int):
            raise ConfigurationError(
                f"engine {e.name!r}: a {self.name} server does not report the vocabulary size"
                + ("" if isinstance(window, int) else " or the context window")
                + "; set vocab_size (the real vocabulary, for the entropy bound) and context_window in the config"
            )
        template, bos, eos = e.chat_template_setting, "", ""
        eos_ids: frozenset[int] = frozenset()
        if e.tokenizer_from:
            template, bos, eos = hf_template(Path(e.tokenizer_from), template)
            # the end token's id, so that callers (the router's verification) can score ending the answer
            ids = await self.tokenize(replica, eos) if eos else []
            eos_ids = frozenset(ids) if len(ids) == 1 else frozenset()
        return await self.info(replica, e.vocab_size_setting, window, template, bos, eos, False, eos_ids)

    async def info(
        self,
        replica: Replica,
        vocab: int,
        window: int,
        template: str | None,
        bos: str,
        eos: str,
        add_bos: bool,
        eos_ids: frozenset[int],
    ) -> EngineInfo:
        e = self.engine
        e._template = ChatTemplate(template, bos_token=bos, eos_token=eos) if template else None
        facts = tokenizer_facts(Path(e.tokenizer_from)) if e.tokenizer_from else None
        if facts is not None:  # the model's own vocabulary: the fingerprint an in-process engine of it reports
            fingerprint = facts.fingerprint
        else:  # what the server says of a probe: comparable with other servers only
            probe = await self.tokenize(replica, FINGERPRINT_PROBE)
            fingerprint = "probe:" + hashlib.sha256(json.dumps([vocab, probe, bos, eos]).encode()).hexdigest()[:16]
        return EngineInfo(
            name=e.name,
            model=e.model,
            backend=f"openai-compat ({self.name})",
            vocab_size=vocab,
            context_window=window,
            eos_token_ids=eos_ids,
            tokenizer_fingerprint=fingerprint,
            entropy_kind="top-k estimate",
            batches_in_flight=True,
            chat_template=template,
            bos_token=bos,
            eos_token=eos,
            add_bos=add_bos,
            can_score=self.can_score,
        )

    # ------------------------------------------------------------------------------ text
    async def tokenize(self, replica: Replica, text: str) -> list[int]:
        body = {"model": self.engine.model, "prompt": text, "add_special_tokens": False}
        data = await self.http.request_json(replica, "/tokenize", body)
        return int_list(data.get("tokens"), self.engine.name, "tokenize tokens")

    async def detokenize(self, ids: list[int]) -> str:
        async def attempt(replica: Replica) -> str:
            return text_field(await self.detokenize_on(replica, ids), self.engine.name)

        return await self.http.call(attempt)

    async def detokenize_on(self, replica: Replica, ids: list[int]) -> Any:
        data = await self.http.request_json(replica, "/detokenize", {"model": self.engine.model, "tokens": ids})
        return data.get("prompt")

    async def render_chat_on_server(
        self, messages: list[Message], tools: list[dict[str, Any]] | None, add_generation_prompt: bool
    ) -> str:
        raise ConfigurationError(
            f"engine {self.engine.name!r}: the server exposes no chat template; set chat_template or tokenizer_from"
        )

    async def is_end_token(self, token: int, reason: Any) -> bool:
        """Whether the last token of a step that finished with "stop" and no stop string is the end of sequence
        (the contract leaves it out). A server that reports the token in ``reason`` (an int) is believed."""
        info = self.engine.info
        if isinstance(reason, int):
            return token == reason
        if token in info.eos_token_ids:
            return True
        return bool(info.eos_token) and await self.engine.token_text(token) == info.eos_token

    # ------------------------------------------------------------------------------ requests
    def sampling_fields(self, sampling: SamplingParams) -> dict[str, Any]:
        fields: dict[str, Any] = {"temperature": max(0.0, sampling.temperature), "top_p": sampling.top_p}
        if sampling.top_k:
            fields["top_k"] = sampling.top_k
        if sampling.seed is not None:
            fields["seed"] = sampling.seed
        return fields

    def extras(self) -> dict[str, Any]:
        """Fields beyond OpenAI's that make the server return token ids and keep stop strings."""
        return {}

    def glimpse_request(self, prompt: list[int] | str, k: int, sampling: SamplingParams) -> tuple[str, dict[str, Any]]:
        body = {"model": self.engine.model, "prompt": prompt, "max_tokens": 1, "logprobs": k}
        return "/v1/completions", {**body, **self.sampling_fields(sampling), **self.extras()}

    def glimpse_text(self, choice: dict[str, Any], token_id: int) -> str:
        return str(choice.get("text") or "")

    def parse_glimpse(self, data: dict[str, Any], replica: Replica) -> Glimpse:
        e = self.engine
        try:
            choice = data["choices"][0]
            token_id, logprob, top = openai_first_token(choice, choice["logprobs"])
            text = self.glimpse_text(choice, token_id)
            cached = cached_tokens(data)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise MalformedResponseError(
                f"engine {e.name!r}: {replica.url}/v1/completions answered without logprobs "
                f"({type(exc).__name__}: {exc}); the server must return top-{e.k} logprobs and token ids",
                engine=e.name,
            ) from None
        is_eos = choice.get("finish_reason") == "stop" and choice.get("stop_reason") is None
        return self.glimpse(token_id, "" if is_eos else text, logprob, top, is_eos=is_eos, cached=cached)

    def glimpse(
        self, token_id: int, text: str, logprob: float, top: list[tuple[int, float]], *, is_eos: bool, cached: int
    ) -> Glimpse:
        """A glimpse with the bounded entropy estimate of its top-k logprobs."""
        e = self.engine
        if not top:
            raise MalformedResponseError(
                f"engine {e.name!r}: the server returned no top logprobs; it must allow k={e.k} "
                "(vLLM: --max-logprobs; trtllm-serve: PyTorch backend or gather_generation_logits)",
                engine=e.name,
            )
        est = entropy_from_topk([v for _, v in top], e.info.vocab_size)
        return Glimpse(
            token_id=token_id,
            text=text,
            logprob=logprob,
            entropy=est.estimate,
            entropy_kind="top-k estimate",
            is_eos=is_eos,
            top_k=len(top),
            captured_mass=est.captured_mass,
            entropy_error_bound=est.error_bound,
            top_logprobs=tuple(top),
            cached_tokens=cached,
        )

    async def score(self, replica: Replica, full: list[int], start: int) -> TokenScores:
        """Log-probabilities of ``full[start:]`` (dialects with ``can_score`` only)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------ a streamed step
    def step_text(self, ids: list[int], text: str, emitted: str) -> str:
        """The text a stream chunk adds (the server's; trtllm-serve leaves decoding to the engine)."""
        return text

    def step_tail(self, ids: list[int], emitted: str) -> str:
        """Text still owed when the stream ends (a character a locally decoding dialect held back)."""
        return ""

    async def final_text(self, ids: list[int], text: str, matched: str | None) -> str:
        """The text of a step that ended at a stop string, from its ids. vLLM (measured) cuts the text right
        after the stop string, also inside a token, while ``token_ids`` hold that whole token: the context
        continues from the ids, so the text must be theirs."""
        if matched is None or not ids:
            return text
        full = await self.engine.detokenize(ids)
        return full if full.startswith(text) else text

    async def generate(
        self,
        replica: Replica,
        prompt: list[int] | str,
        max_tokens: int,
        stops: list[str],
        sampling: SamplingParams,
        emit: Emit,
    ) -> Completion:
        e = self.engine
        body: dict[str, Any] = {
            "model": e.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
            **self.sampling_fields(sampling),
            **self.extras(),
        }
        if stops:
            body["stop"] = stops
        ids: list[int] = []
        emitted = ""
        have_ids = True
        finish_reason: str | None = None
        stop_reason: Any = None
        cached = 0
        # closed on every exit (an error in this loop too), which closes the HTTP stream and frees the slot
        async with contextlib.aclosing(self.http.sse(replica, "/v1/completions", body)) as events:
            async for event in events:
                cached = cached_tokens(event) or cached
                for choice in event.get("choices") or []:
                    text = choice.get("text") or ""
                    tokens = choice.get("token_ids")
                    have_ids = have_ids and tokens is not None
                    tokens = int_list([] if tokens is None else tokens, e.name, "stream token_ids")
                    # vLLM and trtllm-serve say `stop_reason`, SGLang `matched_stop` (a string or a token id)
                    reason = choice.get("stop_reason", choice.get("matched_stop"))
                    if choice.get("finish_reason") == "stop" and not isinstance(reason, str) and tokens:
                        tokens, text = await self._drop_end_token(tokens, text, reason)
                    ids.extend(tokens)
                    text = self.step_text(ids, text, emitted)
                    emitted += text
                    emit(Delta(tuple(tokens), text))
                    if choice.get("finish_reason"):
                        finish_reason, stop_reason = choice["finish_reason"], reason
        if finish_reason is None:
            raise self.stream_cut(replica)
        tail = self.step_tail(ids, emitted)
        emit(Delta((), tail))  # the engine's emit drops empty deltas
        text = emitted + tail
        matched = stop_reason if isinstance(stop_reason, str) and stop_reason in stops else None
        if matched is None and finish_reason == "stop":
            matched = next((s for s in stops if s in text), None)
        if matched is not None and matched not in text:  # a server that trimmed the stop string anyway
            emit(Delta((), matched))
            text += matched
        if have_ids:
            full = await self.final_text(ids, text, matched)  # ``text`` or a longer text that starts with it
            emit(Delta((), full[len(text) :]))
            text = full
        else:
            # the server returned no token ids: re-tokenise the step (counted; exact prefixes not guaranteed)
            e.stats.extra["retokenized_steps"] += 1
            ids = await self.tokenize(replica, text)
        finish: FinishReason = "length" if finish_reason == "length" else ("stop" if matched else "eos")
        return Completion(
            token_ids=tuple(ids),
            text=text,
            finish_reason=finish,
            stop_string=matched,
            prompt_tokens=len(prompt) if isinstance(prompt, list) else 0,
            cached_tokens=cached,
        )

    async def _drop_end_token(self, tokens: list[int], text: str, reason: Any) -> tuple[list[int], str]:
        """Remove the end-of-sequence token from the last chunk of a step, with its text if the server wrote it."""
        last = tokens[-1]
        if not await self.is_end_token(last, reason):
            return tokens, text
        piece = await self.engine.token_text(last)
        if piece and text.endswith(piece):
            text = text[: -len(piece)]
        return tokens[:-1], text

    def stream_cut(self, replica: Replica) -> EngineFailureError:
        """A stream that ended without a finish reason: transient, as the step can be asked for again."""
        return EngineFailureError(
            f"engine {self.engine.name!r}: {replica.url} closed the stream before the end of the step",
            transient=True,
            engine=self.engine.name,
        )


# ------------------------------------------------------------------------------------ helpers
async def model_cards(http: ServerTransport, replica: Replica) -> list[dict[str, Any]]:
    """The model cards of ``GET /v1/models`` (``{"data": [...]}``); anything else is a typed error, since every
    fact the engine starts from (dialect, vocabulary, window) is read from them."""
    data = (await http.request_json(replica, "/v1/models")).get("data", [])
    if not isinstance(data, list):
        raise MalformedResponseError(
            f"engine {http.engine!r}: {replica.url}/v1/models answered 'data' as {type(data).__name__}, "
            "not a list of model cards: is this an OpenAI-compatible server? Check base_urls",
            engine=http.engine,
        )
    return [m for m in data if isinstance(m, dict)]


def cached_tokens(data: dict[str, Any]) -> int:
    """Prompt tokens the server served from its prefix cache, where it reports them (OpenAI's usage field)."""
    usage = data.get("usage") or {}
    return int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)


def int_list(value: Any, engine: str, what: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise MalformedResponseError(
            f"engine {engine!r}: {what} is not a list of token ids: {value!r:.80}", engine=engine
        )
    return value


def text_field(value: Any, engine: str) -> str:
    if not isinstance(value, str):
        raise MalformedResponseError(f"engine {engine!r}: /detokenize gave no text", engine=engine)
    return value


def _token_id(token: Any) -> int:
    """vLLM's ``return_tokens_as_token_ids`` spells tokens ``"token_id:123"``; otherwise ids are unknown (-1)."""
    if isinstance(token, str) and token.startswith("token_id:"):
        return int(token[len("token_id:") :])
    return -1


def openai_first_token(choice: dict[str, Any], lp: dict[str, Any]) -> tuple[int, float, list[tuple[int, float]]]:
    """(token id, logprob, top list) of the first generated token, from the legacy completions logprobs
    (``tokens``/``token_logprobs``/``top_logprobs`` dicts) that vLLM, SGLang and trtllm-serve return."""
    # the server's JSON, unchecked: a missing list fails below (TypeError), which the caller reports as malformed
    ids: Any = choice.get("token_ids")
    top_map = lp["top_logprobs"][0] or {}
    top = [(_token_id(tok), float(v)) for tok, v in top_map.items()]
    token_id = int(ids[0]) if ids else _token_id(lp["tokens"][0])
    if token_id < 0:
        raise ValueError("the server returned no token id for the glimpsed token")
    return token_id, float(lp["token_logprobs"][0]), top


def hf_template(directory: Path, override: str | None) -> tuple[str | None, str, str]:
    """The chat template and BOS/EOS strings of a Hugging Face model directory (no transformers needed)."""
    cfg_path = directory / "tokenizer_config.json"
    if not cfg_path.is_file():
        raise ConfigurationError(f"tokenizer_from={directory}: no tokenizer_config.json; give a HF model directory")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    template = override or cfg.get("chat_template")
    jinja = directory / "chat_template.jinja"
    if template is None and jinja.is_file():
        template = jinja.read_text(encoding="utf-8")

    def token(value: Any) -> str:
        return str(value.get("content", "")) if isinstance(value, dict) else str(value or "")

    return template, token(cfg.get("bos_token")), token(cfg.get("eos_token"))
