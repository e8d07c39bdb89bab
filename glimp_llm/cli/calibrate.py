"""``glimp calibrate --target-large-share S --data FILE``: set tau from your own prompts.

It checks its inputs and output first (:func:`preflight`: nothing fails after the generations), then
glimpses the small model at every step start of sample solutions to the prompts, draws the entropy
distribution in the terminal, and writes a config file whose ``router.threshold`` sends share ``S`` of
the steps to the large model (see :mod:`glimp_llm.calibrate` and docs/calibration.md for why tau must be
calibrated per model pair and entropy kind).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from glimp_llm.bench import preflight as checks
from glimp_llm.bench.datasets import MATH_INSTRUCTION, gsm_symbolic, numbered_lines
from glimp_llm.cli.common import add_config_options, config_from_args
from glimp_llm.errors import ConfigurationError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("calibrate", help="choose tau for a target share of large-model steps, from your prompts")
    add_config_options(p)
    p.add_argument("--target-large-share", type=float, required=True, metavar="S", help="share of steps (0..1)")
    p.add_argument("--data", metavar="FILE", help="GSM8K-format JSONL, or any JSONL with a 'question'/'prompt'")
    p.add_argument("--limit", type=int, default=8, help="prompts to use (each: small and large sample solutions)")
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--seed", type=int, default=42, help="seed of the generated dataset when --data is not given")
    p.add_argument(
        "--entropy",
        choices=["exact", "paper", "look-ahead"],
        help="entropy kind tau is for (default: paper with --paper-faithful, look-ahead with router.glimpse_tokens "
        "> 1, else exact)",
    )
    p.add_argument(
        "--trajectories", default="small,large", help="whose sample solutions to glimpse along (small,large)"
    )
    p.add_argument("--out", metavar="FILE", default="glimp.yaml", help="config file to write (.yaml/.json/.toml)")
    p.set_defaults(handler=main)


def read_prompts(path: str, *, offset: int, limit: int) -> list[str]:
    """User messages from a JSONL file: GSM8K records get the benchmark's math prompt; other rows give
    their ``prompt`` (or ``question``) as is. A row that is neither raises the typed error naming it."""
    p = Path(path)
    prompts: list[str] = []
    for index, line in numbered_lines(p, offset=offset, limit=limit):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"{p}:{index + 1}: not JSON ({exc}); fix the line or pass another --data") from exc
        if isinstance(row, dict) and isinstance(row.get("prompt"), str):
            prompts.append(row["prompt"])
        elif isinstance(row, dict) and isinstance(row.get("question"), str):
            prompts.append(f"{MATH_INSTRUCTION}\n\n{row['question'].strip()}")
        else:
            raise ConfigurationError(f"{p}:{index + 1}: a row needs a 'prompt' or 'question' string")
    return prompts


def preflight(args: argparse.Namespace) -> tuple[Any, list[str], tuple[str, ...]]:
    """Everything the calibration needs, checked before its first generation: the share, the trajectories,
    the output file (format and writable), the prompts (readable, enough for --offset/--limit), the models.
    Returns the config, the prompts and the trajectories."""
    if not 0.0 <= args.target_large_share <= 1.0:
        raise ConfigurationError(f"--target-large-share must be within 0..1; got {args.target_large_share}")
    if args.limit < 1 or args.offset < 0:
        raise ConfigurationError(f"--limit must be >= 1 and --offset >= 0; got {args.limit} and {args.offset}")
    trajectories = tuple(t.strip() for t in args.trajectories.split(",") if t.strip())
    if not trajectories or any(t not in ("small", "large") for t in trajectories):
        raise ConfigurationError(f"--trajectories {args.trajectories!r}: use small, large or small,large")
    out = Path(args.out)
    if out.suffix not in (".yaml", ".yml", ".json", ".toml"):
        raise ConfigurationError(f"--out {out}: use a .yaml, .json or .toml file name")
    checks.check_writable(out, "--out")
    if args.data:
        prompts = read_prompts(args.data, offset=args.offset, limit=args.limit)
        source = f"--data {args.data}"
    else:
        prompts = [p.prompt for p in gsm_symbolic(offset=args.offset, limit=args.limit, seed=args.seed)]
        source = "the generated dataset"
    checks.check_problem_count(
        len(prompts),
        args.limit,
        source=source,
        what=f"--offset {args.offset} --limit {args.limit} asks for",
        fix=f"lower --limit to {len(prompts)} or --offset" if prompts else "lower --offset",
    )
    config = config_from_args(args)
    if config.router.glimpse_tokens > 1 and args.entropy == "exact":
        raise ConfigurationError(
            f"router.glimpse_tokens={config.router.glimpse_tokens} routes on the look-ahead signal, not on the "
            "first token's exact entropy: drop --entropy exact (or set glimpse_tokens to 1)"
        )
    checks.check_models(config)
    return config, prompts, trajectories


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from glimp_llm.cli.models import fetch_config_models

    config, prompts, trajectories = preflight(args)
    fetch_config_models(config, Console(stderr=True))  # a first run downloads with a progress bar
    return asyncio.run(_calibrate(args, config, prompts, trajectories))


async def _calibrate(args: argparse.Namespace, config: Any, prompts: list[str], trajectories: Any) -> int:
    from rich.console import Console

    from glimp_llm.calibrate import EntropyChoice, calibrate, collect_glimpses
    from glimp_llm.manager import BackendManager
    from glimp_llm.render import entropy_histogram

    console = Console(stderr=True)
    default: EntropyChoice = "look-ahead" if config.router.glimpse_tokens > 1 else "exact"
    entropy: EntropyChoice = args.entropy or ("paper" if config.router.paper_faithful else default)
    async with BackendManager(config) as manager:
        with console.status(f"glimpsing along sample solutions to {len(prompts)} prompts..."):
            samples = await collect_glimpses(
                manager.small, manager.large, prompts, config.router, trajectories=trajectories
            )
    result = calibrate(samples, args.target_large_share, entropy)
    values = [s.value(entropy) for s in samples]
    console.print(f"[bold]{entropy} glimpse entropies of the small model[/bold] ({len(values)} step starts)")
    console.print(entropy_histogram(values, threshold=result.threshold))
    console.print("quantiles: " + ", ".join(f"{k} {v:.3f}" for k, v in result.quantiles.items()), highlight=False)
    updated = config.with_router(threshold=result.threshold, paper_faithful=entropy == "paper")
    write_config(Path(args.out), updated.model_dump(mode="json"))
    console.print(
        f"tau = {result.threshold:.4f} nats sends {result.realised_share:.1%} of the sampled steps to the large "
        f"model (target {args.target_large_share:.1%}); wrote {args.out}",
        highlight=False,
    )
    print(f"{result.threshold:.6g}")
    return 0


def write_config(path: Path, data: dict[str, Any]) -> None:
    """A config file ``GlimpConfig.load`` reads back, in the format its extension names (.yaml/.yml,
    .json, else TOML: :func:`preflight` allows no other)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".yaml", ".yml"):
        import yaml

        text = yaml.safe_dump(data, sort_keys=False)
    elif path.suffix == ".json":
        text = json.dumps(data, indent=2) + "\n"
    else:
        text = _toml(data)
    path.write_text(text, encoding="utf-8")


def _toml(data: dict[str, Any], prefix: str = "") -> str:
    scalars, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append(_toml(value, f"{prefix}{key}."))
        elif value is not None:
            scalars.append(f"{key} = {json.dumps(value)}")
    head = f"[{prefix[:-1]}]\n" if prefix and scalars else ""
    return head + "".join(s + "\n" for s in scalars) + "".join(tables)
