"""``HashEmbedding``: an offline, dependency-free LlamaIndex embedding for the examples and tests.

It lives here, not in the package, because it is a stand-in for them, not something a user should
deploy: ``examples/llamaindex_query_engine.py`` imports it from beside itself, and the LlamaIndex tests
from this folder.

No embedding model can be downloaded here, and LlamaIndex's ``MockEmbedding`` returns one constant vector,
which makes retrieval order meaningless. A hashed bag of words is deterministic, needs nothing, and
retrieves lexically: documents that share (stemmed) words with the query score higher. It is a
retrieval stand-in, not a semantic model; swap in a real embedding for real use.
"""

from __future__ import annotations

import hashlib
import math
import re

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.bridge.pydantic import Field
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("examples/hash_embedding.py needs llama-index-core: pip install 'glimp-llm[llamaindex]'") from exc

__all__ = ["HashEmbedding"]

_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "how",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "with",
        "does",
        "do",
        "did",
    ]
)


def _stem(word: str) -> str:
    """A crude suffix strip so that 'harvests'/'harvested'/'harvest' meet (enough for lexical retrieval)."""
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


class HashEmbedding(BaseEmbedding):
    """Hashed bag of stemmed words, L2-normalised. Identical text always gives the identical vector."""

    dim: int = Field(default=512, ge=8, description="vector size (hash buckets)")

    @classmethod
    def class_name(cls) -> str:
        return "HashEmbedding"

    def embed(self, text: str) -> list[float]:
        vec = [0.0] * self.dim
        for word in _WORD.findall(text.lower()):
            if word in _STOPWORDS:
                continue
            digest = hashlib.blake2b(_stem(word).encode(), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "little") % self.dim
            vec[bucket] += 1.0 if digest[4] & 1 else -1.0  # signed hashing keeps collisions unbiased
        norm = math.sqrt(sum(v * v for v in vec))
        return [v / norm for v in vec] if norm else vec

    def _get_query_embedding(self, query: str) -> list[float]:
        return self.embed(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self.embed(text)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self.embed(query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return self.embed(text)
