"""Benchmark problems: any GSM8K-format JSONL file, or reasoning-gym's seeded ``gsm_symbolic`` generator.

Why two sources: the real GSM8K test split cannot ship with the project (it is passed with ``--data``),
while reasoning-gym installs from PyPI and generates GSM8K-style problems reproducibly from a seed, so
``glimp bench`` works out of the box. Both become :class:`Problem` records with a numeric gold answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from glimp_llm.bench.answers import gold_number
from glimp_llm.errors import ConfigurationError

#: The authors' math prompt (GlimpRouter/SpecReason), which asks for "\n\n"-separated steps.
MATH_INSTRUCTION = (
    "Solve the following math problem and return ONLY the final answer. Please reason step by step, "
    "separate logical reasoning steps with two newline characters (\n\n), and put your final answer "
    "within \\boxed{}."
)


@dataclass(frozen=True)
class Problem:
    """One question with a numeric gold answer. ``id`` is stable across runs (source and index)."""

    id: str
    question: str
    gold: Fraction
    source: str

    @property
    def prompt(self) -> str:
        """The user message: the authors' instruction, then the problem."""
        return f"{MATH_INSTRUCTION}\n\n{self.question.strip()}"


def load_gsm8k_jsonl(path: str | Path, *, offset: int = 0, limit: int | None = None) -> list[Problem]:
    """Problems ``offset .. offset+limit`` of a JSONL file with ``question`` and ``answer`` ("... #### N")."""
    p = Path(path)
    if not p.is_file():
        raise ConfigurationError(f"--data {p}: no such file; pass a GSM8K-format JSONL (question, answer)")
    problems: list[Problem] = []
    with p.open(encoding="utf-8") as fh:
        for index, line in enumerate(fh):
            if index < offset or not line.strip():
                continue
            if limit is not None and len(problems) >= limit:
                break
            try:
                row = json.loads(line)
                problems.append(Problem(f"{p.stem}:{index}", row["question"], gold_number(row["answer"]), p.name))
            except (KeyError, ValueError, json.JSONDecodeError) as exc:
                raise ConfigurationError(f"{p}:{index + 1}: not a GSM8K record with a numeric answer ({exc})") from exc
    return problems


def gsm_symbolic(*, offset: int = 0, limit: int = 100, seed: int = 42) -> list[Problem]:
    """Seeded reasoning-gym ``gsm_symbolic`` problems (``pip install 'glimp-llm[bench]'``)."""
    try:
        import reasoning_gym
    except ImportError as exc:
        raise ConfigurationError(
            "the default dataset needs reasoning-gym: pip install 'glimp-llm[bench]' (or pass --data FILE.jsonl)"
        ) from exc
    dataset = reasoning_gym.create_dataset("gsm_symbolic", size=offset + limit, seed=seed)
    return [
        Problem(
            f"gsm_symbolic:{seed}:{i}", dataset[i]["question"], gold_number(str(dataset[i]["answer"])), "gsm_symbolic"
        )
        for i in range(offset, offset + limit)
    ]


def load_problems(data: str | None, *, offset: int = 0, limit: int = 100, seed: int = 42) -> list[Problem]:
    """``data`` is a JSONL path, or None for the seeded reasoning-gym generator."""
    if data:
        return load_gsm8k_jsonl(data, offset=offset, limit=limit)
    return gsm_symbolic(offset=offset, limit=limit, seed=seed)
