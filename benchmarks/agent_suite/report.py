"""Per-configuration summaries of agent-suite records, and the Markdown, JSON and plot made from them.

Latency is compared with large-only *paired*: on exactly the tasks both configurations ran, so a partial
run of one configuration is not set against a mean over other tasks.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.agent_suite.harness import REASONS, Record, standard_error

REFERENCE = "large-only"


def summarize(records: Sequence[Record]) -> dict[str, Any]:
    """One configuration: success rate (and its standard error), calls, repeats, empties, loops, latency."""
    n = len(records)
    if n == 0:
        return {"n": 0}
    ok = sum(r.success for r in records)
    rate = ok / n
    walls = [r.wall_s for r in records]
    small = sum(r.small_tokens for r in records)
    large = sum(r.large_tokens for r in records)
    reasons = Counter(r.reason for r in records)
    return {
        "n": n,
        "success": ok,
        "success_rate": rate,
        "success_se": standard_error(rate, n),
        "tool_calls_mean": sum(r.tool_calls for r in records) / n,
        "extra_calls_mean": sum(max(0, r.tool_calls - r.min_calls) for r in records) / n,
        "repeated_calls": sum(r.repeated_calls for r in records),
        "tasks_with_repeats": sum(r.repeated_calls > 0 for r in records),
        "empty_final": reasons["empty"],
        "call_as_text": reasons["call_as_text"],
        "loops": reasons["loop"],
        "errors": reasons["error"],
        "invalid_calls": sum(r.invalid_calls for r in records),
        "reasons": {k: reasons[k] for k in REASONS if reasons[k]},
        "turns_mean": sum(r.turns for r in records) / n,
        "latency_mean_s": sum(walls) / n,
        "latency_median_s": statistics.median(walls),
        "large_token_share": large / (small + large) if small + large else 0.0,
    }


def summaries(records: Sequence[Record], order: Sequence[str]) -> dict[str, dict[str, Any]]:
    """All configurations in ``order``, with latency relative to large-only on the tasks both ran."""
    by_config: dict[str, list[Record]] = {c: [] for c in order}
    for r in records:
        by_config.setdefault(r.config, []).append(r)
    out = {c: summarize(rs) for c, rs in by_config.items()}
    ref = {r.task: r.wall_s for r in by_config.get(REFERENCE, [])}
    for c, rs in by_config.items():
        paired = [r for r in rs if r.task in ref]
        base = sum(ref[r.task] for r in paired)
        out[c]["latency_vs_large"] = sum(r.wall_s for r in paired) / base if paired and base > 0 else None
    return out


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f} %"


def markdown(
    summary: Mapping[str, Mapping[str, Any]],
    records: Sequence[Record],
    overrides: Mapping[str, Mapping[str, Any]],
    meta: Mapping[str, Any],
) -> str:
    """The results table, the settings of every configuration, and a task-by-configuration matrix."""
    lines = [
        "# Agent suite",
        "",
        f"{meta.get('tasks', '?')} tool-use tasks, plain `create_agent(ChatGlimp(config=...), tools=...)`, "
        f"no middleware; models {meta.get('models', '?')}; {meta.get('max_tokens')} tokens per model turn. "
        "Success: a number in the final message equals the expected answer. ± is one standard error.",
        "",
        "| configuration | success | tool calls / task | repeated identical calls (tasks) | empty finals | "
        "calls as text | loops | errors | latency mean (s) | vs large-only | large-token share |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        if not s.get("n"):
            lines.append(f"| {name} | not run | | | | | | | | | |")
            continue
        vs = s.get("latency_vs_large")
        lines.append(
            f"| {name} | {s['success_rate']:.2f} ± {s['success_se']:.2f} ({s['success']}/{s['n']}) | "
            f"{s['tool_calls_mean']:.2f} | {s['repeated_calls']} ({s['tasks_with_repeats']}) | {s['empty_final']} | "
            f"{s['call_as_text']} | "
            f"{s['loops']} | {s['errors']} | {s['latency_mean_s']:.2f} | {'—' if vs is None else f'{vs:.2f}x'} | "
            f"{_pct(s['large_token_share'])} |"
        )
    lines += ["", "## Configurations (RouterConfig overrides on the pair's config)", ""]
    for name, o in overrides.items():
        body = ", ".join(f"`{k}={v!r}`" for k, v in o.items()) or "the library defaults"
        lines.append(f"* **{name}**: {body}")
    configs = list(summary)
    by_key = {(r.config, r.task): r for r in records}
    tasks = list(dict.fromkeys(r.task for r in records))
    lines += ["", "## Per task", "", "| task | " + " | ".join(configs) + " |", "|---" * (len(configs) + 1) + "|"]
    for t in tasks:
        cells = []
        for c in configs:
            r = by_key.get((c, t))
            cells.append("" if r is None else ("ok" if r.success else r.reason) + f" ({r.tool_calls})")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines += ["", "Cells: outcome (tool calls made)."]
    return "\n".join(lines) + "\n"


def require_matplotlib() -> None:
    """Fail before any model is loaded, with the fix, when a plot is asked for without matplotlib."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SystemExit(
            "--plot needs matplotlib, which is not installed: pip install 'glimp-llm[bench]' "
            "(or drop --plot; the JSON and Markdown outputs do not need it)"
        ) from None


def plot(summary: Mapping[str, Mapping[str, Any]], path: str | Path, title: str = "agent suite") -> None:
    """Success rate (± one standard error) against mean latency per task, one labelled point per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, s in summary.items():
        if not s.get("n"):
            continue
        ax.errorbar(s["latency_mean_s"], s["success_rate"], yerr=s["success_se"], fmt="o", capsize=3)
        ax.annotate(
            name, (s["latency_mean_s"], s["success_rate"]), textcoords="offset points", xytext=(5, 4), fontsize=8
        )
    ax.set_xlabel("mean latency per task (s)")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
