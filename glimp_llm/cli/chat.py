"""``glimp chat``: an interactive conversation with the routed model, steps coloured by who wrote them."""

from __future__ import annotations

import argparse

from glimp_llm.cli.common import add_config_options, config_from_args


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("chat", help="chat interactively; each step is coloured by the model that wrote it")
    add_config_options(p)
    p.add_argument("--system", metavar="TEXT", help="system prompt")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from glimp_llm.cli.models import fetch_config_models
    from glimp_llm.client import Glimp
    from glimp_llm.render import MODEL_STYLE, summary_line
    from glimp_llm.router import RouteRequest
    from glimp_llm.trace import DoneEvent, TokenEvent

    console = Console()
    messages: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []
    config = config_from_args(args)
    fetch_config_models(config, console)  # first run: download or assemble with a progress bar, then load
    with console.status("loading models...", spinner="dots"):
        glimp = Glimp(config).start()
    console.print(
        "[green]small[/green] / [magenta]large[/magenta] model steps are coloured. Empty line or Ctrl-D to quit."
    )
    try:
        while True:
            try:
                line = console.input("[bold]> [/bold]").strip()
            except EOFError:
                break
            if not line:
                break
            messages.append({"role": "user", "content": line})
            answer = ""
            for event in glimp.stream(RouteRequest(messages=list(messages))):
                if isinstance(event, TokenEvent):
                    answer += event.text
                    console.print(event.text, style=MODEL_STYLE[event.model], end="", soft_wrap=True, highlight=False)
                elif isinstance(event, DoneEvent):
                    console.print()
                    console.print(summary_line(event.result), style="dim")
            messages.append({"role": "assistant", "content": answer})
    finally:
        glimp.close()
    return 0
