"""The options one routed request may carry, and their bounds: one pydantic model for every entry point.

The router validates a :class:`~glimp_llm.router.RouteRequest` with :func:`check_options`, and the bodies
``glimp serve`` accepts inherit :class:`GenerationOptions`, so a bound is written once: a temperature of 3 is
refused the same way from Python, LangChain, LlamaIndex and HTTP (it used to pass the router, bound 5, and
fail the server, bound 2; 2 is the OpenAI bound every client already knows).

Fields are strict: ``"0.5"``, ``True`` or ``NaN`` for a number used to slip through or escape as a
``TypeError`` deep in an engine; here they are refused with the field's name, its bound and the value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from glimp_llm.errors import InvalidRequestError

MAX_STOP_SEQUENCES = 16
MAX_TEMPERATURE = 2.0
#: Seeds are what every engine can take: numpy and TensorRT-LLM need them non-negative (it is a uint64 there),
#: OpenAI clients send int64; llama-server's -1 ("random") would mean something else elsewhere.
MAX_SEED = 2**63 - 1

_MESSAGES = {
    "max_tokens": "max_tokens must be an integer >= 1",
    "temperature": f"temperature must be a number within 0..{MAX_TEMPERATURE:g} (0 = greedy)",
    "top_p": "top_p must be a number in (0, 1] (1 = no nucleus cut)",
    "seed": "seed must be an integer within 0..2**63-1 (or None for unseeded sampling)",
    "stop": "stop must be a string or a list of strings",
    "threshold": "threshold must be a finite number of nats",
    "timeout_s": "timeout_s must be a number of seconds > 0 (or None)",
}


class GenerationOptions(BaseModel):
    """What an OpenAI-shaped request says about generation; ``glimp serve``'s bodies extend it."""

    model_config = ConfigDict(extra="allow")

    max_tokens: int | None = Field(None, ge=1, strict=True, description="budget of generated tokens")
    temperature: float | None = Field(
        None, ge=0.0, le=MAX_TEMPERATURE, strict=True, allow_inf_nan=False, description="0 = greedy"
    )
    top_p: float | None = Field(None, gt=0.0, le=1.0, strict=True, allow_inf_nan=False, description="1 = off")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, strict=True)
    stop: StrictStr | list[StrictStr] | tuple[StrictStr, ...] | None = Field(
        None, description="one stop sequence, or a list of them; the output ends before the first"
    )

    @field_validator("stop")
    @classmethod
    def _few_non_empty(cls, value: str | Sequence[str] | None) -> str | Sequence[str] | None:
        stops = stop_list(value)
        if len(stops) > MAX_STOP_SEQUENCES or not all(stops):
            raise ValueError(f"stop must be at most {MAX_STOP_SEQUENCES} non-empty strings; got {stops!r:.80}")
        return value

    def stops(self) -> list[str]:
        return stop_list(self.stop)


class RequestOptions(GenerationOptions):
    """Everything the router checks on a request: the generation options plus routing's own."""

    model_config = ConfigDict(extra="forbid")

    threshold: float | None = Field(None, ge=0.0, strict=True, allow_inf_nan=False, description="tau, nats")
    timeout_s: float | None = Field(None, gt=0.0, strict=True, allow_inf_nan=False, description="deadline, s")


def stop_list(stop: str | Sequence[str] | None) -> list[str]:
    """``stop`` as a list. A single string is one stop sequence (as in the OpenAI API), not its characters."""
    if isinstance(stop, str):
        return [stop]
    return list(stop or ())


def check_options(**values: Any) -> RequestOptions:
    """Validate request options; the first problem becomes an :class:`InvalidRequestError` with the fix."""
    stop = values.get("stop")
    if isinstance(stop, Sequence) and not isinstance(stop, str | tuple | list):
        values["stop"] = list(stop)
    try:
        return RequestOptions.model_validate(values)
    except ValidationError as exc:
        raise InvalidRequestError(describe(exc)) from None


def describe(errors: ValidationError | Sequence[Mapping[str, Any]], limit: int = 5) -> str:
    """Validation errors as one line a caller can act on: our message for the options above (bound and
    value), pydantic's own for any other field. ``errors`` may come from a request body, whose locations
    start with ``"body"`` (FastAPI's): that part is dropped."""
    problems: list[str] = []
    for error in (errors.errors() if isinstance(errors, ValidationError) else errors)[:limit]:
        loc = [str(p) for p in error["loc"]]
        loc = loc[1:] if loc[:1] == ["body"] else loc
        name = loc[0] if loc else "body"
        value = error.get("input")
        if error["type"] == "value_error":
            text = str(error.get("ctx", {}).get("error") or error["msg"])
        elif name == "threshold" and error["type"] == "greater_than_equal":
            text = f"threshold must be >= 0 nats (entropy is never negative); got {value!r}"
        elif name in _MESSAGES:
            text = f"{_MESSAGES[name]}; got {value!r:.80}"
        else:
            text = f"{'.'.join(loc) or 'body'}: {error['msg']}"
        if text not in problems:
            problems.append(text)
    return "; ".join(problems)
