"""The benchmark code in a tiny configuration (scripted engines, SmolLM2), answer extraction, and tau
calibration. No timing assertions: only what the code computes and the shape of what it writes."""

from __future__ import annotations

import asyncio
import json
import random
from fractions import Fraction
from pathlib import Path

import pytest
from conftest import UNGUARDED, require

from glimp_llm.bench.answers import boxed_contents, extract_answer, format_number, gold_number, is_correct
from glimp_llm.bench.datasets import MATH_INSTRUCTION, load_gsm8k_jsonl
from glimp_llm.calibrate import calibrate, collect_glimpses, realised_share, threshold_for_share
from glimp_llm.cli import main as glimp_main
from glimp_llm.config import GlimpConfig, RouterConfig
from glimp_llm.engines.scripted import ScriptedEngine
from glimp_llm.router import Router, RouteRequest

SMALL_TEXT = "First we add.\n\nThen we multiply.\n\nSo the total is 18.\n\nCheck it.\n\nThe answer is \\boxed{18}"
LARGE_TEXT = "We add first.\n\nWe multiply next.\n\nThe total is 18.\n\nIt checks.\n\nSo \\boxed{18}"
ENTROPIES = [0.1, 0.4, 0.9, 1.6, 2.5]


# ------------------------------------------------------------------------------ answer extraction
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so she makes 9 * 2 = 18 dollars.\n\n\\boxed{18}", Fraction(18)),
        ("\\boxed{\\$1,250.50}", Fraction("1250.5")),
        ("The answer is \\boxed{\\frac{3}{4}}", Fraction(3, 4)),
        ("\\boxed{18 \\text{ dollars}} and later 7", Fraction(18)),
        ("\\boxed{5} then corrected: \\boxed{6}", Fraction(6)),
        ("nested \\boxed{\\text{{12}}}", Fraction(12)),
        ("The final answer is 42.\nExtra words 7", Fraction(42)),
        ("Answer: -3 apples", Fraction(-3)),
        ("#### 1,000", Fraction(1000)),
        ("first 3 then 4 then 5", Fraction(5)),
        ("no number here", None),
        ("It costs $0.75 each", Fraction(3, 4)),
    ],
)
def test_extract_answer(text: str, expected: Fraction | None) -> None:
    assert extract_answer(text) == expected


def test_boxed_contents_balances_braces() -> None:
    assert boxed_contents("a \\boxed{x{y}z} b \\boxed{2}") == ["x{y}z", "2"]
    assert boxed_contents("\\boxed{unclosed") == []


def test_gold_and_scoring() -> None:
    assert gold_number("Janet sells 9 eggs.\n#### 18") == 18
    assert gold_number("1687.5") == Fraction("1687.5")
    with pytest.raises(ValueError, match="no numeric gold"):
        gold_number("#### none")
    assert is_correct(Fraction(18), Fraction(18))
    assert is_correct(Fraction("18.0000000001"), Fraction(18))
    assert not is_correct(Fraction(17), Fraction(18))
    assert not is_correct(None, Fraction(18))
    assert format_number(Fraction(5, 2)) == "2.5"
    assert format_number(Fraction(1, 3)) == "1/3"
    assert format_number(None) is None


def test_gsm8k_loader(tmp_path: Path) -> None:
    data = _dataset(tmp_path, 5)
    problems = load_gsm8k_jsonl(data, offset=1, limit=3)
    assert [p.id for p in problems] == ["tiny:1", "tiny:2", "tiny:3"]
    assert problems[0].gold == 18
    assert problems[0].prompt.startswith(MATH_INSTRUCTION)


def test_default_dataset_is_seeded_gsm_symbolic() -> None:
    """Without --data the benchmark generates GSM8K-style problems with reasoning-gym, reproducibly."""
    require("reasoning_gym", "the default benchmark dataset comes from the bench extra")
    from glimp_llm.bench.datasets import load_problems

    first = load_problems(None, offset=2, limit=3, seed=7)
    again = load_problems(None, offset=2, limit=3, seed=7)
    other = load_problems(None, offset=2, limit=3, seed=8)
    assert [p.id for p in first] == ["gsm_symbolic:7:2", "gsm_symbolic:7:3", "gsm_symbolic:7:4"]
    assert [(p.question, p.gold) for p in first] == [(p.question, p.gold) for p in again]
    assert [p.question for p in first] != [p.question for p in other]
    assert all(p.question.strip() and p.prompt.startswith(MATH_INSTRUCTION) for p in first)
    assert all(isinstance(p.gold, Fraction) for p in first)


