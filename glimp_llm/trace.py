"""What a routed generation returns: its text, every step (who wrote it and why), totals and timings.

Everything here is a pydantic model, so a result is JSON-serialisable as it is (``result.model_dump()``)
and carries the routing trace into LangChain metadata, LlamaIndex ``raw``, the server's extension field
and the benchmarks.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

ModelRole = Literal["small", "large"]
RoutedFinishReason = Literal["eos", "stop", "length", "repetition", "cancelled"]
StepEnd = Literal["delimiter", "eos", "step_cap", "budget", "end_of_thinking", "stop_sequence", "cancelled"]
Phase = Literal["thinking", "answer"]
RoutedBy = Literal["entropy", "random", "fixed", "first_step", "tool_call", "final_check", "answer", "fallback"]
"""Why a step went to its model: the glimpse entropy, a random draw, a one-model routing, a guard (the turn's
first step, a tool call, the step that ends the answer), the answer phase, or an engine failure."""


class Step(BaseModel):
    """One reasoning step and how it was routed."""

    index: int
    model: ModelRole
    phase: Phase = "thinking"
    entropy: float | None = Field(None, description="glimpse entropy in nats (None when no glimpse was taken)")
    entropy_kind: str | None = None
    entropy_error_bound: float = 0.0
    glimpse_text: str | None = None  # the glimpsed token(s) as text (None when no glimpse was taken)
    glimpse_tokens: int = 0  # how many tokens were glimpsed before routing (router.glimpse_tokens at most)
    glimpse_reused: bool = False
    tokens: int
    token_ids: list[int] = Field(default_factory=list, exclude=True, repr=False)
    text: str
    ended_by: StepEnd
    glimpse_seconds: float = 0.0
    generation_seconds: float = 0.0
    fallback: str | None = Field(None, description="set when the other model wrote the step after a failure")
    routed_by: RoutedBy = "entropy"
    forced_tokens: int = Field(0, description="near-certain small-model tokens decoded and kept before routing")
    kept_small_tokens: int = Field(
        0, description="for a large step: how many of its leading tokens the small model wrote (forced or verified)"
    )
    verified: bool = Field(False, description="the large model scored the small model's tokens of this step")
    accepted_tokens: int | None = Field(None, description="verify: small-model tokens the large model accepted")
    rejected_tokens: int = Field(0, description="small-model tokens discarded (rejected, or rewritten by a guard)")
    rejected_text: str | None = Field(None, description="the small-model text that was discarded")
    min_logprob: float | None = Field(None, description="verify: the least large-model log-prob of a small token")
    corrected_tokens: int = Field(
        0,
        description=(
            "verify_resume=small: tokens of this small step that are the large model's own, each put in "
            "place of a rejected small-model token (the small model drafted on after each)"
        ),
    )


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    small_tokens: int = 0
    large_tokens: int = 0
    small_steps: int = 0
    large_steps: int = 0
    glimpses: int = 0
    glimpse_tokens_discarded: int = 0
    forced_tokens: int = 0
    verified_steps: int = 0
    rejected_steps: int = 0
    small_tokens_rejected: int = 0
    corrected_tokens: int = 0


class Timings(BaseModel):
    wall_seconds: float = 0.0
    glimpse_seconds: float = 0.0
    small_seconds: float = 0.0
    large_seconds: float = 0.0
    queue_seconds: float = 0.0
    verify_seconds: float = 0.0

    @property
    def engine_seconds(self) -> float:
        return self.glimpse_seconds + self.small_seconds + self.large_seconds + self.verify_seconds

    @property
    def overhead_ratio(self) -> float:
        """wall / time inside engine calls - 1: what the router itself costs."""
        inside = self.engine_seconds
        return (self.wall_seconds - self.queue_seconds) / inside - 1.0 if inside > 0 else 0.0


class RoutedResult(BaseModel):
    text: str
    finish_reason: RoutedFinishReason
    steps: list[Step]
    usage: Usage
    timings: Timings
    threshold: float
    mode: Literal["glimp", "paper"] = "glimp"
    small_model: str = ""
    large_model: str = ""

    @property
    def large_step_share(self) -> float:
        return self.usage.large_steps / len(self.steps) if self.steps else 0.0

    def summary(self) -> dict[str, object]:
        """The compact routing summary adapters put into metadata."""
        return {
            "steps": len(self.steps),
            "small_steps": self.usage.small_steps,
            "large_steps": self.usage.large_steps,
            "small_tokens": self.usage.small_tokens,
            "large_tokens": self.usage.large_tokens,
            "threshold": self.threshold,
            "mode": self.mode,
            "finish_reason": self.finish_reason,
            "wall_seconds": round(self.timings.wall_seconds, 4),
            "small_model": self.small_model,
            "large_model": self.large_model,
        }

    def to_json_dict(self) -> dict[str, object]:
        """``text``, ``steps`` (model, entropy, tokens, text, ...), ``usage``, ``timings``, ``finish_reason``."""
        data = self.model_dump(mode="json")
        data["timings"]["engine_seconds"] = self.timings.engine_seconds
        data["timings"]["overhead_ratio"] = self.timings.overhead_ratio
        return data


# ------------------------------------------------------------------------------- stream events
class TokenEvent(BaseModel):
    """Text produced inside a step (streamed as engines produce it)."""

    type: Literal["token"] = "token"
    step: int
    model: ModelRole
    text: str


class StepEvent(BaseModel):
    """A finished step."""

    type: Literal["step"] = "step"
    step: Step


class DoneEvent(BaseModel):
    type: Literal["done"] = "done"
    result: RoutedResult


RouterEvent = TokenEvent | StepEvent | DoneEvent
