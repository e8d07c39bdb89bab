"""Per-mode statistics from run records: accuracy, latency percentiles, tokens, shares, time split.

Latency ratios are *paired*: a mode is compared with large-only on exactly the problems both ran, so a
sweep mode measured on a subset is not compared with a mean over other problems.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from glimp_llm.bench.runner import Record

REFERENCE_MODE = "large"


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def summarize_mode(records: Sequence[Record]) -> dict[str, Any]:
    """Aggregate one mode's records."""
    n = len(records)
    if n == 0:
        return {"n": 0}
    walls = [r.wall_s for r in records]
    correct = sum(r.correct for r in records)
    accuracy = correct / n
    steps = sum(r.small_steps + r.large_steps for r in records)
    small_tok = sum(r.small_tokens for r in records)
    large_tok = sum(r.large_tokens for r in records)
    wall = sum(walls)
    glimpse = sum(r.glimpse_s for r in records)
    gen_small = sum(r.small_s for r in records)
    gen_large = sum(r.large_s for r in records)
    queue = sum(r.queue_s for r in records)
    verify = sum(r.verify_s for r in records)
    engine = glimpse + gen_small + gen_large + verify
    verified = sum(r.verified_steps for r in records)
    other = wall - queue - engine
    shares = [r.random_large_share for r in records if r.random_large_share is not None]
    return {
        "n": n,
        "correct": correct,
        "accuracy": accuracy,
        # binomial standard error: with n = 100 an accuracy is known to about +-0.05, so a difference
        # between two modes smaller than that is not a finding
        "accuracy_se": math.sqrt(accuracy * (1.0 - accuracy) / n),
        "latency_median_s": percentile(walls, 50),
        "latency_p90_s": percentile(walls, 90),
        "latency_mean_s": wall / n,
        "tokens_small_mean": small_tok / n,
        "tokens_large_mean": large_tok / n,
        "steps_mean": steps / n,
        "large_step_share": sum(r.large_steps for r in records) / steps if steps else 0.0,
        "large_token_share": large_tok / (small_tok + large_tok) if small_tok + large_tok else 0.0,
        "time_glimpse_s": glimpse / n,
        "time_small_s": gen_small / n,
        "time_large_s": gen_large / n,
        "time_verify_s": verify / n,
        "time_other_s": other / n,
        "glimpse_share": glimpse / wall if wall else 0.0,
        "engine_share": (gen_small + gen_large) / wall if wall else 0.0,
        "verify_share": verify / wall if wall else 0.0,
        "verified_steps": verified,
        "rejected_step_share": sum(r.rejected_steps for r in records) / verified if verified else None,
        "forced_tokens_mean": sum(r.forced_tokens for r in records) / n,
        "other_share": other / wall if wall else 0.0,
        "router_overhead": (wall - queue) / engine - 1.0 if engine else 0.0,
        "hit_budget": sum(r.finish_reason == "length" for r in records),
        "load1_median": percentile([r.load1 for r in records], 50),
        "glimpses": sum(r.glimpses for r in records),
        # the random baseline: the mean large-step probability it was given (ours' share so far)
        **({"random_large_share_mean": sum(shares) / len(shares)} if shares else {}),
    }


def paired_ratio(records: Sequence[Record], mode: str, reference: str = REFERENCE_MODE) -> dict[str, Any]:
    """Latency of ``mode`` over ``reference`` on the problems both ran: mean/mean and median per problem,
    and the reference's accuracy on the same problems (for "within 2 points" on a subset)."""
    by_ref = {r.problem: r for r in records if r.mode == reference}
    pairs = [(r, by_ref[r.problem]) for r in records if r.mode == mode and r.problem in by_ref]
    if not pairs:
        return {"n_paired": 0}
    mine = [a.wall_s for a, _ in pairs]
    ref = [b.wall_s for _, b in pairs]
    return {
        "n_paired": len(pairs),
        "latency_ratio_mean": sum(mine) / sum(ref),
        "latency_ratio_median": percentile([a / b for a, b in zip(mine, ref, strict=True)], 50),
        "accuracy_paired": sum(a.correct for a, _ in pairs) / len(pairs),
        "reference_accuracy_paired": sum(b.correct for _, b in pairs) / len(pairs),
    }


def summarize(records: Sequence[Record], modes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Every mode's summary (the modes that ran), with its paired ratio to large-only."""
    by_mode = {mode: [r for r in records if r.mode == mode] for mode in modes}
    return {mode: {**summarize_mode(mine), **paired_ratio(records, mode)} for mode, mine in by_mode.items() if mine}


def decode_speeds(records: Sequence[Record]) -> dict[str, float]:
    """Tokens per second of generation in the single-model modes (includes their prompt prefill)."""
    small, large = _tokens_per_s(records, "small"), _tokens_per_s(records, "large")
    ratio = small / large if math.isfinite(small) and math.isfinite(large) else float("nan")
    return {"small_tokens_per_s": small, "large_tokens_per_s": large, "speed_ratio": ratio}


def _tokens_per_s(records: Sequence[Record], role: str) -> float:
    """The ``role`` model's tokens per second of its own generation time in its single-model mode."""
    runs = [r for r in records if r.mode == role]
    seconds = sum(getattr(r, f"{role}_s") for r in runs)
    return sum(getattr(r, f"{role}_tokens") for r in runs) / seconds if seconds else float("nan")
