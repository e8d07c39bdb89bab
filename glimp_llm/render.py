"""Drawing results for people: the routed trace in colour, a summary line, entropy histograms."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from glimp_llm.trace import RoutedResult, Step

MODEL_STYLE = {"small": "green", "large": "magenta"}


def routed_text(result: RoutedResult) -> Text:
    """The answer with each step coloured by the model that wrote it."""
    return Text.assemble(*((step.text, MODEL_STYLE[step.model]) for step in result.steps))


#: The trace's narrow columns: (header, justify, width). They never wrap or shrink; the step text gets the rest.
_NARROW_COLUMNS = (
    ("#", "right", 2),
    ("model", "left", 5),
    ("H nats", "right", 6),
    ("", "left", 4),
    ("why", "left", 7),
    ("tokens", "right", 6),
    ("end", "left", 9),
    ("ms", "right", 5),
)
#: Everything but the step text: the narrow columns, one space of padding each side of every cell, borders.
_FIXED_WIDTH = sum(w + 2 for _, _, w in _NARROW_COLUMNS) + 2 + len(_NARROW_COLUMNS) + 2


def step_table(result: RoutedResult, *, width: int | None = None, max_text: int = 60) -> Table:
    """The routing trace as a table that fits ``width`` columns: the narrow columns keep their size and
    the step text gets what is left (rich would otherwise squeeze the narrow ones to nothing)."""
    text_width = max_text if width is None else max(8, min(max_text, width - _FIXED_WIDTH))
    table = Table(title="routing trace", show_lines=False, header_style="bold")
    for name, justify, size in _NARROW_COLUMNS:
        cut = size if name in ("end", "why") else None  # values can be longer ("end_of_thinking", "tool✗123")
        table.add_column(name, justify=justify, no_wrap=True, min_width=size, max_width=cut, overflow="ellipsis")  # type: ignore[arg-type]
    table.add_column("text", no_wrap=True, overflow="ellipsis", width=text_width)
    for s in result.steps:
        entropy = "-" if s.entropy is None else f"{s.entropy:.3f}"
        bar = "" if s.entropy is None else _bar(min(s.entropy / max(result.threshold * 2, 1e-9), 1.0), 4)
        table.add_row(
            str(s.index),
            Text(s.model + (" *" if s.fallback else ""), style=MODEL_STYLE[s.model]),
            entropy,
            Text(bar, style=MODEL_STYLE[s.model]),
            step_reason(s),
            str(s.tokens),
            s.ended_by,
            f"{(s.glimpse_seconds + s.generation_seconds) * 1000:.0f}",
            s.text.replace("\n", "⏎"),
        )
    return table


_WHY = {
    "entropy": "H",
    "random": "rand",
    "fixed": "only",
    "first_step": "1st",
    "tool_call": "tool",
    "final_check": "fin",
    "answer": "ans",
    "fallback": "fail",
}


def step_reason(step: Step) -> str:
    """Why the step went where it did, in a few characters, with the large model's check of the small
    model's tokens: ``✓`` all kept, ``✗3`` rewritten after 3 kept small tokens, ``✓~2`` kept with 2 of
    its tokens replaced by the large model's own (``verify_resume=small``)."""
    why = _WHY[step.routed_by]
    if step.corrected_tokens:
        return f"{why}✓~{step.corrected_tokens}"
    if step.rejected_tokens:
        return f"{why}✗{step.kept_small_tokens}"
    return why + ("✓" if step.verified else "")


def summary_line(result: RoutedResult) -> Text:
    u, t = result.usage, result.timings
    line = Text()
    line.append(f"{len(result.steps)} steps: ", style="bold")
    line.append(f"{u.small_steps} small ({u.small_tokens} tok)", style=MODEL_STYLE["small"])
    line.append(" / ")
    line.append(f"{u.large_steps} large ({u.large_tokens} tok)", style=MODEL_STYLE["large"])
    line.append(
        f" | tau={result.threshold:g} ({result.mode}) | {u.completion_tokens} tokens in {t.wall_seconds:.2f} s"
        f" ({u.completion_tokens / t.wall_seconds if t.wall_seconds else 0:.1f} tok/s)"
        f" | glimpses {t.glimpse_seconds:.2f} s | finish: {result.finish_reason}"
    )
    if u.verified_steps:
        line.append(f" | verified {u.verified_steps} small steps in {t.verify_seconds:.2f} s")
    if u.corrected_tokens:
        line.append(f" | {u.corrected_tokens} small tokens replaced by the large model's own")
    elif u.small_tokens_rejected:
        line.append(f" | {u.small_tokens_rejected} small tokens rewritten by the large model")
    return line


def print_result(result: RoutedResult, console: Console | None = None) -> None:
    console = console or Console()
    console.print(routed_text(result))
    console.print()
    console.print(step_table(result, width=console.width))
    console.print(summary_line(result))


def _bar(fraction: float, width: int) -> str:
    blocks = " ▏▎▍▌▋▊▉█"
    full = fraction * width
    n = int(full)
    rest = int((full - n) * 8)
    return "█" * n + (blocks[rest] if n < width and rest else "")


def entropy_histogram(values: Sequence[float], *, threshold: float | None = None, bins: int = 16) -> Group:
    """A horizontal-bar histogram of entropies, with the threshold marked."""
    if not values:
        return Group(Text("no entropies to draw"))
    hi = max(max(values), threshold or 0.0, 1e-6)
    width = hi / bins
    counts = [0] * bins
    for v in values:
        counts[min(int(v / width), bins - 1)] += 1
    peak = max(counts)
    rows = []
    for i, c in enumerate(counts):
        lo_edge, hi_edge = i * width, (i + 1) * width
        above = threshold is not None and lo_edge >= threshold
        style = MODEL_STYLE["large"] if above else MODEL_STYLE["small"]
        mark = " ◀ tau" if threshold is not None and lo_edge <= threshold < hi_edge else ""
        rows.append(
            Text(f"{lo_edge:6.2f}-{hi_edge:5.2f} ")
            + Text(_bar(c / peak if peak else 0, 40).ljust(40), style=style)
            + Text(f" {c}{mark}")
        )
    mean, std = statistics.fmean(values), statistics.pstdev(values)
    rows.append(Text(f"n={len(values)} mean={mean:.3f} std={std:.3f} (nats)", style="dim"))
    return Group(*rows)
