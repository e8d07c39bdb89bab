"""The benchmark's modes: each one a named set of :class:`~glimp_llm.config.RouterConfig` overrides.

Why one registry: every mode, the single-model baselines included, runs through the same router, so a mode
is nothing but router settings plus where its threshold comes from. Adding a mode is one entry here; the
runner, the calibration, ``--modes``, the report and the plots all read this table.

The threshold of a routed mode is not a constant: tau only means something for one model pair and one
entropy kind (docs/calibration.md), so each mode names the *kind* of tau it routes on and ``glimp bench``
calibrates it (or takes it from ``--taus``). The guard and verification modes route on ours' tau: they
answer "what do these settings add on top of ours at the same threshold".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from glimp_llm.errors import ConfigurationError

TauKind = Literal["exact", "paper", "look-ahead"]
ModeKind = Literal["small", "large", "routed"]

#: The share of forced tokens the forced-token guard decodes past: near-certain, not merely likely.
FORCED_ENTROPY = 0.05
FORCED_MAX_TOKENS = 8

GUARDS: dict[str, Any] = {
    "first_step_large": True,
    "tool_call_large": True,
    "forced_entropy": FORCED_ENTROPY,
    "forced_max_tokens": FORCED_MAX_TOKENS,
    "final_step_check": True,
}

#: The settings every mode starts from: routing by entropy with no guard and no verification.
GUARDS_OFF: dict[str, Any] = {
    "routing": "entropy",
    "first_step_large": False,
    "tool_call_large": False,
    "forced_entropy": 0.0,
    "final_step_check": False,
    "verify": False,
    "verify_logprob": -7.0,  # verification's default before it was measured: the verify modes keep their meaning
    "verify_resume": "large",
    "verify_margin": None,
    "verify_draft_tokens": 0,
}

#: Verification's absolute threshold in the ``verify-4`` mode: where the large model's surprise separated
#: the damaged solutions from the others in the reference measurement (81 % vs 62 % flagged at -4).
STRICT_VERIFY_LOGPROB = -4.0
#: Draft size of the speculative mode: the small model drafts this many tokens per scoring.
SPEC_DRAFT_TOKENS = 8


def shipped_defaults() -> dict[str, Any]:
    """The guard settings ``RouterConfig()`` ships with: the ``defaults`` mode measures exactly those."""
    from glimp_llm.config import RouterConfig

    defaults = RouterConfig()
    return {k: getattr(defaults, k) for k in (*GUARDS_OFF, "forced_max_tokens")}


#: ``--modes sweep``: ours at the extra target shares of ``--sweep-shares`` (or the extra ``--taus``).
SWEEP = "sweep"
ALL = "all"


@dataclass(frozen=True)
class ModeSpec:
    """One entry of the registry: the router settings of a mode and what it needs before it can run.

    ``tau`` is the entropy kind the mode's threshold is calibrated for (None: the mode does not route on
    entropy). ``share_of`` names the mode whose measured large-step share this one takes (the random
    baseline). ``needs_scoring``: the large engine must implement ``Engine.score`` (verification)."""

    name: str
    kind: ModeKind
    description: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    tau: TauKind | None = None
    share_of: str | None = None
    needs_scoring: bool = False


def registry(glimpse_tokens: int = 8) -> dict[str, ModeSpec]:
    """Every mode ``glimp bench`` knows, in run order (``ours`` before ``random``: random takes ours'
    measured share on the same problem). ``glimpse_tokens`` is the look-ahead width of ``ours+kK``
    (1 leaves that mode out, as the paper's glimpse is ``ours`` itself)."""
    specs = [
        ModeSpec("small", "small", "small model only (the router, routing=small-only: no glimpses)",
                 {"routing": "small-only"}),
        ModeSpec("large", "large", "large model only (the router, routing=large-only: no glimpses)",
                 {"routing": "large-only"}),
        ModeSpec("ours", "routed", "exact entropy of one glimpsed token, the glimpse reused", {}, tau="exact"),
        ModeSpec("paper", "routed", "paper-faithful: top-20 renormalised entropy, greedy glimpse discarded",
                 {"paper_faithful": True}, tau="paper"),
    ]  # fmt: skip
    if glimpse_tokens > 1:
        specs.append(
            ModeSpec(
                f"ours+k{glimpse_tokens}",
                "routed",
                f"look-ahead glimpse: routed on the largest entropy of the small model's first {glimpse_tokens} tokens",
                {"glimpse_tokens": glimpse_tokens},
                tau="look-ahead",
            )
        )
    specs += [
        ModeSpec("random", "routed", "the paper's chance baseline: each step large with probability = ours' "
                 "measured large-step share, seeded", {"routing": "random"}, share_of="ours"),
        ModeSpec("guard-first", "routed", "ours + the first step of every turn on the large model",
                 {"first_step_large": True}, tau="exact"),
        ModeSpec("guard-tool", "routed", "ours + a step that opens a tool call on the large model (inert "
                 "without tools, as on GSM8K)", {"tool_call_large": True}, tau="exact"),
        ModeSpec("guard-forced", "routed", f"ours + glimpse past forced tokens (entropy < {FORCED_ENTROPY}, at "
                 f"most {FORCED_MAX_TOKENS}, kept)", {"forced_entropy": FORCED_ENTROPY,
                 "forced_max_tokens": FORCED_MAX_TOKENS}, tau="exact"),
        ModeSpec("guard-final", "routed", "ours + the step that ends the answer checked by the large model",
                 {"final_step_check": True}, tau="exact"),
        ModeSpec("guards", "routed", "ours + all four guards", dict(GUARDS), tau="exact"),
        ModeSpec("verify", "routed", "ours + the large model verifies every small-model step (router.verify)",
                 {"verify": True}, tau="exact", needs_scoring=True),
        ModeSpec("verify+guards", "routed", "ours + verification + all four guards", {**GUARDS, "verify": True},
                 tau="exact", needs_scoring=True),
        ModeSpec("verify-4", "routed", f"ours + verification at {STRICT_VERIFY_LOGPROB:g} nats (the large model "
                 "writes on from the first rejected token)", {"verify": True,
                 "verify_logprob": STRICT_VERIFY_LOGPROB}, tau="exact", needs_scoring=True),
        ModeSpec("spec", "routed", "ours + speculative verification: the large model's own token replaces each "
                 f"one it would not choose (verify_margin 0), the small model drafts on, {SPEC_DRAFT_TOKENS} "
                 "tokens per scoring", {"verify": True, "verify_resume": "small", "verify_margin": 0.0,
                 "verify_draft_tokens": SPEC_DRAFT_TOKENS}, tau="exact", needs_scoring=True),
        ModeSpec("defaults+verify-4", "routed", "the shipped defaults plus verification at "
                 f"{STRICT_VERIFY_LOGPROB:g} nats", {**shipped_defaults(), "verify": True,
                 "verify_logprob": STRICT_VERIFY_LOGPROB}, tau="exact", needs_scoring=True),
        ModeSpec("defaults", "routed", "the library's shipped router defaults (RouterConfig()) at ours' tau",
                 shipped_defaults(), tau="exact", needs_scoring=shipped_defaults()["verify"] is True),
    ]  # fmt: skip
    return {s.name: s for s in specs}


@dataclass(frozen=True)
class Selection:
    """What ``--modes`` chose: the registry entries in run order, whether the tau sweep runs, and
    whether the user named them (an explicit choice fails on a missing capability; the default drops
    the mode with a warning)."""

    specs: tuple[ModeSpec, ...]
    sweep: bool
    explicit: bool

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def without(self, names: Iterable[str]) -> Selection:
        drop = set(names)
        return Selection(tuple(s for s in self.specs if s.name not in drop), self.sweep, self.explicit)


def parse_modes(text: str | None, modes: Mapping[str, ModeSpec]) -> Selection:
    """``--modes large,ours`` -> those registry entries in run order. None or ``all``: every mode and the
    sweep. Unknown, repeated or empty names raise :class:`ConfigurationError` listing the valid ones."""
    valid = [*modes, SWEEP, ALL]
    if text is None or text.strip().lower() == ALL:
        return Selection(tuple(modes.values()), sweep=True, explicit=False)
    names = [n.strip().lower() for n in text.split(",")]
    if not any(names):
        raise ConfigurationError(f"--modes is empty; name at least one of: {', '.join(valid)}")
    if "" in names:
        raise ConfigurationError(f"--modes {text!r} has an empty name; separate names with single commas")
    unknown = [n for n in names if n not in modes and n != SWEEP]
    if unknown:
        hint = ""
        if any(n.startswith("ours+k") for n in unknown):
            hint = " (the look-ahead mode is named after --lookahead-tokens K: ours+kK)"
        raise ConfigurationError(
            f"--modes: unknown mode {', '.join(map(repr, unknown))}{hint}; use a comma-separated list of: "
            f"{', '.join(valid)}"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigurationError(f"--modes names {', '.join(map(repr, repeated))} more than once; name each mode once")
    chosen = set(names)
    return Selection(tuple(s for s in modes.values() if s.name in chosen), sweep=SWEEP in chosen, explicit=True)
