"""Tests only: the sliver of ``transformers`` the TensorRT-LLM driver uses (``AutoTokenizer.from_pretrained``).

tensorrt-llm depends on transformers, so on a GPU host the real one is there; CI has neither. This fake
loads a tokenizer directory written by the tests (``tokenizer_config.json`` + ``tokenizer.json``) and
behaves like an HF fast tokenizer over the scripted engine's fixed vocabulary, so the fake TensorRT-LLM
model (which uses the same vocabulary) and the driver agree on ids exactly as a real model and its
tokenizer do. Like HF, a directory without tokenizer files raises ``OSError``.

As an HF fast tokenizer does, it decodes through ``backend_tokenizer``, a real ``tokenizers.Tokenizer`` (a
word-level model over the same pieces, the special tokens marked special, pieces joined as they are), so the
driver's incremental decoding (``tokenizers``' ``DecodeStream``) runs the real library against it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models

from glimp_llm.engines.scripted import SCRIPTED_TEMPLATE, SPECIAL_TOKENS, shared_tokenizer

__glimp_fake__ = True


def _backend(pieces: dict[str, int]) -> Tokenizer:
    """The scripted vocabulary as a ``tokenizers.Tokenizer``: what ``PreTrainedTokenizerFast.backend_tokenizer``
    is for a real model. Only decoding is used (encoding stays the scripted longest match)."""
    backend = Tokenizer(models.WordLevel(vocab=dict(pieces), unk_token="?"))
    backend.decoder = decoders.Fuse()  # the pieces carry their own spaces: join them as they are
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return backend


class FakeFastTokenizer:
    """HF-like tokenizer: ``len``, ``encode``, ``decode``, ``get_vocab``, ``apply_chat_template``,
    ``backend_tokenizer``."""

    def __init__(self, chat_template: str | None) -> None:
        self._tok = shared_tokenizer()
        self.chat_template = chat_template
        self.eos_token = "<eos>"
        self.eos_token_id = self._tok.eos_id
        self.bos_token: str | None = None
        self.bos_token_id: int | None = None
        self.backend_tokenizer = _backend(self._tok.ids)

    def __len__(self) -> int:
        return len(self._tok)

    def get_vocab(self) -> dict[str, int]:
        return dict(self._tok.ids)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._tok.encode(text)

    def decode(self, token_ids: list[int], skip_special_tokens: bool = False) -> str:
        return str(self.backend_tokenizer.decode([int(t) for t in token_ids], skip_special_tokens=skip_special_tokens))

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
