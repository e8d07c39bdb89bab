"""The router configurations the suite compares, as ``RouterConfig`` field overrides.

Each is applied on top of the model pair's :class:`~glimp_llm.GlimpConfig` (``GlimpConfig.with_router``),
so a configuration is exactly what a user would set. Two anchors:

* ``ours`` is the library's *defaults*, whatever they are when the suite runs (records store the resolved
  settings, so a run before and after a change of defaults is told apart);
* ``entropy`` is the paper's routing with every guard explicitly off, so "each guard alone" is measured
  against the same baseline even after the defaults change.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from glimp_llm.bench.modes import GUARDS as BENCH_GUARDS

GUARDS_OFF: dict[str, Any] = {
    "routing": "entropy",
    "glimpse_tokens": 1,  # the paper's one-token glimpse (and forced_entropy refuses a look-ahead beside it)
    "first_step_large": False,
    "tool_call_large": False,
    "forced_entropy": 0.0,
    "final_step_check": False,
    "verify": False,
    "verify_logprob": -7.0,  # the "verify" configuration as first measured (the default was -7 then)
}
# The GSM8K benchmark's guard settings, so "guards" and "forced" mean the same in both suites.
GUARDS_ON: dict[str, Any] = dict(BENCH_GUARDS)
FORCED: dict[str, Any] = {k: BENCH_GUARDS[k] for k in ("forced_entropy", "forced_max_tokens")}

CONFIGS: dict[str, dict[str, Any]] = {
    "small-only": {"routing": "small-only"},
    "large-only": {"routing": "large-only"},
    "ours": {},
    # earlier defaults, kept to compare with: until 2026-12-02 evening three guards and no verification;
    # until 2026-12-03 the tool-call guard, the final-step check and verification at -4 nats
    "old-defaults": {**GUARDS_OFF, "first_step_large": True, "tool_call_large": True, "final_step_check": True},
    "verify-4-defaults": {
        **GUARDS_OFF,
        "tool_call_large": True,
        "final_step_check": True,
        "verify": True,
        "verify_logprob": -4.0,
    },
    "entropy": dict(GUARDS_OFF),
    "first-step": {**GUARDS_OFF, "first_step_large": True},
    "tool-call": {**GUARDS_OFF, "tool_call_large": True},
    "forced": {**GUARDS_OFF, **FORCED},
    "final-check": {**GUARDS_OFF, "final_step_check": True},
    "guards": {**GUARDS_OFF, **GUARDS_ON},
    "verify": {**GUARDS_OFF, "verify": True},
    "verify+guards": {**GUARDS_OFF, **GUARDS_ON, "verify": True},
}
DEFAULT_ORDER: tuple[str, ...] = tuple(CONFIGS)


def parse_define(text: str) -> tuple[str, dict[str, Any]]:
    """An extra configuration from the command line, so a sweep needs no code change: ``NAME=JSON``
    (``'tau0.5={"threshold": 0.5}'``) or ``NAME=BASE+JSON`` (``'fs-tau2=first-step+{"threshold": 2}'``)."""
    name, sep, spec = text.partition("=")
    name = name.strip()
    if not sep or not name or "," in name:
        raise ValueError(f"--define wants NAME=JSON or NAME=BASE+JSON, got {text!r}")
    base: dict[str, Any] = {}
    spec = spec.strip()
    # the longest known name wins: "verify+guards+{...}" is based on verify+guards, not on verify
    for known in sorted(CONFIGS, key=len, reverse=True):
        if spec.startswith(known + "+"):
            base, spec = dict(CONFIGS[known]), spec[len(known) + 1 :]
            break
    try:
        extra = json.loads(spec)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--define {name}: {spec!r} is not a JSON object of RouterConfig fields ({exc})") from None
    if not isinstance(extra, dict):
        raise ValueError(f"--define {name}: give a JSON object of RouterConfig fields, got {spec!r}")
    return name, {**base, **extra}


def resolve(names: Iterable[str], defined: Mapping[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """The overrides of the named configurations, in the order given; unknown names fail with the list."""
    known = {**CONFIGS, **(defined or {})}
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        if name not in known:
            raise ValueError(f"unknown configuration {name!r}; known: {', '.join(known)} (or add one with --define)")
        out[name] = dict(known[name])
    return out
