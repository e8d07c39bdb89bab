"""Next-token entropy: exact from full logits, or estimated (with a bound) from top-k logprobs.

GlimpRouter's signal is the entropy (natural log) of the small model's next-token distribution at the
start of a step. Where the engine hands us the full logits (llama.cpp, TensorRT-LLM), we compute it
exactly in float64. Where a server only returns the top-k logprobs (vLLM, SGLang, trtllm-serve,
llama-server), the missing tail mass ``r = 1 - sum(p_topk)`` makes the exact value unknowable, but it is
bounded:

* every tail token has ``p <= p_min`` (the smallest captured probability), so the tail contributes at
  least ``r * log(1 / p_min)``;
* at most ``V - k`` tail tokens share the mass ``r``, so the tail contributes at most
  ``r * log((V - k) / r)`` (all tail tokens equally likely).

We report the midpoint of that interval as the estimate, with half its width as the error bound.
The paper's own code instead *renormalises* the top-20 probabilities; that quantity is available as
:func:`renormalized_topk_entropy` for paper-faithful runs. Note it is a different quantity (bounded
by ``log k``), so thresholds tuned on one do not transfer to the other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from glimp_llm.errors import EngineFailureError


def entropy_from_logits(
    logits: np.ndarray | Sequence[float], vocab_size: int | None = None, temperature: float = 1.0
) -> float:
    """Exact entropy (nats) of ``softmax(logits / temperature)`` over the first ``vocab_size`` entries.

    ``vocab_size`` excludes padded rows: engines such as TensorRT-LLM pad the LM head to a multiple of
    64/128 and the padded logits are not ``-inf``, so including them inflates the entropy.
    ``-inf`` logits (masked tokens) contribute zero. NaN or +inf logits are an engine failure.
    """
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    if vocab_size is not None:
        if vocab_size <= 0 or vocab_size > x.shape[0]:
            raise ValueError(f"vocab_size={vocab_size} is outside 1..{x.shape[0]} (the logits' width)")
        x = x[:vocab_size]
    if temperature <= 0:
        raise ValueError("temperature must be > 0 to define an entropy; use 1.0 for the raw distribution")
    if temperature != 1.0:
        x = x / temperature
    if np.isnan(x).any() or np.isposinf(x).any():
        raise EngineFailureError("the engine returned NaN or +inf logits; the model output is unusable")
    finite = np.isfinite(x)
    if not finite.any():
        raise EngineFailureError("every logit is -inf; the engine masked the whole vocabulary")
    xf = x[finite]
    m = xf.max()
    shifted = xf - m
    weights = np.exp(shifted)
    z = weights.sum()
    # H = log Z - E[x - m]  with p = exp(x - m) / Z
    h = math.log(z) - float(np.dot(weights, shifted)) / z
    return max(float(h), 0.0)


def log_softmax(logits: np.ndarray, vocab_size: int | None = None) -> np.ndarray:
    """Numerically stable log-softmax in float64 over the first ``vocab_size`` entries."""
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    if vocab_size is not None:
        x = x[:vocab_size]
    m = x[np.isfinite(x)].max()
    shifted = x - m
    return shifted - math.log(np.exp(shifted).sum())


@dataclass(frozen=True, slots=True)
class TopKEntropy:
    """An entropy estimate from the top-k probabilities of a distribution over ``vocab_size`` tokens."""

    estimate: float
    lower: float
    upper: float
    k: int
    captured_mass: float

    @property
    def error_bound(self) -> float:
        """The largest possible distance between :attr:`estimate` and the true entropy."""
        return (self.upper - self.lower) / 2.0


def entropy_from_topk(logprobs: Sequence[float], vocab_size: int) -> TopKEntropy:
    """Bounded estimate of the full-vocabulary entropy from the top-k logprobs (any order).

    See the module docstring for the bound. With ``k == vocab_size`` (or a captured mass of 1) the
    estimate is exact and the interval has zero width.
    """
    lp = np.asarray(list(logprobs), dtype=np.float64)
    k = int(lp.shape[0])
    if k == 0:
        raise ValueError("entropy_from_topk needs at least one logprob")
    if vocab_size < k:
        raise ValueError(f"vocab_size={vocab_size} is smaller than the number of logprobs k={k}")
    if np.isnan(lp).any() or (lp > 1e-6).any():
        raise EngineFailureError("logprobs must be finite and <= 0; the server returned invalid values")
    p = np.exp(lp)
    captured = float(min(p.sum(), 1.0))
    finite = p > 0
    h_captured = float(-(p[finite] * lp[finite]).sum())
    r = max(0.0, 1.0 - captured)
    tail_slots = vocab_size - k
    if r <= 1e-12 or tail_slots == 0:
        return TopKEntropy(h_captured, h_captured, h_captured, k, captured)
    p_min = float(p[finite].min()) if finite.any() else r  # > 0 either way
    lower = h_captured + r * math.log(1.0 / p_min)
    upper = max(h_captured + r * math.log(tail_slots / r), lower)
    return TopKEntropy((lower + upper) / 2.0, lower, upper, k, captured)


def renormalized_topk_entropy(logprobs: Sequence[float]) -> float:
    """The paper's signal: entropy of the top-k probabilities renormalised to sum to one (<= log k)."""
    lp = np.asarray(list(logprobs), dtype=np.float64)
    if lp.size == 0:
        raise ValueError("renormalized_topk_entropy needs at least one logprob")
    p = np.exp(lp - lp.max())
    p /= p.sum()
    nz = p > 0
    return float(-(p[nz] * np.log(p[nz])).sum())


def top_k_logprobs(logits: np.ndarray, k: int, vocab_size: int | None = None) -> list[tuple[int, float]]:
    """The ``k`` most likely ``(token_id, logprob)`` pairs of a logits row, most likely first."""
    logp = log_softmax(logits, vocab_size)
    k = min(k, logp.shape[0])
    idx = np.argpartition(-logp, k - 1)[:k]
    idx = idx[np.argsort(-logp[idx], kind="stable")]
    return [(int(i), float(logp[i])) for i in idx]
