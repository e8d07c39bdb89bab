"""llama-server (llama.cpp's HTTP server), asked through its native routes.

Why not its ``/v1/completions``: the native ``/completion`` takes a token-id prompt with ``cache_prompt``,
returns the full top-``n_probs`` list with token ids, and ``/props`` holds the chat template, BOS/EOS and the
window, so nothing has to be configured by hand. Sampling is pinned (``min_p=0``, ``top_k`` as asked): the
server's own defaults (top_k 40, min_p 0.05) would change the distribution the step is drawn from.
"""

from __future__ import annotations

import contextlib
from typing import Any

from glimp_llm.engines.base import Completion, Delta, EngineInfo, FinishReason, Glimpse, SamplingParams
from glimp_llm.engines.replicas import Replica
from glimp_llm.engines.servers.dialect import Dialect, Emit, int_list, model_cards
from glimp_llm.errors import MalformedResponseError


class LlamaServer(Dialect):
    name = "llama.cpp"
    owned_by = "llamacpp"

    async def describe(self, replica: Replica) -> EngineInfo:
        e = self.engine
        props = await self.http.request_json(replica, "/props")
        cards = await model_cards(self.http, replica)
        meta: dict[str, Any] = next((m["meta"] for m in reversed(cards) if isinstance(m.get("meta"), dict)), {})
        vocab = e.vocab_size_setting or meta.get("n_vocab")
        window = e.context_window_setting or (props.get("default_generation_settings") or {}).get("n_ctx")
        if not isinstance(vocab, int) or not isinstance(window, int):
            raise MalformedResponseError(
                f"engine {e.name!r}: llama-server gave no n_vocab/n_ctx in /v1/models and /props; "
                "set vocab_size and context_window in the config",
                engine=e.name,
            )
        bos, eos = str(props.get("bos_token") or ""), str(props.get("eos_token") or "")
        plain = await self.tokenize(replica, "a")
        special = await self.tokenize(replica, "a", add_special=True)
        eos_ids = frozenset(await self.tokenize(replica, eos)) if eos else frozenset()
        template = e.chat_template_setting or props.get("chat_template") or None
        return await self.info(replica, vocab, window, template, bos, eos, len(special) > len(plain), eos_ids)

    async def tokenize(self, replica: Replica, text: str, *, add_special: bool = False) -> list[int]:
        body = {"content": text, "add_special": add_special, "parse_special": True}
        data = await self.http.request_json(replica, "/tokenize", body)
        return int_list(data.get("tokens"), self.engine.name, "/tokenize tokens")

    async def detokenize_on(self, replica: Replica, ids: list[int]) -> Any:
        return (await self.http.request_json(replica, "/detokenize", {"tokens": ids})).get("content")

    def sampling_fields(self, sampling: SamplingParams) -> dict[str, Any]:
        return {
            "temperature": max(0.0, sampling.temperature),
            "top_p": sampling.top_p,
            "top_k": sampling.top_k,
            "min_p": 0.0,
            "seed": -1 if sampling.seed is None else sampling.seed,
        }

    def glimpse_request(self, prompt: list[int] | str, k: int, sampling: SamplingParams) -> tuple[str, dict[str, Any]]:
        body = {"prompt": prompt, "n_predict": 1, "n_probs": k, "cache_prompt": True, "return_tokens": True}
        return "/completion", {**body, **self.sampling_fields(sampling)}

    def parse_glimpse(self, data: dict[str, Any], replica: Replica) -> Glimpse:
        e = self.engine
        try:
            first = data["completion_probabilities"][0]
            top = [(int(t["id"]), float(t["logprob"])) for t in first["top_logprobs"]]
            token_id, logprob, text = int(first["id"]), float(first["logprob"]), str(data.get("content", ""))
            cached = int((data.get("timings") or {}).get("cache_n", 0))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise MalformedResponseError(
                f"engine {e.name!r}: {replica.url}/completion answered without completion_probabilities "
                f"({type(exc).__name__}: {exc}); is it llama-server?",
                engine=e.name,
            ) from None
        is_eos = data.get("stop_type") == "eos" or token_id in e.info.eos_token_ids
        if not text and not is_eos:
            text = str(first.get("token", ""))
        return self.glimpse(token_id, "" if is_eos else text, logprob, top, is_eos=is_eos, cached=cached)

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
        body = {
            "prompt": prompt,
            "n_predict": max_tokens,
            "stop": stops,
            "stream": True,
            "cache_prompt": True,
            "return_tokens": True,
            **self.sampling_fields(sampling),
        }
        ids: list[int] = []
        text = ""
        final: dict[str, Any] | None = None
        # closed on every exit (an error in this loop too), which closes the HTTP stream and frees the slot
        async with contextlib.aclosing(self.http.sse(replica, "/completion", body)) as events:
            async for event in events:
                tokens = int_list(event.get("tokens") or [], e.name, "stream tokens")
                content = event.get("content", "")
                if not isinstance(content, str):
                    raise MalformedResponseError(f"engine {e.name!r}: stream content is not text", engine=e.name)
                ids.extend(tokens)
                text += content
                emit(Delta(tuple(tokens), content))
                if event.get("stop"):
                    final = event
        if final is None:
            raise self.stream_cut(replica)
        stop_type = final.get("stop_type")
        matched: str | None = None
        finish: FinishReason = "length"
        if stop_type == "eos":
            finish = "eos"
            # the end token is streamed last; any end-of-generation token ends a step, not only eos_token (SmolLM2
            # ends on <|endoftext|> as well as <|im_end|>), and none is output (the engine contract)
            ids = ids[:-1]
        elif stop_type == "word":
            finish, matched = "stop", str(final.get("stopping_word") or "") or None
            # llama-server withholds the stop string (and what followed it in the same token) from `content`;
            # the token ids are complete, so the exact text is theirs
            # (its own retried call: a pooled connection the server closed meanwhile must not fail the step)
            full = await e.detokenize(ids)
            emit(Delta((), full[len(text) :] if full.startswith(text) else ""))
            text = full
        return Completion(
            token_ids=tuple(ids),
            text=text,
            finish_reason=finish,
            stop_string=matched,
            prompt_tokens=len(prompt) if isinstance(prompt, list) else int(final.get("tokens_evaluated", 0)),
            cached_tokens=int((final.get("timings") or {}).get("cache_n", 0)),
        )
