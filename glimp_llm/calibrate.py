"""Set tau from data: glimpse the small model along sample solutions, pick the entropy quantile.

Why calibrate at all: tau is in nats of *one* model's next-token distribution, measured *one* way (exact,
a bounded top-k estimate and the paper's renormalised top-20 entropy are three different numbers for the
same distribution), so a tau from a paper or another pair means nothing here; what transfers is the *share
of steps* sent to the large model. The samples are written by one model with no glimpses (routing
small-only / large-only), so they do not depend on the tau being chosen. docs/calibration.md has the details.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from glimp_llm.config import RouterConfig
from glimp_llm.engines.base import Engine, Glimpse, SamplingParams
from glimp_llm.entropy import renormalized_topk_entropy
from glimp_llm.router import Router, RouteRequest, look_ahead

EntropyChoice = Literal["exact", "paper", "look-ahead"]
Trajectory = Literal["small", "large"]


@dataclass(frozen=True)
class GlimpseSample:
    """The small model's entropies at one step start of a sample solution."""

    prompt: int
    trajectory: Trajectory
    step: int
    exact: float  # of the first glimpsed token, full vocabulary
    topk_renormalized: float  # of the first glimpsed token, the paper's renormalised top-k
    look_ahead: float  # the largest exact entropy over the first ``glimpse_tokens`` tokens (= exact for 1)

    def value(self, entropy: EntropyChoice) -> float:
        return {"exact": self.exact, "paper": self.topk_renormalized, "look-ahead": self.look_ahead}[entropy]


@dataclass(frozen=True)
class Calibration:
    """What ``glimp calibrate`` found: the tau for the target share, and the evidence."""

    target_large_share: float
    entropy: EntropyChoice
    threshold: float
    realised_share: float
    samples: int
    quantiles: dict[str, float]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


async def collect_glimpses(
    small: Engine,
    large: Engine,
    prompts: Sequence[str],
    config: RouterConfig,
    *,
    trajectories: Sequence[Trajectory] = ("small", "large"),
    max_tokens: int | None = None,
    on_prompt: Callable[[int], None] | None = None,
) -> list[GlimpseSample]:
    """Glimpse ``small`` at every step start of sample solutions to ``prompts``."""
    samples: list[GlimpseSample] = []
    prompt_router = Router(small, small, config)
    plain = {"first_step_large": False, "tool_call_large": False, "final_step_check": False, "verify": False}
    writers = {
        t: Router(small, large, config.model_copy(update={**plain, "routing": f"{t}-only"})) for t in trajectories
    }
    greedy = SamplingParams()
    for i, prompt in enumerate(prompts):
        request = RouteRequest(prompt=prompt, max_tokens=max_tokens)
        prompt_ids = await prompt_router.prepare_prompt(request, small)
        for trajectory in trajectories:
            result = await writers[trajectory].generate(request)  # one model writes every step, no glimpses
            context = list(prompt_ids)
            for step in result.steps:
                g = await small.glimpse(context, greedy, top_logprobs=config.paper_top_k)
                topk = renormalized_topk_entropy([lp for _, lp in g.top_logprobs])
                ahead = await _look_ahead_signal(small, context, g, config)
                samples.append(GlimpseSample(i, trajectory, step.index, g.entropy, topk, ahead))
                context += step.token_ids
        if on_prompt is not None:
            on_prompt(i)
    return samples


async def _look_ahead_signal(small: Engine, context: list[int], first: Glimpse, config: RouterConfig) -> float:
    """The router's signal at a step start: the first glimpse's entropy, or with ``glimpse_tokens`` > 1 the
    largest entropy over the small model's own next tokens (greedy here, as the sample solutions are),
    stopping where the router's look-ahead stops."""
    if config.glimpse_tokens == 1:
        return first.entropy
    ahead = await look_ahead(
        small, context, first, SamplingParams(), tokens=config.glimpse_tokens, stops=[config.step_delimiter]
    )
    return max(g.entropy for g in ahead)


def threshold_for_share(entropies: Sequence[float], share: float) -> float:
    """The tau that sends ``share`` of ``entropies`` to the large model, under ``>`` and ``>=`` alike
    (midway between the two samples around the cut; ties make the realised share differ: it is reported)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"target share must be within 0..1; got {share}")
    values = sorted(entropies)
    if not values:
        raise ValueError("no glimpses to calibrate on: the sample generations produced no steps")
    n = len(values)
    to_large = round(share * n)
    if to_large <= 0:
        return values[-1] + max(1e-6, abs(values[-1]) * 1e-6)
    if to_large >= n:
        return max(0.0, values[0] / 2.0)
    return (values[n - to_large - 1] + values[n - to_large]) / 2.0


def realised_share(entropies: Sequence[float], threshold: float, entropy: EntropyChoice) -> float:
    """Share of ``entropies`` the router would send to the large model at ``threshold``."""
    if not entropies:
        return 0.0
    goes_large = operator.ge if entropy == "paper" else operator.gt  # the router's comparison
    return sum(goes_large(h, threshold) for h in entropies) / len(entropies)


def calibrate(samples: Sequence[GlimpseSample], share: float, entropy: EntropyChoice = "exact") -> Calibration:
    """The tau for ``share`` from glimpse samples: for our exact entropy, the paper's top-k one, or the
    look-ahead signal of ``router.glimpse_tokens`` > 1."""
    return calibrate_values([s.value(entropy) for s in samples], share, entropy)


def calibrate_values(values: Sequence[float], share: float, entropy: EntropyChoice = "exact") -> Calibration:
    """:func:`calibrate` on entropies already sampled (a benchmark resumed from its meta file reuses the
    samples of its first calibration instead of generating them again)."""
    tau = threshold_for_share(values, share)
    return Calibration(
        target_large_share=share,
        entropy=entropy,
        threshold=tau,
        realised_share=realised_share(values, tau, entropy),
        samples=len(values),
        quantiles=quantiles(values),
    )


def quantiles(values: Sequence[float], points: Sequence[int] = (10, 25, 50, 70, 85, 95)) -> dict[str, float]:
    """Empirical quantiles ("p50": ...) of a sample, nearest-rank on the sorted values."""
    ordered = sorted(values)
    if not ordered:
        return {}
    n = len(ordered)
    return {f"p{p}": ordered[min(n - 1, max(0, math.ceil(p / 100 * n) - 1))] for p in points}
