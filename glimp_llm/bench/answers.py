"""Final numeric answers: pull one out of a model's text, and score it against the gold answer.

Why so careful: accuracy is half of every benchmark row, and a sloppy extractor shifts all modes by a
different amount (the small model writes ``\\boxed{}`` less reliably than the large one). The order of
preference follows what the prompt asks for: the last ``\\boxed{...}`` first, then an explicit "answer is"
/ "Answer:" / "####" marker, and only then the last number in the text.
"""

from __future__ import annotations

import re
from fractions import Fraction

_NUMBER = r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?|-?\.\d+"
_FRAC = r"\\d?frac\{\s*(-?[\d.]+)\s*\}\{\s*(-?[\d.]+)\s*\}"
#: a ``\frac{a}{b}`` or a number, left to right; the numbers inside a fraction are part of its match
_FRAC_OR_NUMBER = re.compile(f"{_FRAC}|{_NUMBER}")
_MARKERS = (
    re.compile(r"####\s*([^\n]*)"),
    re.compile(r"(?i)final answer\s*(?:is|:)?\s*[:=]?\s*([^\n]*)"),
    re.compile(r"(?i)\banswer\s*(?:is|:)\s*([^\n]*)"),
)


def boxed_contents(text: str) -> list[str]:
    """Every ``\\boxed{...}`` (or ``\\fbox{...}``) body in ``text``, with nested braces balanced."""
    out: list[str] = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append(text[m.end() : i - 1])
    return out


def parse_number(text: str, *, last: bool = True) -> Fraction | None:
    """The last (or first) number in ``text`` as an exact fraction; ``\\frac{a}{b}`` is understood,
    thousands separators and currency signs are ignored."""
    cleaned = text.replace("\\$", "").replace("$", "").replace("\\!", "").replace("\\,", "")
    values: list[Fraction] = []
    for m in _FRAC_OR_NUMBER.finditer(cleaned):
        try:
            if m.group(1) is None:
                values.append(Fraction(m.group(0).replace(",", "")))
            else:
                values.append(Fraction(m.group(1)) / Fraction(m.group(2)))
        except (ValueError, ZeroDivisionError):
            continue
    if not values:
        return None
    return values[-1] if last else values[0]


def extract_answer(text: str) -> Fraction | None:
    """The final numeric answer a model gave, or None when it gave none."""
    for body in reversed(boxed_contents(text)):
        value = parse_number(body)
        if value is not None:
            return value
    for marker in _MARKERS:
        for hit in reversed(marker.findall(text)):
            value = parse_number(hit, last=False)
            if value is not None:
                return value
    return parse_number(text)


def gold_number(answer: str) -> Fraction:
    """The gold answer of a GSM8K-format record (``... #### 18``) or a bare number (reasoning-gym)."""
    tail = answer.rsplit("####", 1)[-1]
    value = parse_number(tail, last=False)
    if value is None:
        raise ValueError(f"no numeric gold answer in {answer[-80:]!r}")
    return value


def is_correct(predicted: Fraction | None, gold: Fraction, *, rel_tol: float = 1e-6) -> bool:
    """Exact for integers and fractions; a relative tolerance for decimals written with rounding."""
    if predicted is None:
        return False
    if predicted == gold:
        return True
    return abs(float(predicted) - float(gold)) <= rel_tol * max(1.0, abs(float(gold)))


def format_number(value: Fraction | None) -> str | None:
    """A short, JSON-friendly spelling of an extracted number ("18", "2.5", "1/3")."""
    if value is None:
        return None
    if value.denominator == 1:
        return str(value.numerator)
    as_float = float(value)
    return f"{as_float:g}" if Fraction(f"{as_float:g}") == value else f"{value.numerator}/{value.denominator}"
