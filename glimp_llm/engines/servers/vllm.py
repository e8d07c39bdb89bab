"""vLLM: ``/v1/completions`` with token ids, stop strings kept, scoring via ``prompt_logprobs``.

Measured on vLLM 0.32 (CPU, ``tests/test_vllm_server.py``):

* ``return_token_ids`` returns the ids of the step; ``include_stop_str_in_output`` keeps the stop string;
  ``skip_special_tokens: false`` keeps special tokens in the text, as the ids hold them;
* a glimpse adds ``return_tokens_as_token_ids``: the top logprobs are keyed by ``"token_id:N"`` instead of by
  decoded text, where two tokens that decode alike would collide and lose probability mass from the estimate;
* a step that ends with the end of sequence has finish "stop", no ``stop_reason``, and the end id in
  ``token_ids`` (its text, ``<|im_end|>``, in ``text``): both are dropped;
* a stop string that ends inside a token cuts the text there while the ids hold the whole token: the step's
  text is re-derived from its ids (the base does that for every dialect that returns ids);
* ``/tokenize`` renders chat messages with the model's template when no template is configured.
"""

from __future__ import annotations

from typing import Any

from glimp_llm.engines.base import Message, SamplingParams, TokenScores
from glimp_llm.engines.replicas import Replica
from glimp_llm.engines.servers.dialect import Dialect, cached_tokens, int_list
from glimp_llm.errors import MalformedResponseError


class VLLM(Dialect):
    name = "vllm"
    owned_by = "vllm"
    can_score = True

    def extras(self) -> dict[str, Any]:
        return {"return_token_ids": True, "include_stop_str_in_output": True, "skip_special_tokens": False}

    def glimpse_request(self, prompt: list[int] | str, k: int, sampling: SamplingParams) -> tuple[str, dict[str, Any]]:
        path, body = super().glimpse_request(prompt, k, sampling)
        return path, {**body, "return_tokens_as_token_ids": True}

    async def is_end_token(self, token: int, reason: Any) -> bool:
        return token == reason if isinstance(reason, int) else True

    async def render_chat_on_server(
        self, messages: list[Message], tools: list[dict[str, Any]] | None, add_generation_prompt: bool
    ) -> str:
        body: dict[str, Any] = {
            "model": self.engine.model,
            "messages": messages,
            "add_generation_prompt": add_generation_prompt,
            "add_special_tokens": False,
        }
        if tools:
            body["tools"] = tools
        data = await self.http.call(lambda r: self.http.request_json(r, "/tokenize", body))
        return await self.engine.detokenize(int_list(data.get("tokens"), self.engine.name, "/tokenize tokens"))

    async def score(self, replica: Replica, full: list[int], start: int) -> TokenScores:
        """``prompt_logprobs=1`` on the prompt ``context + continuation`` (``max_tokens=1``) gives, for every
        prompt position, the actual token's logprob under the full distribution at temperature 1 and the
        rank-1 token beside it (the large model's own choice, which verification needs); the one generated
        token is the price of the request. The prefill leaves the sequence in the prefix cache, which the
        next step from there would compute anyway."""
        e = self.engine
        body = {
            "model": e.model,
            "prompt": full,
            "max_tokens": 1,
            "prompt_logprobs": 1,
            "temperature": 0.0,
            "return_token_ids": True,
        }
        data = await self.http.request_json(replica, "/v1/completions", body)
        try:
            rows = data["choices"][0]["prompt_logprobs"][start : len(full)]  # a short list fails the zip
            values = tuple(_logprob(row[str(token)]) for row, token in zip(rows, full[start:], strict=True))
            # each row holds the actual token and the top-1: the likelier of them is the model's own choice
            best = [max(((int(k), _logprob(v)) for k, v in row.items()), key=lambda kv: kv[1]) for row in rows]
            scores = TokenScores(
                logprobs=values,
                best_logprobs=tuple(lp for _, lp in best),
                best_ids=tuple(token for token, _ in best),
                cached_tokens=cached_tokens(data),
            )
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise MalformedResponseError(
                f"engine {e.name!r}: {replica.url}/v1/completions answered without prompt_logprobs for "
                f"every position ({type(exc).__name__}: {exc}); is it vLLM?",
                engine=e.name,
            ) from None
        return scores


def _logprob(entry: Any) -> float:
    """One ``prompt_logprobs`` entry: ``{"logprob": x, "rank": r, ...}`` (or a bare number in old servers)."""
    return float(entry["logprob"] if isinstance(entry, dict) else entry)
