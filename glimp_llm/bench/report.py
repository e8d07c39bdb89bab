"""Report writers: the JSON document of a run, and its Markdown tables for benchmarks/RESULTS.md.

The Markdown is written between two marker comments, so the hand-written analysis around the generated
tables in RESULTS.md survives a rerun.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

COLUMNS: list[tuple[str, str, str]] = [
    # (header, summary key, format: a format spec, or "acc" for accuracy ± its error, "d" for a count)
    ("n", "n", "d"),
    ("accuracy", "accuracy", "acc"),
    ("median s", "latency_median_s", ".2f"),
    ("p90 s", "latency_p90_s", ".2f"),
    ("mean s", "latency_mean_s", ".2f"),
    ("latency / large (mean, paired)", "latency_ratio_mean", ".3f"),
    ("median per-problem ratio", "latency_ratio_median", ".3f"),
    ("tok small", "tokens_small_mean", ".1f"),
    ("tok large", "tokens_large_mean", ".1f"),
    ("steps", "steps_mean", ".2f"),
    ("large-step share", "large_step_share", ".3f"),
    ("large-token share", "large_token_share", ".3f"),
    ("glimpse % wall", "glimpse_share", ".1%"),
    ("generation % wall", "engine_share", ".1%"),
    ("verify % wall", "verify_share", ".1%"),
    ("verified steps rejected", "rejected_step_share", ".1%"),
    ("other % wall", "other_share", ".1%"),
    ("router overhead", "router_overhead", ".2%"),
    ("hit budget", "hit_budget", "d"),
]


def _fmt(value: Any, spec: str, row: Mapping[str, Any]) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if spec == "acc":
        se = row.get("accuracy_se")
        pm = f" ± {se:.3f}" if isinstance(se, float) and math.isfinite(se) else ""
        return f"{value:.3f}{pm} ({row.get('correct', 0)}/{row.get('n', 0)})"
    if spec == "d":
        return str(int(value))
    return format(value, spec)


def mode_table(summary: Mapping[str, Mapping[str, Any]], taus: Mapping[str, float | None]) -> str:
    """One Markdown row per mode."""
    head = ["mode", "tau (nats)", *[c[0] for c in COLUMNS]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mode, row in summary.items():
        tau = taus.get(mode)
        cells = [mode, "" if tau is None else f"{tau:.4g}"]
        cells += [_fmt(row.get(key), spec, row) for _, key, spec in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def modes_table(modes: Sequence[Mapping[str, Any]], summary: Mapping[str, Mapping[str, Any]]) -> str:
    """What each mode that ran is: its description and router settings (the random baseline with the
    large-step probability it was given)."""
    lines = ["| mode | what it is | router settings |", "|---|---|---|"]
    for m in modes:
        if m["name"] not in summary:
            continue
        settings = dict(m.get("overrides") or {})
        if m.get("paper_faithful"):
            settings["paper_faithful"] = True
        if m.get("glimpse_tokens", 1) != 1:
            settings["glimpse_tokens"] = m["glimpse_tokens"]
        shown = summary[m["name"]].get("random_large_share_mean")
        if m.get("share_of") and shown is not None:
            settings["random_large_share"] = f"{shown:.3f} (mean; the share {m['share_of']} measured so far)"
        text = ", ".join(f"{k}={v}" for k, v in settings.items()) or "defaults"
        lines.append(f"| {m['name']} | {m.get('description', '')} | {text} |")
    return "\n".join(lines)


def write_json(path: str | Path, document: Mapping[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(_finite(document), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def render_markdown(document: Mapping[str, Any]) -> str:
    """The generated part of RESULTS.md: setup, the main table, the sweep table, calibration."""
    meta = document["meta"]
    taus = {m["name"]: m.get("threshold") for m in meta["modes"]}
    out = [
        "### Run",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"- started {meta['started']}, finished {meta.get('finished', '(unfinished)')}, "
        f"{meta.get('elapsed_min', float('nan')):.1f} min; problems: {meta['dataset']}",
        f"- models: small `{meta['small_model']}`, large `{meta['large_model']}`; {meta['settings']}",
        f"- host: {meta['host']}; 1-min load average at run starts: median {meta['load']['median']:.2f}, "
        f"max {meta['load']['max']:.2f}",
        "",
        "### The modes that ran",
        "",
        modes_table(meta["modes"], document["summary"]),
        "",
        "### All modes on all problems where they ran",
        "",
        "Accuracy ± its binomial standard error; latency / large-only is paired (the same problems).",
        "",
        mode_table(document["summary"], taus),
    ]
    if document.get("sweep_summary"):
        out += [
            "",
            f"### Tau sweep: every mode on the sweep subset ({document['sweep_problems']} problems, paired)",
            "",
            mode_table(document["sweep_summary"], taus),
        ]
    speeds = document.get("speeds")
    if speeds:
        out += [
            "",
            f"Generation speed in the single-model runs (prefill of the prompt included): small "
            f"{speeds['small_tokens_per_s']:.1f} tok/s, large {speeds['large_tokens_per_s']:.1f} tok/s, "
            f"ratio **{speeds['speed_ratio']:.2f}x**.",
        ]
    cal = document.get("calibration")
    if cal:
        out += [
            "",
            "### Calibration",
            "",
            cal["description"],
            "",
            "| mode | entropy | target share | tau | share on calibration glimpses |",
            "|---|---|---|---|---|",
        ]
        for row in cal["taus"]:
            out.append(
                f"| {row['mode']} | {row['entropy']} | {row['target_large_share']:.2f} | {row['threshold']:.4g} "
                f"| {row['realised_share']:.3f} |"
            )
        for kind, q in cal.get("quantiles", {}).items():
            out += ["", f"{kind} entropy quantiles: " + ", ".join(f"{k} {v:.3f}" for k, v in q.items())]
    return "\n".join(out) + "\n"


def markers(name: str = "glimp-bench") -> tuple[str, str]:
    """The comment lines around one generated block of a results file."""
    by = "generated by `glimp bench`" if name == "glimp-bench" else "generated"
    return f"<!-- {name}:begin ({by}; edit outside these markers) -->", f"<!-- {name}:end -->"


def update_results_file(
    path: str | Path, generated: str, *, title: str = "# Benchmark results", name: str = "glimp-bench"
) -> None:
    """Put ``generated`` between the markers ``name`` of ``path`` (created with a title when missing)."""
    p = Path(path)
    begin, end = markers(name)
    block = f"{begin}\n{generated}{end}\n"
    if p.is_file():
        text = p.read_text(encoding="utf-8")
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            tail = rest.split(end, 1)[1].lstrip("\n")
            p.write_text(head + block + ("\n" + tail if tail else ""), encoding="utf-8")
            return
        p.write_text(text.rstrip("\n") + "\n\n" + block, encoding="utf-8")
        return
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(f"{title}\n\n{block}", encoding="utf-8")


def sweep_points(summary: Mapping[str, Mapping[str, Any]], modes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each mode's summary row with what the accuracy-vs-latency plot marks it by: its kind, paper variant,
    glimpse width and tau."""
    kinds = {m["name"]: m for m in modes}
    points = []
    for name, row in summary.items():
        m = kinds.get(name, {})
        marks = {"kind": m.get("kind"), "paper": m.get("paper_faithful", False), "threshold": m.get("threshold")}
        points.append({**row, **marks, "mode": name, "glimpse_tokens": m.get("glimpse_tokens", 1)})
    return points
