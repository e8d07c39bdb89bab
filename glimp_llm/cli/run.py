"""``glimp run PROMPT``: answer one prompt with routing, and show who wrote which step."""

from __future__ import annotations

import argparse
import json
import sys

from glimp_llm.cli.common import add_config_options, config_from_args


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="answer a prompt, routing each step between the small and large model")
    p.add_argument("prompt", help="the question (use - to read it from standard input)")
    add_config_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object: text, steps, usage, timings")
    p.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    p.add_argument("--system", metavar="TEXT", help="system prompt")
    p.add_argument(
        "--glimpse-tokens",
        dest="router_glimpse_tokens",
        type=int,
        metavar="K",
        help="route on the largest entropy of the small model's first K tokens (router.glimpse_tokens; 1 = paper)",
    )
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from glimp_llm.cli.models import fetch_config_models
    from glimp_llm.client import Glimp
    from glimp_llm.render import MODEL_STYLE, print_result, step_table, summary_line
    from glimp_llm.router import RouteRequest
    from glimp_llm.trace import DoneEvent, RoutedResult, TokenEvent

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    config = config_from_args(args)
    err = Console(stderr=True)
    messages = None
    if args.system:
        messages = [{"role": "system", "content": args.system}, {"role": "user", "content": prompt}]
    request = RouteRequest(prompt=None if messages else prompt, messages=messages)
    fetch_config_models(config, err)  # first run: download or assemble with a progress bar, then load
    with err.status("loading models...", spinner="dots"):
        glimp = Glimp(config).start()
    try:
        if args.json:
            result = glimp.generate(request)
            print(json.dumps(result.to_json_dict(), ensure_ascii=False, indent=2))
            return 0
        out = Console()
        if args.stream:
            streamed: RoutedResult | None = None
            for event in glimp.stream(request):
                if isinstance(event, TokenEvent):
                    out.print(event.text, style=MODEL_STYLE[event.model], end="", soft_wrap=True, highlight=False)
                elif isinstance(event, DoneEvent):
                    streamed = event.result
            out.print()
            if streamed is not None:
                out.print(step_table(streamed, width=out.width))
                out.print(summary_line(streamed))
            return 0
        with err.status("routing...", spinner="dots"):
            result = glimp.generate(request)
        print_result(result, out)
        return 0
    finally:
        glimp.close()
