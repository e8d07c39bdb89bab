"""PNG figures of a run, drawn only from its records: accuracy vs latency across the tau sweep, the
glimpse entropy histogram, and where the time goes. matplotlib is imported lazily (the ``bench`` extra)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from glimp_llm.bench.runner import Record

#: the colours of the baselines, ours and the paper's variant (the same in every figure)
COLORS = {"small": "#2ca02c", "large": "#9467bd", "ours": "#1f77b4", "paper": "#ff7f0e"}
#: one distinct, dark-enough colour per further mode (none of COLORS)
PALETTE = [
    "#d62728", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31",
    "#843c39", "#7b4173", "#3182bd", "#31a354", "#000000",
]  # fmt: skip


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: str | Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def _marker(p: Mapping[str, Any]) -> str:
    """The marker of a mode's family: baselines squares, ours and its sweep circles, the paper's variant a
    diamond, the look-ahead a triangle, random a cross, guards down-triangles (all four: a star),
    verification pentagons (with guards: a plus)."""
    name = str(p["mode"])
    if p["kind"] in ("small", "large"):
        return "s"
    if p["paper"]:
        return "D"
    if p.get("glimpse_tokens", 1) > 1:
        return "^"
    if name == "random":
        return "X"
    if name.startswith("verify"):
        return "P" if "guards" in name else "p"
    if name.startswith("guard"):
        return "*" if name == "guards" else "v"
    return "o"


def accuracy_vs_latency(points: Sequence[Mapping[str, Any]], path: str | Path, *, title: str) -> Path:
    """Accuracy (with its standard error) against mean latency, one point per mode on the same problems;
    ours and its sweep joined by tau (the one-token glimpse only: other modes are other signals).

    Why a legend and not labels at the points: a run has up to 14 modes, many within a few percent of each
    other in latency, and labels at the points overlap; each mode gets its own colour and legend entry
    (with its tau and large-step share), the marker says its family."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 5.5))
    others = iter(PALETTE * 3)
    ours = sorted(
        (p for p in points if p["mode"] == "ours" or str(p["mode"]).startswith("ours@")),
        key=lambda p: p["latency_mean_s"],
    )
    if len(ours) > 1:
        ax.plot(
            [p["latency_mean_s"] for p in ours], [p["accuracy"] for p in ours], "-", color=COLORS["ours"], alpha=0.4
        )
    for p in points:
        color = COLORS.get(str(p["mode"])) or next(others)
        tau = "" if p["threshold"] is None else f"tau {p['threshold']:.3g}, "
        label = f"{p['mode']} ({tau}L {p['large_step_share']:.2f})"
        ax.errorbar(
            p["latency_mean_s"], p["accuracy"], yerr=p.get("accuracy_se") or 0.0, color=color, marker=_marker(p),
            markersize=8, capsize=3, elinewidth=0.8, linestyle="none", zorder=3, label=label,
        )  # fmt: skip
    ax.set_xlabel("mean latency per problem (s)")
    ax.set_ylabel("accuracy (± standard error)")
    ax.set_title(textwrap.fill(title, 70), fontsize=10)
    ax.grid(alpha=0.3)
    ax.margins(x=0.1, y=0.15)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, title="L = large-step share")
    return _save(plt, fig, path)


def entropy_histogram(
    series: Mapping[str, Sequence[float]], thresholds: Mapping[str, float | None], path: str | Path, *, title: str
) -> Path:
    """Histogram of glimpse entropies per entropy kind, with each kind's tau marked."""
    plt = _pyplot()
    kinds = [k for k, v in series.items() if v]
    fig, axes = plt.subplots(len(kinds) or 1, 1, figsize=(7.5, 2.8 * max(1, len(kinds))), squeeze=False)
    for ax, kind in zip(axes[:, 0], kinds, strict=False):
        values = list(series[kind])
        ax.hist(values, bins=40, color=COLORS["paper" if "top" in kind else "ours"], alpha=0.8)
        tau = thresholds.get(kind)
        if tau is not None:
            ax.axvline(tau, color="red", linestyle="--", label=f"tau = {tau:.3g}")
            ax.legend(fontsize=8)
        ax.set_title(f"{kind} (n={len(values)})", fontsize=9)
        ax.set_xlabel("glimpse entropy (nats)")
        ax.set_ylabel("glimpses")
    fig.suptitle(textwrap.fill(title, 80), fontsize=10)
    return _save(plt, fig, path)


def time_breakdown(summary: Mapping[str, Mapping[str, Any]], path: str | Path, *, title: str) -> Path:
    """Mean seconds per problem, stacked: glimpses, small generation, large generation, everything else."""
    plt = _pyplot()
    modes = list(summary)
    parts = [
        ("glimpses", "time_glimpse_s", "#d62728"),
        ("small generation", "time_small_s", COLORS["small"]),
        ("large generation", "time_large_s", COLORS["large"]),
        ("verification", "time_verify_s", "#8c564b"),
        ("other (router overhead)", "time_other_s", "#7f7f7f"),
    ]
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(modes) + 1.8))
    left = [0.0] * len(modes)
    for label, key, color in parts:
        widths = [max(0.0, summary[m].get(key, 0.0)) for m in modes]
        ax.barh(modes, widths, left=left, color=color, label=label)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    for i, total in enumerate(left):
        ax.text(total, i, f" {total:.2f} s", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("mean seconds per problem")
    ax.set_title(textwrap.fill(title, 80), fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=5, frameon=False)  # clear of the bars
    ax.margins(x=0.12)
    return _save(plt, fig, path)


def glimpse_entropies(records: Sequence[Record], mode: str) -> list[float]:
    return [h for r in records if r.mode == mode for h in r.entropies if h is not None]


def draw_all(document: Mapping[str, Any], records: Sequence[Record], modes: Sequence[Any], out: Path) -> list[Path]:
    """Every figure of a run, from what ran: accuracy vs latency of all main modes on all problems (and of
    every mode on the sweep subset when a sweep ran), the glimpse entropies of ours and paper where they
    ran, and where the time goes."""
    from glimp_llm.bench.report import sweep_points

    out.mkdir(parents=True, exist_ok=True)
    meta = document["meta"]
    pair = f"{meta['small_model']} -> {meta['large_model']}"
    written: list[Path] = []
    summary = document["summary"]
    if summary:
        n = max(row["n"] for row in summary.values())
        written.append(
            accuracy_vs_latency(
                sweep_points(summary, meta["modes"]),
                out / "accuracy_vs_latency.png",
                title=f"Accuracy vs mean latency, {n} problems ({pair})",
            )
        )
    sweep = document.get("sweep_summary") or {}
    if sweep:
        written.append(
            accuracy_vs_latency(
                sweep_points(sweep, meta["modes"]),
                out / "accuracy_vs_latency_sweep.png",
                title=f"Accuracy vs mean latency with the tau sweep, the same {document['sweep_problems']} "
                f"problems ({pair})",
            )
        )
    taus = {m.name: m.threshold for m in modes}
    kinds = {"exact (ours)": "ours", "top-20 renormalised (paper)": "paper"}
    series = {kind: glimpse_entropies(records, mode) for kind, mode in kinds.items()}
    if any(series.values()):
        written.append(
            entropy_histogram(
                series,
                {kind: taus.get(mode) for kind, mode in kinds.items()},
                out / "entropy_histogram.png",
                title=f"Glimpse entropies of the small model in the routed runs ({pair})",
            )
        )
    if summary:
        written.append(
            time_breakdown(summary, out / "time_breakdown.png", title=f"Where the time goes, mean per problem ({pair})")
        )
    return written
