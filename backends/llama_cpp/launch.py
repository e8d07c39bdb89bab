"""Start llama.cpp's HTTP server (embedded in the ``xllamacpp`` wheel) for one GGUF model, on 127.0.0.1.

Why a Python launcher rather than a ``llama-server`` binary: ``xllamacpp`` is a prebuilt wheel that embeds
the very same server (parallel slots, continuous batching, prompt cache, ``/completion`` with ``n_probs``,
``/tokenize``, ``/props``) and installs in seconds, while a standalone binary has to be compiled here.

    python backends/llama_cpp/launch.py --model qwen2.5-coder-0.5b-instruct --port 8081 --parallel 4

``--model`` takes a registered model name (``glimp models``) or a path to a ``.gguf`` file. The process
prints one line ``READY http://127.0.0.1:PORT`` once the server answers, then serves until SIGTERM/SIGINT.
It binds 127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import urllib.request


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="registered model name or path to a .gguf file")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: loopback only)")
    p.add_argument("--port", type=int, default=0, help="port (0 = a free one, printed on the READY line)")
    p.add_argument("--parallel", type=int, default=4, help="slots: requests decoded together (continuous batching)")
    p.add_argument("--ctx", type=int, default=8192, help="total context tokens, shared by the slots")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--alias", default=None, help="model name the server reports in /v1/models")
    p.add_argument("--api-key", default=None, help="require this bearer key on every request")
    return p.parse_args(argv)


def resolve_model(name: str) -> str:
    try:
        from glimp_llm import models

        return str(models.resolve(name))
    except Exception:  # not a registered name (or glimp-llm not installed): use it as a path
        return name


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import xllamacpp as xlc
    except ImportError:
        print("xllamacpp is not installed: pip install xllamacpp", file=sys.stderr)
        return 2
    params = xlc.CommonParams()
    params.model.path = resolve_model(args.model)
    params.n_ctx = args.ctx
    params.n_parallel = args.parallel
    if args.threads:
        params.cpuparams.n_threads = args.threads
        params.cpuparams_batch.n_threads = args.threads
    params.hostnames = [args.host]
    params.port = args.port
    params.cache_prompt = True
    params.endpoint_slots = True
    if args.alias:
        params.model_alias = args.alias
    if args.api_key:
        params.api_keys = [args.api_key]
    server = xlc.Server(params)
    address = server.listening_address
    # The server answers /health with 503 while it loads; READY means a request would be served now.
    req = urllib.request.Request(f"{address}/health")
    if args.api_key:
        req.add_header("Authorization", f"Bearer {args.api_key}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        if resp.status != 200:
            print(f"server at {address} is not healthy: HTTP {resp.status}", file=sys.stderr)
            return 1
    print(f"READY {address}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    del server
    return 0


if __name__ == "__main__":
    sys.exit(main())
