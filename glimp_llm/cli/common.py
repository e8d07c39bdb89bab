"""Options shared by the subcommands that build a routed generator."""

from __future__ import annotations

import argparse
from typing import Any

from glimp_llm.config import GlimpConfig


def add_config_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("models and routing")
    g.add_argument("--config", metavar="FILE", help="a YAML/TOML/JSON GlimpConfig file")
    g.add_argument(
        "--small",
        metavar="MODEL",
        help="small model (llama.cpp): registered name, .gguf path or Hugging Face repo (OWNER/REPO[:QUANT])",
    )
    g.add_argument(
        "--large",
        metavar="MODEL",
        help="large model (llama.cpp): registered name, .gguf path or Hugging Face repo (OWNER/REPO[:QUANT])",
    )
    g.add_argument("--threshold", "--tau", type=float, metavar="T", help="entropy threshold tau in nats")
    g.add_argument("--max-tokens", type=int, metavar="N", help="budget of generated tokens")
    g.add_argument("--temperature", type=float, metavar="T", help="sampling temperature (0 = greedy)")
    g.add_argument("--paper-faithful", action="store_true", help="the authors' variant (top-20, glimpse discarded)")
    g.add_argument("--n-ctx", type=int, metavar="N", help="context window of llama.cpp models")


def config_from_args(args: argparse.Namespace) -> GlimpConfig:
    """File < GLIMP_* environment < command-line flags."""
    overrides: dict[str, Any] = {}
    for role in ("small", "large"):
        model = getattr(args, role, None)
        if model:
            engine: dict[str, Any] = {"kind": "llama_cpp", "model": model}
            if getattr(args, "n_ctx", None):
                engine["n_ctx"] = args.n_ctx
            overrides[role] = engine
        elif getattr(args, "n_ctx", None) and not getattr(args, "config", None):
            overrides[role] = {"n_ctx": args.n_ctx}
    router: dict[str, Any] = {}
    if getattr(args, "threshold", None) is not None:
        router["threshold"] = args.threshold
    if getattr(args, "max_tokens", None) is not None:
        router["max_tokens"] = args.max_tokens
    if getattr(args, "temperature", None) is not None:
        router["sampling"] = {"temperature": args.temperature}
    if getattr(args, "paper_faithful", False):
        router["paper_faithful"] = True
    if getattr(args, "router_glimpse_tokens", None) is not None:
        router["glimpse_tokens"] = args.router_glimpse_tokens
    if router:
        overrides["router"] = router
    return GlimpConfig.load(getattr(args, "config", None), **overrides)