# ------------------------------------------------------------------------------ calibration
def test_threshold_for_share_splits_the_sample() -> None:
    values = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    for share in (0.0, 0.1, 0.3, 0.5, 0.9, 1.0):
        tau = threshold_for_share(values, share)
        assert realised_share(values, tau, "exact") == pytest.approx(share)
        assert realised_share(values, tau, "paper") == pytest.approx(share)
    with pytest.raises(ValueError, match="within 0..1"):
        threshold_for_share(values, 1.5)


@pytest.mark.parametrize("share", [0.2, 0.4, 0.6])
def test_calibrate_on_scripted_engines_gives_the_requested_share(share: float) -> None:
    async def go() -> tuple[float, float]:
        small = ScriptedEngine(SMALL_TEXT, entropies=ENTROPIES, name="small")
        large = ScriptedEngine(LARGE_TEXT, entropies=0.1, name="large")
        await small.start()
        await large.start()
        try:
            config = RouterConfig(**UNGUARDED)
            samples = await collect_glimpses(small, large, ["What is 9 * 2?"], config)
            assert sorted({round(s.exact, 6) for s in samples}) == pytest.approx(ENTROPIES, abs=1e-4)
            result = calibrate(samples, share)
            routed = await Router(small, large, config.model_copy(update={"threshold": result.threshold})).generate(
                RouteRequest(prompt="What is 9 * 2?")
            )
            return result.threshold, routed.large_step_share
        finally:
            await small.close()
            await large.close()

    tau, routed_share = asyncio.run(go())
    assert routed_share == pytest.approx(share)
    assert ENTROPIES[round((1 - share) * 5) - 1] < tau < ENTROPIES[round((1 - share) * 5)]


def test_calibration_measures_the_look_ahead_signal_the_router_uses() -> None:
    """With glimpse_tokens > 1 the samples are the largest entropy over the first tokens, as in routing."""

    async def go() -> tuple[list[float], list[float], float]:
        small = ScriptedEngine(SMALL_TEXT, entropies=[0.0, 1.5, 0.0, 0.0, 0.0], inner_entropy=0.7, name="small")
        large = ScriptedEngine(LARGE_TEXT, entropies=0.1, name="large")
        await small.start()
        await large.start()
        try:
            one = await collect_glimpses(small, large, ["q"], RouterConfig(**UNGUARDED), trajectories=("small",))
            config = RouterConfig(**UNGUARDED, glimpse_tokens=3)
            three = await collect_glimpses(small, large, ["q"], config, trajectories=("small",))
            assert [s.exact for s in three] == [s.exact for s in one]  # the first-token entropy is kept too
            tau = calibrate(three, 0.2, "look-ahead").threshold
            routed = await Router(small, large, config.model_copy(update={"threshold": tau})).generate(
                RouteRequest(prompt="q")
            )
            return [s.look_ahead for s in one], [s.look_ahead for s in three], routed.large_step_share
        finally:
            await small.close()
            await large.close()

    one, three, share = asyncio.run(go())
    assert one == pytest.approx([0.0, 1.5, 0.0, 0.0, 0.0], abs=1e-3)
    assert three == pytest.approx([0.7, 1.5, 0.7, 0.7, 0.7], abs=1e-3)  # every step opens certain, then hesitates
    assert share == pytest.approx(0.2)


