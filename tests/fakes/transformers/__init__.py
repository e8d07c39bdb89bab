"""Tests only: the sliver of ``transformers`` the TensorRT-LLM driver uses (``AutoTokenizer.from_pretrained``).

tensorrt-llm depends on transformers, so on a GPU host the real one is there; CI has neither. This fake
loads a tokenizer directory written by the tests (``tokenizer_config.json`` + ``tokenizer.json``) and
behaves like an HF fast tokenizer over the scripted engine's fixed vocabulary, so the fake TensorRT-LLM
model (which uses the same vocabulary) and the driver agree on ids exactly as a real model and its
tokenizer do. Like HF, a directory without tokenizer files raises ``OSError``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from glimp_llm.engines.scripted import SCRIPTED_TEMPLATE, SPECIAL_TOKENS, shared_tokenizer

__glimp_fake__ = True


class FakeFastTokenizer:
    """HF-like tokenizer: ``len``, ``encode``, ``decode``, ``get_vocab``, ``apply_chat_template``."""

    def __init__(self, chat_template: str | None) -> None:
        self._tok = shared_tokenizer()
        self.chat_template = chat_template
        self.eos_token = "<eos>"
        self.eos_token_id = self._tok.eos_id
        self.bos_token: str | None = None
        self.bos_token_id: int | None = None

    def __len__(self) -> int:
        return len(self._tok)

    def get_vocab(self) -> dict[str, int]:
        return dict(self._tok.ids)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._tok.encode(text)

    def decode(self, token_ids: list[int], skip_special_tokens: bool = False) -> str:
        pieces = self._tok.pieces
        out = []
        for t in token_ids:
            piece = pieces[int(t)]
            if skip_special_tokens and piece in SPECIAL_TOKENS:
                continue
            out.append(piece)
        return "".join(out)

    def apply_chat_template(
        self,
        conversation: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = False,
        tokenize: bool = True,
        **kwargs: Any,
    ) -> str | list[int]:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        if not self.chat_template:
            raise ValueError("Cannot use chat template functions because tokenizer.chat_template is not set")
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.filters["tojson"] = lambda v, **_: json.dumps(v)
        text = env.from_string(self.chat_template).render(
            messages=conversation, tools=tools, add_generation_prompt=add_generation_prompt, **kwargs
        )
        return self.encode(text) if tokenize else text


class AutoTokenizer:
    @classmethod
    def from_pretrained(cls, path: str, **kwargs: Any) -> FakeFastTokenizer:
        p = Path(path)
        cfg = p / "tokenizer_config.json"
        if not cfg.is_file() or not (p / "tokenizer.json").is_file():
            raise OSError(f"Can't load tokenizer for '{path}'. Make sure '{path}' is a directory with tokenizer files.")
        data = json.loads(cfg.read_text())
        return FakeFastTokenizer(data.get("chat_template", SCRIPTED_TEMPLATE))
