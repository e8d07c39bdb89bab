"""trtllm-serve: ``/v1/completions`` with only the fields its protocol declares, decoded here.

trtllm-serve forbids undeclared request fields, and returns token ids only with ``detokenize: false``; its
text is then empty, so this dialect decodes the ids itself with the model's ``tokenizer.json``
(``tokenizer_from``, which it needs anyway: the server has no ``/detokenize`` and exposes no chat template).
Tokenising goes to ``/_internal/tokenize``.

Why completions and not chat completions: only a completion takes a token-id prompt, so only it glimpses at
the exact context the router holds. Its ``logprobs`` need the PyTorch backend or an engine built with
``gather_generation_logits`` (older releases rejected it; the glimpse then fails with a typed error).
"""

from __future__ import annotations

from typing import Any

from glimp_llm.engines.replicas import Replica
from glimp_llm.engines.servers.dialect import Dialect, int_list


class TrtllmServe(Dialect):
    name = "trtllm"
    owned_by = "tensorrt_llm"

    def extras(self) -> dict[str, Any]:
        return {"include_stop_str_in_output": True, "skip_special_tokens": False, "detokenize": False}

    async def tokenize(self, replica: Replica, text: str) -> list[int]:
        body = {"model": self.engine.model, "prompt": text}
        data = await self.http.request_json(replica, "/_internal/tokenize", body)
        return int_list(data.get("tokens"), self.engine.name, "tokenize tokens")

    async def detokenize(self, ids: list[int]) -> str:
        return self.engine.local_decode(ids)

    def glimpse_text(self, choice: dict[str, Any], token_id: int) -> str:
        return self.engine.local_decode([token_id])

    def step_text(self, ids: list[int], text: str, emitted: str) -> str:
        """All ids decoded, minus what was emitted; a trailing U+FFFD is a character whose bytes are still
        incomplete, and waits for the next token."""
        decoded = self.engine.local_decode(ids).rstrip("\ufffd")
        return decoded[len(emitted) :]

    def step_tail(self, ids: list[int], emitted: str) -> str:
        return self.engine.local_decode(ids)[len(emitted) :]

    async def final_text(self, ids: list[int], text: str, matched: str | None) -> str:
        return text  # decoded from these very ids already
