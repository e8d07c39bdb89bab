"""PNG figures of a run, drawn only from its records: accuracy vs latency across the tau sweep, the
glimpse entropy histogram, and where the time goes. matplotlib is imported lazily (the ``bench`` extra)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from glimp_llm.bench.runner import Record

COLORS = {"small": "#2ca02c", "large": "#9467bd", "routed": "#1f77b4", "paper": "#ff7f0e"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_vs_latency(points: Sequence[Mapping[str, Any]], path: str | Path, *, title: str) -> Path:
    """Accuracy against mean latency, one point per mode on the same problems; ours joined by tau (the
    one-token glimpse only: a look-ahead mode is another signal, drawn apart)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ours = sorted(
        (p for p in points if p["kind"] == "routed" and not p["paper"] and p.get("glimpse_tokens", 1) == 1),
        key=lambda p: p["latency_mean_s"],
    )
    if ours:
        ax.plot(
            [p["latency_mean_s"] for p in ours], [p["accuracy"] for p in ours], "-", color=COLORS["routed"], alpha=0.5
        )
    for p in points:
        ahead = p.get("glimpse_tokens", 1) > 1
        color = COLORS["paper"] if p["paper"] else ("tab:red" if ahead else COLORS.get(p["kind"] or "routed", "black"))
        marker = "s" if p["kind"] in ("small", "large") else ("D" if p["paper"] else ("^" if ahead else "o"))
        ax.scatter(p["latency_mean_s"], p["accuracy"], color=color, marker=marker, s=60, zorder=3)
        label = (
            p["mode"]
            if p["threshold"] is None
            else f"{p['mode']}\ntau={p['threshold']:.3g}, L={p['large_step_share']:.2f}"
        )
        offset = (6, -22) if p["paper"] or ahead else (6, 4)  # keep labels of nearby points apart
        ax.annotate(label, (p["latency_mean_s"], p["accuracy"]), textcoords="offset points", xytext=offset, fontsize=8)
    ax.set_xlabel("mean latency per problem (s)")
    ax.set_ylabel("accuracy")
    ax.set_title(textwrap.fill(title, 70), fontsize=10)
    ax.grid(alpha=0.3)
    ax.margins(x=0.25, y=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def entropy_histogram(
    series: Mapping[str, Sequence[float]], thresholds: Mapping[str, float], path: str | Path, *, title: str
) -> Path:
    """Histogram of glimpse entropies per entropy kind, with each kind's tau marked."""
    plt = _pyplot()
    kinds = [k for k, v in series.items() if v]
    fig, axes = plt.subplots(len(kinds) or 1, 1, figsize=(7.5, 2.8 * max(1, len(kinds))), squeeze=False)
    for ax, kind in zip(axes[:, 0], kinds, strict=False):
        values = list(series[kind])
        ax.hist(values, bins=40, color=COLORS["paper" if "top" in kind else "routed"], alpha=0.8)
        tau = thresholds.get(kind)
        if tau is not None:
            ax.axvline(tau, color="red", linestyle="--", label=f"tau = {tau:.3g}")
            ax.legend(fontsize=8)
        ax.set_title(f"{kind} (n={len(values)})", fontsize=9)
        ax.set_xlabel("glimpse entropy (nats)")
        ax.set_ylabel("glimpses")
    fig.suptitle(textwrap.fill(title, 80), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def time_breakdown(summary: Mapping[str, Mapping[str, Any]], path: str | Path, *, title: str) -> Path:
    """Mean seconds per problem, stacked: glimpses, small generation, large generation, everything else."""
    plt = _pyplot()
    modes = list(summary)
    parts = [
        ("glimpses", "time_glimpse_s", "#d62728"),
        ("small generation", "time_small_s", COLORS["small"]),
        ("large generation", "time_large_s", COLORS["large"]),
        ("other (router overhead)", "time_other_s", "#7f7f7f"),
    ]
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(modes) + 1.8))
    left = [0.0] * len(modes)
    for label, key, color in parts:
        widths = [max(0.0, summary[m].get(key, 0.0)) for m in modes]
        ax.barh(modes, widths, left=left, color=color, label=label)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    for i in range(len(modes)):
        ax.text(left[i], i, f" {left[i]:.2f} s", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("mean seconds per problem")
    ax.set_title(textwrap.fill(title, 80), fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4, frameon=False)  # clear of the bars
    ax.margins(x=0.12)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def glimpse_entropies(records: Sequence[Record], mode: str) -> list[float]:
    return [h for r in records if r.mode == mode for h in r.entropies if h is not None]
