"""Benchmarks and evaluation: problems, answer scoring, the mode runner, statistics, reports, plots.

The library behind ``glimp bench`` and ``benchmarks/``. Importing it loads no engine and no matplotlib;
``glimp_llm.bench.plots`` needs the ``bench`` extra (``pip install 'glimp-llm[bench]'``).
"""

from glimp_llm.bench.answers import extract_answer, gold_number, is_correct
from glimp_llm.bench.datasets import MATH_INSTRUCTION, Problem, gsm_symbolic, load_gsm8k_jsonl, load_problems
from glimp_llm.bench.modes import ModeSpec, parse_modes, registry
from glimp_llm.bench.runner import BenchPlan, Mode, ModeRunner, Record, run_plan
from glimp_llm.bench.stats import summarize

__all__ = [
    "MATH_INSTRUCTION",
    "BenchPlan",
    "Mode",
    "ModeRunner",
    "ModeSpec",
    "Problem",
    "Record",
    "extract_answer",
    "gold_number",
    "gsm_symbolic",
    "is_correct",
    "load_gsm8k_jsonl",
    "load_problems",
    "parse_modes",
    "registry",
    "run_plan",
    "summarize",
]