@pytest.mark.parametrize("role", ["small", "large"])
def test_single_model_baselines_go_through_the_router_without_glimpses(role: str) -> None:
    """small-only / large-only are the router's own loop (issue 11): one model writes every step, and no
    glimpse is taken, so a baseline is not charged for routing it does not do."""

    async def go() -> None:
        small = ScriptedEngine(SMALL_TEXT, entropies=ENTROPIES, name="small")
        large = ScriptedEngine(LARGE_TEXT, entropies=0.1, name="large")
        await small.start()
        await large.start()
        try:
            config = RouterConfig(routing=f"{role}-only")
            result = await Router(small, large, config).generate(RouteRequest(prompt="q"))
        finally:
            await small.close()
            await large.close()
        assert small.stats.glimpses == 0 and large.stats.glimpses == 0
        assert result.usage.glimpses == 0 and result.timings.glimpse_seconds == 0
        assert [s.model for s in result.steps] == [role] * 5
        assert result.text == (SMALL_TEXT if role == "small" else LARGE_TEXT)
        assert result.finish_reason == "eos"

    asyncio.run(go())


def test_calibrate_cli_writes_a_loadable_config(tmp_path: Path) -> None:
    config = _scripted_config(tmp_path)
    out = tmp_path / "tuned.yaml"
    rc = glimp_main(
        ["calibrate", "--config", str(config), "--target-large-share", "0.4", "--data", str(_dataset(tmp_path, 2)),
         "--limit", "2", "--out", str(out)]
    )  # fmt: skip
    assert rc == 0
    tuned = GlimpConfig.load(out)
    assert ENTROPIES[2] < tuned.router.threshold < ENTROPIES[3]
    assert tuned.small.kind == "scripted"


# ------------------------------------------------------------------------------ the benchmark
BENCH_KEYS = {"schema", "meta", "summary", "sweep_problems", "sweep_summary", "speeds", "calibration", "records"}
SUMMARY_KEYS = {
    "n", "accuracy", "latency_median_s", "latency_p90_s", "latency_mean_s", "tokens_small_mean",
    "tokens_large_mean", "large_step_share", "large_token_share", "time_glimpse_s", "time_small_s", "time_large_s",
    "time_other_s", "router_overhead", "latency_ratio_mean",
}  # fmt: skip
RECORD_KEYS = {
    "problem", "mode", "threshold", "correct", "predicted", "gold", "wall_s", "glimpse_s", "small_s", "large_s",
    "engine_s", "small_tokens", "large_tokens", "small_steps", "large_steps", "entropies", "load1", "text",
}  # fmt: skip


def _check_document(doc: dict, modes: set[str], n: int) -> None:
    assert set(doc) >= BENCH_KEYS
    assert doc["schema"] == "glimp-bench/1"
    assert {"small", "large", "ours", "paper"} <= set(doc["summary"])
    assert set(doc["sweep_summary"]) == modes
    for row in doc["summary"].values():
        assert set(row) >= SUMMARY_KEYS
        assert row["n"] == n
        assert 0.0 <= row["accuracy"] <= 1.0
    for record in doc["records"]:
        assert set(record) >= RECORD_KEYS
    assert doc["summary"]["small"]["large_step_share"] == 0.0
    assert doc["summary"]["large"]["large_step_share"] == 1.0
    assert doc["summary"]["small"]["time_glimpse_s"] == 0.0


