"""Single-model baselines with the router's step semantics, but without glimpses.

Why not route with tau = inf / 0: every routed step pays a glimpse (a catch-up evaluation plus the
entropy), so a "small only" run through the router would be charged for work a plain small model never
does, and "large only" would also pay the small model's catch-up on every step. These baselines call
``engine.generate`` step by step exactly as the router's loop does (same delimiter, step cap, budget,
end of sequence and repeated-step guard) and return a :class:`~glimp_llm.trace.RoutedResult`, so the
statistics treat all modes alike.
"""

from __future__ import annotations

import time

from glimp_llm.config import RouterConfig
from glimp_llm.engines.base import Engine, SamplingParams
from glimp_llm.router import Router, RouteRequest
from glimp_llm.trace import ModelRole, RoutedFinishReason, RoutedResult, Step, StepEnd, Timings, Usage


def sampling_of(config: RouterConfig) -> SamplingParams:
    s = config.sampling
    return SamplingParams(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, seed=s.seed)


async def single_model_generate(
    engine: Engine, role: ModelRole, request: RouteRequest, config: RouterConfig
) -> RoutedResult:
    """One request written entirely by ``engine`` (reported as ``role``), step by step, no glimpses."""
    t_start = time.perf_counter()
    prompt_ids = await Router(engine, engine, config).prepare_prompt(request, engine)
    context = list(prompt_ids)
    budget = min(request.max_tokens or config.max_tokens, engine.info.context_window - len(context) - 1)
    sampling = sampling_of(config)
    steps: list[Step] = []
    usage = Usage(prompt_tokens=len(prompt_ids))
    seconds = 0.0
    generated = 0
    finish: RoutedFinishReason = "length"
    while generated < budget:
        cap = min(budget - generated, config.step_max_tokens)
        t0 = time.perf_counter()
        completion = await engine.generate(context, max_tokens=cap, stop=[config.step_delimiter], sampling=sampling)
        elapsed = time.perf_counter() - t0
        seconds += elapsed
        ids = list(completion.token_ids)
        ended: StepEnd
        if completion.finish_reason == "stop":
            ended = "delimiter"
        elif completion.finish_reason == "eos":
            ended = "eos"
        else:
            ended = "budget" if generated + cap >= budget else "step_cap"
        step = Step(
            index=len(steps),
            model=role,
            tokens=len(ids),
            token_ids=ids,
            text=completion.text,
            ended_by=ended,
            generation_seconds=elapsed,
        )
        previous = steps[-1] if steps else None
        steps.append(step)
        context += ids
        generated += len(ids)
        if ended == "eos":
            finish = "eos"
            break
        if config.stop_on_repeated_step and previous is not None and step.text.strip() and step.text == previous.text:
            finish = "repetition"
            break
        if not ids:  # nothing produced and no end of sequence: the engine cannot go on
            finish = "eos"
            break
    usage.completion_tokens = generated
    usage.total_tokens = usage.prompt_tokens + generated
    if role == "small":
        usage.small_steps, usage.small_tokens = len(steps), generated
    else:
        usage.large_steps, usage.large_tokens = len(steps), generated
    timings = Timings(wall_seconds=time.perf_counter() - t_start)
    if role == "small":
        timings.small_seconds = seconds
    else:
        timings.large_seconds = seconds
    return RoutedResult(
        text="".join(s.text for s in steps),
        finish_reason=finish,
        steps=steps,
        usage=usage,
        timings=timings,
        threshold=float("inf") if role == "small" else 0.0,
        small_model=engine.info.model if role == "small" else "",
        large_model=engine.info.model if role == "large" else "",
    )
