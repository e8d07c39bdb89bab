"""``glimp doctor``: what is installed, which engines can run here, whether a GPU and TensorRT-LLM exist."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import platform
import re
import shutil
import subprocess
from typing import Any


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("doctor", help="check the installation: engines, models, GPU, TensorRT-LLM")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=main)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


#: Kept equal to glimp_llm.engines.tensorrt_llm.SUPPORTED_RANGE and the `tensorrt` extra (not imported from the
#: driver so that doctor stays light); tests check that they agree.
TENSORRT_SUPPORTED = ">=1.1,<1.3"


def _tensorrt_version_problem(version: str) -> str | None:
    """Why the installed tensorrt-llm cannot run the in-process driver (below 1.1: no cache_salt, no
    cached_tokens; 1.3.0rc21 and later: no TensorRT-engine backend, HF checkpoints only), or None."""
    from glimp_llm.engines.tensorrt_llm import version_problem

    problem = version_problem(version)
    minor = re.match(r"1\.(\d+)", version)
    if problem is None and minor is not None and int(minor[1]) >= 3:
        return (
            f"tensorrt-llm {version}: engine directories need <1.3 (the TensorRT backend was removed after "
            "1.3.0rc20); HF checkpoints on backend: pytorch may work but are outside the tested range"
        )
    return problem


def _gpu() -> dict[str, Any]:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return {"present": False, "detail": "nvidia-smi not found"}
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"present": False, "detail": f"nvidia-smi failed: {exc}"}
    lines = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
    return {"present": bool(lines), "detail": "; ".join(lines) or out.stderr.strip()}


def collect() -> dict[str, Any]:
    from glimp_llm import models

    engines: dict[str, dict[str, Any]] = {
        "llama_cpp": {"package": "llama-cpp-python", "version": _version("llama-cpp-python")},
        "openai": {"package": "httpx", "version": _version("httpx")},
        "tensorrt_llm": {"package": "tensorrt-llm", "version": _version("tensorrt-llm")},
        "scripted": {"package": "(built in)", "version": _version("glimp-llm") or "source"},
    }
    for info in engines.values():
        info["available"] = info["version"] is not None
    trt = engines["tensorrt_llm"]
    trt["supported"] = TENSORRT_SUPPORTED
    if trt["available"]:
        trt["importable"] = importlib.util.find_spec("tensorrt_llm") is not None
        trt["problem"] = _tensorrt_version_problem(trt["version"])
    adapters = {
        "langchain": _version("langchain-core"),
        "llama_index": _version("llama-index-core"),
        "server (fastapi)": _version("fastapi"),
        "xllamacpp (test server)": _version("xllamacpp"),
    }
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "glimp_llm": _version("glimp-llm") or "source checkout",
        "engines": engines,
        "adapters": adapters,
        "models": {name: models.status(name) for name in models.REGISTRY},
        "gpu": _gpu(),
        "cache_dir": str(models.cache_dir()),
    }


def main(args: argparse.Namespace) -> int:
    report = collect()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"glimp-llm {report['glimp_llm']} on Python {report['python']} ({report['platform']})")
    t = Table("engine", "package", "version", "usable here", title="engines")
    for name, info in report["engines"].items():
        ok = info["available"] and info.get("importable", True) and not info.get("problem")
        t.add_row(name, info["package"], info["version"] or "-", "[green]yes[/]" if ok else "[red]no[/]")
    console.print(t)
    t = Table("model", "packages", "assembled", "verified", title="models")
    for name, st in report["models"].items():
        t.add_row(name, st["packages_installed"], str(st["assembled"]), str(st["verified"]))
    console.print(t)
    console.print("adapters: " + ", ".join(f"{k}={v or '-'}" for k, v in report["adapters"].items()))
    gpu = report["gpu"]
    console.print(
        f"GPU: {'[green]' + gpu['detail'] + '[/]' if gpu['present'] else '[yellow]none[/] (' + gpu['detail'] + ')'}"
    )
    trt = report["engines"]["tensorrt_llm"]
    if not trt["available"]:
        console.print(
            f"TensorRT-LLM: not installed (supported: tensorrt-llm{trt['supported']}). On a CUDA host: "
            "pip install 'glimp-llm\\[tensorrt]' --extra-index-url https://pypi.nvidia.com (see docs/deploy-nvidia.md)"
        )
    elif trt.get("problem"):
        console.print(f"TensorRT-LLM: [red]{trt['problem']}[/]", markup=True, highlight=False)
    else:
        console.print(f"TensorRT-LLM: {trt['version']} (supported: tensorrt-llm{trt['supported']})")
    return 0
