"""Entropy against an independent float64 reference: padded vocabulary, -inf, uniform, one-hot, top-k."""

from __future__ import annotations

import math

import numpy as np
import pytest

from glimp_llm.entropy import (
    entropy_from_logits,
    entropy_from_topk,
    renormalized_topk_entropy,
    top_k_logprobs,
)
from glimp_llm.errors import EngineFailureError


def reference_entropy(logits: np.ndarray) -> float:
    """Direct definition, in float64, written differently from the implementation on purpose."""
    x = np.asarray(logits, dtype=np.float64)
    p = np.exp(x - np.max(x))
    p = p / p.sum()
    return float(-sum(pi * math.log(pi) for pi in p if pi > 0))


@pytest.mark.parametrize("seed", range(5))
def test_matches_reference_on_random_logits(seed: int) -> None:
    logits = np.random.default_rng(seed).normal(0, 3, size=5000).astype(np.float32)
    assert entropy_from_logits(logits) == pytest.approx(reference_entropy(logits), abs=1e-9)


def test_uniform_is_log_v_and_one_hot_is_zero() -> None:
    assert entropy_from_logits(np.zeros(1000)) == pytest.approx(math.log(1000), abs=1e-12)
    one_hot = np.full(1000, -1e9)
    one_hot[7] = 0.0
    assert entropy_from_logits(one_hot) == pytest.approx(0.0, abs=1e-9)


def test_padded_rows_are_excluded() -> None:
    real = np.random.default_rng(1).normal(size=100)
    padded = np.concatenate([real, np.full(28, 5.0)])  # padding rows are NOT -inf in TRT-LLM
    assert entropy_from_logits(padded, vocab_size=100) == pytest.approx(reference_entropy(real), abs=1e-9)
    assert abs(entropy_from_logits(padded) - entropy_from_logits(padded, vocab_size=100)) > 0.1


def test_negative_infinity_logits_contribute_nothing() -> None:
    x = np.array([1.0, 2.0, -np.inf, 0.5, -np.inf])
    assert entropy_from_logits(x) == pytest.approx(reference_entropy(np.array([1.0, 2.0, 0.5])), abs=1e-12)


def test_temperature_scales_logits() -> None:
    x = np.random.default_rng(2).normal(size=50)
    assert entropy_from_logits(x, temperature=0.5) == pytest.approx(reference_entropy(x / 0.5), abs=1e-9)


@pytest.mark.parametrize("bad", [np.array([0.0, np.nan]), np.array([0.0, np.inf]), np.array([-np.inf, -np.inf])])
def test_unusable_logits_raise_engine_failure(bad: np.ndarray) -> None:
    with pytest.raises(EngineFailureError):
        entropy_from_logits(bad)


def test_bad_vocab_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        entropy_from_logits(np.zeros(10), vocab_size=11)


def test_topk_bound_contains_the_truth_and_estimate_is_close() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        logits = rng.normal(0, 4, size=3000)
        truth = reference_entropy(logits)
        top = top_k_logprobs(logits, 100)
        est = entropy_from_topk([lp for _, lp in top], vocab_size=3000)
        assert est.lower - 1e-9 <= truth <= est.upper + 1e-9
        assert abs(est.estimate - truth) <= est.error_bound + 1e-9
        assert 0 < est.captured_mass <= 1


def test_topk_with_whole_vocabulary_is_exact() -> None:
    logits = np.random.default_rng(4).normal(size=64)
    top = top_k_logprobs(logits, 64)
    est = entropy_from_topk([lp for _, lp in top], vocab_size=64)
    assert est.error_bound == 0.0
    assert est.estimate == pytest.approx(reference_entropy(logits), abs=1e-9)


def test_topk_rejects_invalid_logprobs() -> None:
    with pytest.raises(EngineFailureError):
        entropy_from_topk([0.5, -1.0], vocab_size=10)
    with pytest.raises(ValueError, match="at least one"):
        entropy_from_topk([], vocab_size=10)


def test_renormalized_topk_is_the_papers_quantity() -> None:
    logits = np.random.default_rng(5).normal(0, 2, size=500)
    top = top_k_logprobs(logits, 20)
    p = np.exp(np.array([lp for _, lp in top]))
    p = p / p.sum()
    expected = float(-(p * np.log(p)).sum())
    assert renormalized_topk_entropy([lp for _, lp in top]) == pytest.approx(expected, abs=1e-12)
    assert renormalized_topk_entropy([lp for _, lp in top]) <= math.log(20) + 1e-12


def test_top_k_logprobs_are_sorted_and_exact() -> None:
    logits = np.array([0.0, 3.0, 1.0, 2.0])
    top = top_k_logprobs(logits, 2)
    assert [t for t, _ in top] == [1, 3]
    z = math.log(sum(math.exp(v) for v in logits))
    assert top[0][1] == pytest.approx(3.0 - z)
