"""The tools the agent tasks use: arithmetic, a unit converter and two lookup tables.

They are deterministic and answer in plain text a small model can copy, so a task's expected answer is
exactly what a correct chain of calls produces. The lookup tables hold made-up values (a fictional
store), so a model cannot answer from memory: the task is only solved by calling the tool. Arguments
arrive from the model's JSON; numbers given as strings ("37") are accepted by the tools' schemas.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.tools import BaseTool, tool

# Units as (dimension, size in the dimension's base unit). One table, so every pair of units of the same
# dimension converts exactly as the task author computed it.
UNITS: dict[str, tuple[str, float]] = {
    "mm": ("length", 0.001),
    "cm": ("length", 0.01),
    "m": ("length", 1.0),
    "km": ("length", 1000.0),
    "in": ("length", 0.0254),
    "ft": ("length", 0.3048),
    "yd": ("length", 0.9144),
    "mi": ("length", 1609.344),
    "g": ("mass", 1.0),
    "kg": ("mass", 1000.0),
    "oz": ("mass", 28.349523125),
    "lb": ("mass", 453.59237),
    "s": ("time", 1.0),
    "min": ("time", 60.0),
    "h": ("time", 3600.0),
    "day": ("time", 86400.0),
}
# What people (and models) write instead of the symbols above.
UNIT_ALIASES: dict[str, str] = {
    "millimeter": "mm",
    "millimetre": "mm",
    "centimeter": "cm",
    "centimetre": "cm",
    "meter": "m",
    "metre": "m",
    "kilometer": "km",
    "kilometre": "km",
    "inch": "in",
    "inche": "in",
    "foot": "ft",
    "feet": "ft",
    "yard": "yd",
    "mile": "mi",
    "gram": "g",
    "kilogram": "kg",
    "ounce": "oz",
    "pound": "lb",
    "lbs": "lb",
    "second": "s",
    "sec": "s",
    "minute": "min",
    "hour": "h",
    "hr": "h",
    "d": "day",
}

PRICES: dict[str, float] = {"lantern": 18.0, "compass": 27.5, "tent": 120.0, "rope": 9.25, "stove": 64.0}
STOCK: dict[str, int] = {"lantern": 35, "compass": 12, "tent": 42, "rope": 150, "stove": 8}


def fmt(value: float) -> str:
    """A number as a model should read and repeat it: ``851`` rather than ``851.0``, no float noise."""
    return str(round(value)) if abs(value - round(value)) < 1e-9 else f"{value:.10g}"


def _unit(name: str) -> str:
    key = name.strip().lower().rstrip(".")
    if key in UNITS:
        return key
    for candidate in (key, key.removesuffix("s"), key.removesuffix("es")):
        if candidate in UNIT_ALIASES:
            return UNIT_ALIASES[candidate]
        if candidate in UNITS:
            return candidate
    raise ValueError(f"unknown unit {name!r}; use one of {', '.join(UNITS)}")


def _item(name: str, table: dict[str, Any]) -> str:
    key = name.strip().lower()
    for article in ("the ", "a ", "an ", "one "):
        key = key.removeprefix(article)
    for candidate in (key, key.removesuffix("s"), key.removesuffix("es")):
        if candidate in table:
            return candidate
    raise KeyError(f"unknown item {name!r}; the catalogue has {', '.join(sorted(table))}")


@tool
def multiply(a: float, b: float) -> str:
    """Multiply two numbers and return the product."""
    return fmt(a * b)


@tool
def add(a: float, b: float) -> str:
    """Add two numbers and return the sum."""
    return fmt(a + b)


@tool
def convert_units(value: float, from_unit: str, to_unit: str) -> str:
    """Convert a quantity between units of length (mm, cm, m, km, in, ft, yd, mi), mass (g, kg, oz, lb)
    or time (s, min, h, day) and return the converted number."""
    try:
        (dim_a, size_a), (dim_b, size_b) = UNITS[_unit(from_unit)], UNITS[_unit(to_unit)]
    except ValueError as exc:
        return f"error: {exc}"
    if dim_a != dim_b:
        return f"error: cannot convert {dim_a} ({from_unit}) to {dim_b} ({to_unit})"
    return fmt(value * size_a / size_b)


@tool
def lookup_price(item: str) -> str:
    """Look up the price in dollars of one item in the store catalogue."""
    try:
        return fmt(PRICES[_item(item, PRICES)])
    except KeyError as exc:
        return f"error: {exc.args[0]}"


@tool
def lookup_stock(item: str) -> str:
    """Look up how many units of an item the store has in stock."""
    try:
        return fmt(STOCK[_item(item, STOCK)])
    except KeyError as exc:
        return f"error: {exc.args[0]}"


TOOLS: dict[str, BaseTool] = {t.name: t for t in (multiply, add, convert_units, lookup_price, lookup_stock)}


def call(name: str, args: dict[str, Any]) -> str:
    """Run a tool as the agent would (through its schema), for replaying a task's reference plan."""
    runner: Callable[[dict[str, Any]], str] = TOOLS[name].invoke
    return runner(args)
