"""``glimp serve``: the routed model as an OpenAI-compatible HTTP service (needs the ``server`` extra)."""

from __future__ import annotations

import argparse
import os
import sys

from pydantic import ValidationError

from glimp_llm.cli.common import add_config_options, config_from_args
from glimp_llm.errors import ConfigurationError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the routed model over an OpenAI-compatible HTTP API",
        description=(
            "Serve /v1/chat/completions, /v1/completions (SSE streaming), /v1/models, /health and /metrics. "
            "Binds 127.0.0.1 unless --host says otherwise. The API key may also come from GLIMP_SERVE_API_KEY "
            "(keeps it out of the process list)."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", metavar="KEY", help="require `Authorization: Bearer KEY` (or GLIMP_SERVE_API_KEY)")
    p.add_argument("--model-name", default="glimp", help="the model id clients send (default: glimp)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="larger request bodies get 413")
    p.add_argument("--max-prompt-chars", type=int, default=200_000, help="longer prompts get 413")
    p.add_argument("--log-prompts", action="store_true", help="log prompt and completion text (off by default)")
    p.add_argument("--no-trace", action="store_true", help="leave the routing trace (`glimp` field) out of responses")
    add_config_options(p)
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    try:
        from glimp_llm.server import ServerSettings, run
    except ImportError as exc:
        print(f"glimp serve needs the server extra: pip install 'glimp-llm[server]' ({exc})", file=sys.stderr)
        return 2
    try:
        settings = ServerSettings(
            host=args.host,
            port=args.port,
            api_key=args.api_key or os.environ.get("GLIMP_SERVE_API_KEY") or None,
            model_name=args.model_name,
            max_body_bytes=args.max_body_bytes,
            max_prompt_chars=args.max_prompt_chars,
            log_prompts=args.log_prompts,
            include_trace=not args.no_trace,
        )
    except ValidationError as exc:  # a flag out of its range: name the flag, not pydantic's field
        problems = "; ".join(f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" for e in exc.errors())
        raise ConfigurationError(f"glimp serve: {problems}") from None
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        print(
            f"glimp serve: warning: listening on {settings.host} without an API key; anyone who can reach it can "
            "use the models (set --api-key or GLIMP_SERVE_API_KEY)",
            file=sys.stderr,
        )
    from rich.console import Console

    from glimp_llm.cli.models import fetch_config_models

    config = config_from_args(args)
    fetch_config_models(config, Console(stderr=True))  # a first start downloads with a progress bar
    run(config, settings)
    return 0
