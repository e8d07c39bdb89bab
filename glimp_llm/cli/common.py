"""Options shared by the subcommands that build a routed generator."""

from __future__ import annotations

import argparse
from typing import Any

from glimp_llm.config import GlimpConfig


def add_config_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("models and routing")
    g.add_argument("--config", metavar="FILE", help="a YAML/TOML/JSON GlimpConfig file")
    for role in ("small", "large"):
        g.add_argument(
            f"--{role}",
            metavar="MODEL",
            help=f"{role} model (llama.cpp): registered name, .gguf path or Hugging Face repo (OWNER/REPO[:QUANT])",
        )
    g.add_argument("--threshold", "--tau", type=float, metavar="T", help="entropy threshold tau in nats")
    g.add_argument("--max-tokens", type=int, metavar="N", help="budget of generated tokens")
    g.add_argument("--temperature", type=float, metavar="T", help="sampling temperature (0 = greedy)")
    g.add_argument("--paper-faithful", action="store_true", help="the authors' variant (top-20, glimpse discarded)")
    g.add_argument("--n-ctx", type=int, metavar="N", help="context window of llama.cpp models")


def config_from_args(args: argparse.Namespace) -> GlimpConfig:
    """File < GLIMP_* environment < command-line flags (those of :func:`add_config_options`, and ``glimp
    run --glimpse-tokens``)."""
    overrides: dict[str, Any] = {}
    for role in ("small", "large"):
        model = getattr(args, role)
        if model:
            overrides[role] = {"kind": "llama_cpp", "model": model}
        if args.n_ctx and (model or not args.config):  # without a config file: the default llama.cpp models
            overrides.setdefault(role, {})["n_ctx"] = args.n_ctx
    given = {
        "threshold": args.threshold,
        "max_tokens": args.max_tokens,
        "sampling": None if args.temperature is None else {"temperature": args.temperature},
        "paper_faithful": args.paper_faithful or None,  # the flag only ever turns it on
        "glimpse_tokens": getattr(args, "router_glimpse_tokens", None),
    }
    router = {k: v for k, v in given.items() if v is not None}
    if router:
        overrides["router"] = router
    return GlimpConfig.load(args.config, **overrides)
