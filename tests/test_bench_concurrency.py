"""The concurrency micro-benchmark's plumbing on scripted engines: the routed speed-up, the raw engines' own
speed-up on plain completions, their ratio ("batching kept"), and how micro.json and the RESULTS.md block
report them. Timings here come from sleeping scripted engines: the tests check what is computed and
written, not how fast anything is."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import UNGUARDED

from benchmarks import microbench as micro
from glimp_llm.config import RouterConfig
from glimp_llm.engines.scripted import ScriptedEngine
from glimp_llm.router import Router

ROOT = Path(__file__).resolve().parents[1]
SMALL = "Small one is here.\n\nSmall two is here.\n\nSmall three is here.\n\nSmall four."
LARGE = "Large one is here.\n\nLarge two is here.\n\nLarge three is here.\n\nLarge four."
PROMPTS = ["the first question", "a second question", "the third one", "and a fourth"]


def _compare(n_slots: int, entropies: list[float]) -> dict[str, Any]:
    """concurrency_comparison on a scripted pair whose engines batch ``n_slots`` sequences (worker threads
    that sleep per token, so sequences in different slots overlap like a batch)."""

    async def go() -> dict[str, Any]:
        small = ScriptedEngine(SMALL, entropies=entropies, name="small", n_slots=n_slots, token_seconds=0.002)
        large = ScriptedEngine(LARGE, entropies=0.1, name="large", n_slots=n_slots, token_seconds=0.004)
        await small.start()
        await large.start()
        try:
            # the entropy loop alone, so both models write steps whatever the shipped guard defaults
            router = Router(small, large, RouterConfig(**UNGUARDED, threshold=0.5, step_max_tokens=16, max_tokens=24))
            return await micro.concurrency_comparison(router, PROMPTS, 24)
        finally:
            await small.close()
            await large.close()

    return asyncio.run(go())


def test_the_comparison_reports_routed_and_raw_speedups_and_their_ratio() -> None:
    result = _compare(n_slots=4, entropies=[0.1, 2.0, 0.1, 2.0])  # steps 2 and 4 go to the large model
    assert result["batching_kept"] == pytest.approx(result["ratio"] / result["raw_ratio"])
    assert result["ratio"] == pytest.approx(result["concurrent_tok_s"] / result["sequential_tok_s"])
    raw_one, raw_many = result["raw"]["one"], result["raw"]["many"]
    assert set(raw_one) == set(raw_many) == {"small", "large", "all"}
    # the same greedy completions at once and one at a time: the same tokens, only the time differs
    assert (
        raw_one["all"]["tokens"] == raw_many["all"]["tokens"] == raw_one["small"]["tokens"] + raw_one["large"]["tokens"]
    )
    assert raw_one["small"]["tokens"] == len(PROMPTS) * 24  # plain completions run to the token budget
    assert result["raw_ratio"] == pytest.approx(raw_many["all"]["tok_s"] / raw_one["all"]["tok_s"])
    assert set(result["raw_ratio_per_engine"]) == {"small", "large"}
    assert result["raw_ratio"] > 1.0  # four slots per engine: plain completions at once do overlap
    split = result["routed_engine_time_split"]
    assert split["small"] + split["large"] == pytest.approx(1.0)
    assert 0 < split["glimpse"] < split["small"] and split["large"] > 0  # both models wrote steps
    in_flight = result["routed_in_flight"]
    assert 0 < in_flight["small"] + in_flight["large"] + in_flight["router"] <= len(PROMPTS) + 0.01
    assert len(result["load_averages"]["start"]) == len(result["load_averages"]["end"]) == 3
    for needle in ("routed: 4 at once", "raw plain completions", "raw per server small", "mean in flight"):
        assert needle in result["detail"]


def test_one_slot_engines_have_no_batching_to_keep() -> None:
    """With one slot per engine, raw completions at once only overlap the two servers, never batch."""
    result = _compare(n_slots=1, entropies=0.1)
    for name, ratio in result["raw_ratio_per_engine"].items():
        assert ratio < 1.5, (name, result["detail"])


def _report(routed: tuple[float, float], raw: tuple[float, float]) -> dict[str, Any]:
    """A concurrency entry from chosen tokens/s: 100 tokens per phase, ``(one, many)`` seconds."""
    per = {"small": micro.Throughput(50, raw[0] / 2), "large": micro.Throughput(50, raw[0])}
    per_many = {"small": micro.Throughput(50, raw[1] / 2), "large": micro.Throughput(50, raw[1])}
    return micro.concurrency_report(
        8,
        routed_one=micro.Throughput(100, routed[0]),
        routed_many=micro.Throughput(100, routed[1]),
        raw_one={**per, "all": micro.Throughput(100, raw[0])},
        raw_many={**per_many, "all": micro.Throughput(100, raw[1])},
        split={"small": 0.7, "large": 0.3, "glimpse": 0.2},
        occupancy={"small": 5.0, "large": 2.5, "router": 0.1},
        loads=((6.5, 6.9, 4.8), (7.1, 7.0, 5.2)),
    )


def test_the_block_states_both_speedups_the_ratio_and_the_goal() -> None:
    kept = _report(routed=(10.0, 5.0), raw=(10.0, 2.5))  # routed 2x, raw 4x
    assert kept["ratio"] == pytest.approx(2.0) and kept["raw_ratio"] == pytest.approx(4.0)
    assert kept["batching_kept"] == pytest.approx(0.5)
    doc = {"tau": 0.94, "load1_start": 6.5, "load1_end": 7.1, "command": "benchmarks/micro.py --x", "concurrency": 8}
    block = micro.render_block({**doc, "concurrency_8_over_1": {**kept, "note": "2 cores shared with other work"}})
    assert "throughput, 8 concurrent routed requests / 1: 2.000" in block
    assert "plain completions / 1 on the same servers (raw engine, no routing): 4.000" in block
    assert "batching kept (routed / raw speed-up): 0.500** (below the 0.9 goal)" in block
    assert "6.50/6.90/4.80 at the start" in block and "7.10/7.00/5.20 at its end" in block
    assert "2 cores shared with other work" in block
    met = micro.render_block({**doc, "concurrency_8_over_1": _report(routed=(10.0, 2.7), raw=(10.0, 2.5))})
    assert "batching kept (routed / raw speed-up): 0.926** (met)" in met
    above = micro.render_block({**doc, "concurrency_8_over_1": _report(routed=(10.0, 2.0), raw=(10.0, 2.5))})
    assert "batching kept (routed / raw speed-up): 1.250** (met; above 1 because" in above
    assert "(10.0 vs 10.0 tok/s" in above  # routed vs raw, one at a time


def test_a_partial_rerun_keeps_each_figure_with_its_own_command_and_load() -> None:
    earlier = {
        "tau": 0.94,
        "load1_start": 1.1,
        "load1_end": 1.0,
        "command": "benchmarks/micro.py --skip concurrency",
        "router_overhead": {"ratio": 0.0004, "detail": "3 routed requests"},
        "concurrency_8_over_1": {"ratio": 1.9, "detail": "old"},
    }
    new = {
        "tau": 0.94,
        "load1_start": 6.5,
        "load1_end": 7.0,
        "command": "benchmarks/micro.py --skip glimpse,overhead",
        "date": "2026-12-02",
        "concurrency_8_over_1": _report(routed=(10.0, 5.0), raw=(10.0, 2.5)),
    }
    merged = micro.merge_runs(earlier, new)
    assert merged["router_overhead"]["command"] == "benchmarks/micro.py --skip concurrency"
    assert merged["router_overhead"]["load1"] == [1.1, 1.0]
    assert merged["concurrency_8_over_1"]["command"] == "benchmarks/micro.py --skip glimpse,overhead"
    assert merged["concurrency_8_over_1"]["load1"] == [6.5, 7.0]
    assert merged["concurrency_8_over_1"]["batching_kept"] == pytest.approx(0.5)
    block = micro.render_block(merged)
    assert "- overhead: `benchmarks/micro.py --skip concurrency` (1-min load average 1.10" in block
    assert "- concurrency: `benchmarks/micro.py --skip glimpse,overhead`, 2026-12-02 (1-min load average 6.50" in block


def test_render_only_rewrites_the_block_from_the_json(tmp_path: Path) -> None:
    """benchmarks/micro.py is the block's one generator: --render-only redoes it from micro.json alone."""
    spec = importlib.util.spec_from_file_location("glimp_micro_script_c", ROOT / "benchmarks" / "micro.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    doc = micro.merge_runs(
        None,
        {
            "tau": 0.94,
            "load1_start": 6.5,
            "load1_end": 7.0,
            "command": "benchmarks/micro.py --skip glimpse,overhead",
            "concurrency_8_over_1": _report(routed=(10.0, 5.0), raw=(10.0, 2.5)),
        },
    )
    (tmp_path / "m.json").write_text(json.dumps(doc))
    md = tmp_path / "R.md"
    md.write_text("# Results\n\nhand-written text\n")
    assert script.main(["--render-only", "--json", str(tmp_path / "m.json"), "--results-md", str(md)]) == 0
    text = md.read_text()
    assert "hand-written text" in text and "<!-- glimp-micro:begin" in text
    assert "batching kept (routed / raw speed-up): 0.500" in text