def test_bench_on_scripted_engines(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out).mkdir()
    (out / "RESULTS.md").write_text("# Results\n\nhand-written analysis\n", encoding="utf-8")
    rc = glimp_main(
        ["bench", "--config", str(_scripted_config(tmp_path)), "--data", str(_dataset(tmp_path, 6)), "--limit", "3",
         "--calibrate-problems", "2", "--main-share", "0.4", "--sweep-shares", "0.2", "--sweep-problems", "2",
         "--modes", "small,large,ours,paper,sweep",
         "--json", str(out / "r.json"), "--results-md", str(out / "RESULTS.md"), "--plots", str(out / "plots"),
         "--records", str(out / "rec.jsonl"), "--quiet"]
    )  # fmt: skip
    assert rc == 0
    doc = json.loads((out / "r.json").read_text())
    _check_document(doc, {"small", "large", "ours", "paper", "ours@0.20"}, 3)
    assert doc["summary"]["small"]["accuracy"] == 1.0  # the script ends with \boxed{18}
    assert doc["summary"]["ours"]["large_step_share"] == pytest.approx(0.4)
    assert len(doc["records"]) == 3 * 4 + 2
    md = (out / "RESULTS.md").read_text()
    assert "hand-written analysis" in md and "| ours |" in md and "### Calibration" in md
    assert {p.name for p in (out / "plots").iterdir()} == {
        "accuracy_vs_latency.png",
        "accuracy_vs_latency_sweep.png",
        "entropy_histogram.png",
        "time_breakdown.png",
    }
    # A rerun with the same records file resumes: nothing left to run, the same document comes out.
    rc = glimp_main(
        ["bench", "--config", str(_scripted_config(tmp_path)), "--data", str(_dataset(tmp_path, 6)), "--limit", "3",
         "--json", str(out / "r2.json"), "--results-md", str(out / "RESULTS.md"), "--plots", str(out / "plots"),
         "--records", str(out / "rec.jsonl"), "--quiet", "--sweep-problems", "2", "--sweep-shares", "0.2",
         "--modes", "small,large,ours,paper,sweep"]
    )  # fmt: skip
    assert rc == 0
    again = json.loads((out / "r2.json").read_text())
    assert len(again["records"]) == len(doc["records"])
    assert (out / "RESULTS.md").read_text().count("glimp-bench:begin") == 1


@pytest.mark.llama_cpp
@pytest.mark.slow
def test_bench_on_smollm2(tmp_path: Path, smollm2_path: str) -> None:
    out = tmp_path / "out"
    rc = glimp_main(
        ["bench", "--small", smollm2_path, "--large", smollm2_path, "--data", str(_dataset(tmp_path, 4)),
         "--limit", "2", "--calibrate-problems", "1", "--sweep-shares", "0.8", "--sweep-problems", "1",
         "--budget", "24", "--step-cap", "12", "--n-ctx", "512", "--n-threads", "1", "--json", str(out / "r.json"),
         "--modes", "small,large,ours,paper,sweep",
         "--results-md", str(out / "RESULTS.md"), "--plots", str(out / "plots"), "--quiet"]
    )  # fmt: skip
    assert rc == 0
    doc = json.loads((out / "r.json").read_text())
    _check_document(doc, {"small", "large", "ours", "paper", "ours@0.80"}, 2)
    for record in doc["records"]:
        assert record["small_tokens"] + record["large_tokens"] <= 24


# ------------------------------------------------------------------------------ helpers
def _dataset(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "tiny.jsonl"
    rows = [{"question": f"Problem {i}: what is 9 * 2?", "answer": "9 * 2 = 18\n#### 18"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _scripted_config(tmp_path: Path) -> Path:
    path = tmp_path / "scripted.json"
    config = {
        "small": {"kind": "scripted", "response": SMALL_TEXT, "entropies": ENTROPIES, "name": "small"},
        "large": {"kind": "scripted", "response": LARGE_TEXT, "entropies": 0.1, "name": "large"},
    }
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def test_micro_glimpse_benchmark_reuses_the_prefix() -> None:
    from benchmarks.microbench import glimpse_cost_ratio, overhead_ratio

    async def go() -> dict:
        engine = ScriptedEngine(SMALL_TEXT, entropies=ENTROPIES, name="small", n_slots=2, context_window=8192)
        await engine.start()
        try:
            words = ["the", "total", "cost", "of", "each", "item", "sells", "buys", "hours", "days", "week", "price"]
            rng = random.Random(0)  # not periodic: the two sequences must not share a prefix
            tokens = await engine.tokenize(" ".join(rng.choice(words) for _ in range(3000)))
            result = await glimpse_cost_ratio(engine, tokens, repeats=3)
            routed = await Router(engine, engine, RouterConfig()).generate(RouteRequest(prompt="q"))
        finally:
            await engine.close()
        result["overhead"] = overhead_ratio([routed])
        return result

    result = asyncio.run(go())
    assert result["tokens_evaluated_per_glimpse"] == {"2000": 40, "200": 40}  # only the new step is evaluated
    assert result["ratio"] > 0 and set(result["overhead"]) >= {"ratio", "wall_s", "engine_s", "detail"}
