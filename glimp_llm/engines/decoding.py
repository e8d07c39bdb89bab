"""Decoding helpers shared by the in-process engines: token choice, UTF-8 pieces, stop strings."""

from __future__ import annotations

import codecs
from collections.abc import Sequence

import numpy as np

from glimp_llm.engines.base import SamplingParams


def choose_token(
    logits: np.ndarray, vocab_size: int, sampling: SamplingParams, rng: np.random.Generator
) -> tuple[int, float]:
    """Pick the next token from a logits row and return ``(token_id, logprob)`` at temperature 1.

    Greedy is an argmax (no softmax over the vocabulary unless the logprob is wanted, which it is only
    once per call: cheap). Sampling applies temperature, then top-k, then top-p (nucleus), as vLLM does.
    """
    row = logits[:vocab_size]
    if sampling.greedy:
        token = int(np.argmax(row))
    else:
        x = row.astype(np.float64) / sampling.temperature
        if sampling.top_k and sampling.top_k < x.shape[0]:
            kth = np.partition(x, -sampling.top_k)[-sampling.top_k]
            x = np.where(x >= kth, x, -np.inf)
        x = x - x.max()
        p = np.exp(x)
        p /= p.sum()
        if sampling.top_p < 1.0:
            order = np.argsort(-p, kind="stable")
            cumulative = np.cumsum(p[order])
            keep = order[: int(np.searchsorted(cumulative, sampling.top_p) + 1)]
            nucleus = np.zeros_like(p)
            nucleus[keep] = p[keep]
            p = nucleus / nucleus.sum()
        token = int(rng.choice(p.shape[0], p=p))
    return token, token_logprob(row, token)


def token_logprob(row: np.ndarray, token: int) -> float:
    """log softmax(row)[token] at temperature 1, in float64."""
    x = row.astype(np.float64)
    m = x[np.isfinite(x)].max()
    return float(x[token] - m - np.log(np.exp(x - m).sum()))


class Utf8Pieces:
    """Turns a stream of token byte strings into text without splitting multi-byte characters."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


def first_stop(text: str, stops: Sequence[str], start: int = 0) -> tuple[int, str] | None:
    """The earliest stop string in ``text[start:]`` as ``(index, stop)``: the one scanner of stop strings
    (engines, the router's steps and request text, and the chat layer's streaming hold-back)."""
    hits = [(i, s) for s in stops if s and (i := text.find(s, start)) >= 0]
    return min(hits, key=lambda hit: hit[0], default=None)  # the first listed wins a tie


def partial_stop(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that is the beginning (not the whole) of a stop string: what
    a stream must hold back until the next piece says whether the stop string follows."""
    longest = max((len(s) for s in stops), default=0)
    for n in range(min(longest - 1, len(text)), 0, -1):
        tail = text[-n:]
        if any(s.startswith(tail) for s in stops):
            return n
    return 0


class StopMatcher:
    """Finds the first stop string in text produced so far, looking only at the new part."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._longest = max((len(s) for s in self.stops), default=0)
        self.text = ""

    def feed(self, piece: str) -> str | None:
        """Append ``piece``; return the stop string that now occurs, if any."""
        start = max(0, len(self.text) - self._longest + 1)
        self.text += piece
        hit = first_stop(self.text, self.stops, start)
        return hit[1] if hit else None
