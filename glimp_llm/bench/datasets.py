"""Benchmark problems: any GSM8K-format JSONL file, or reasoning-gym's seeded ``gsm_symbolic`` generator.

Why two sources: the real GSM8K test split cannot ship with the project (it is passed with ``--data``),
while reasoning-gym installs from PyPI and generates GSM8K-style problems reproducibly from a seed, so
``glimp bench`` works out of the box. Both become :class:`Problem` records with a numeric gold answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from itertools import islice
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
    """Problems ``offset .. offset+limit`` of a JSONL file with ``question`` and ``answer`` ("... #### N").
    A file that is missing, unreadable or not such records raises :class:`ConfigurationError` naming the
    file (and line) and the fix, before any model is loaded."""
    p = Path(path)
    problems: list[Problem] = []
    for index, line in numbered_lines(p, offset=offset, limit=limit):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not row["question"].strip():
                raise KeyError("question")
            problems.append(Problem(f"{p.stem}:{index}", row["question"], gold_number(str(row["answer"])), p.name))
        except (KeyError, ValueError, json.JSONDecodeError) as exc:
            raise ConfigurationError(
                f"{p}:{index + 1}: not a GSM8K record (a 'question' string and an 'answer' ending in '#### N'; "
                f"{type(exc).__name__}: {exc}); fix the line or pass another --data file"
            ) from exc
    return problems


def numbered_lines(path: Path, *, offset: int, limit: int | None) -> Iterator[tuple[int, str]]:
    """(index, line) of the non-blank lines of a ``--data`` file from line ``offset`` on, ``limit`` at most."""
    lines = enumerate(read_lines(path, "--data"))
    return islice(((index, line) for index, line in lines if index >= offset and line.strip()), limit)


def read_lines(path: Path, flag: str) -> list[str]:
    """The lines of a UTF-8 text file, with a typed error that names the flag when it cannot be read."""
    if not path.exists():
        raise ConfigurationError(f"{flag} {path}: no such file; pass a GSM8K-format JSONL (question, answer)")
    if not path.is_file():
        raise ConfigurationError(f"{flag} {path}: not a file; pass a GSM8K-format JSONL (question, answer)")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except PermissionError as exc:
        raise ConfigurationError(f"{flag} {path}: not readable ({exc.strerror}); fix its permissions") from exc
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{flag} {path}: not UTF-8 text ({exc.reason}); pass a JSONL file") from exc


def count_rows(path: str | Path) -> int:
    """How many non-blank lines (problems) a JSONL file holds."""
    return sum(1 for line in read_lines(Path(path), "--data") if line.strip())


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
