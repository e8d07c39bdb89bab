"""GPU smoke test of the TensorRT-LLM path, in one command (needs an NVIDIA GPU and tensorrt-llm 1.1 - 1.2.x).

    # load two prebuilt engines (or HF checkpoints of one family, PyTorch backend)
    python examples/tensorrt_llm_smoke.py --small engines/qwen2.5-0.5b-7b/small --large engines/qwen2.5-0.5b-7b/large
    # or build them first from a build_engines config, then load them
    python examples/tensorrt_llm_smoke.py --build build_engines/configs/qwen2.5-0.5b-1.5b.yaml

It checks, and prints a short report of:

1. both engines load with gather_generation_logits and KV block reuse (and validate, for engine dirs);
2. glimpse entropy == the entropy computed independently (torch, float64) from the logits the runtime
   returned for that very glimpse request (not a second request: KV reuse can change low bits), over the real
   vocabulary (and reports what all rows, padded ones included, would give);
3. a second glimpse on an extended context reuses KV blocks: ``cached_tokens`` > 0, which the driver reads from
   ``RequestOutput.cached_tokens`` on the PyTorch backend and from the request's KV-cache perf metrics
   (reused blocks x tokens per block) on the TensorRT backend, where ``cached_tokens`` is always 0;
4. a routed generation: ``--concurrency`` requests at once through the router (in-flight batching), all
   finished, with the share of large-model steps and the wall time.

Exit status 0 when every check passed. docs/deploy-nvidia.md describes what to expect.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from glimp_llm.config import RouterConfig
from glimp_llm.engines.base import SamplingParams
from glimp_llm.engines.tensorrt_llm import TensorRTLLMEngine
from glimp_llm.entropy import entropy_from_logits
from glimp_llm.router import Router

QUESTION = "A shop sells pens at 3 dollars each. Tom buys 4 pens and pays with 20 dollars. How much change does he get?"


@dataclass
class Report:
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append((name, ok, detail))

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(ok for _, ok, _ in self.checks)

    def render(self) -> str:
        lines = ["TensorRT-LLM smoke test"]
        lines += [f"  [{'PASS' if ok else 'FAIL'}] {name}: {detail}" for name, ok, detail in self.checks]
        lines.append("result: " + ("all checks passed" if self.ok else "FAILED"))
        return "\n".join(lines)


def _independent_entropy(logits: object, vocab: int) -> tuple[float, float]:
    """Entropy of the real and of the padded row, computed in float64 apart from glimp_llm.entropy (torch on a
    GPU host; numpy where the logits are not a torch tensor, as with the test fake)."""
    try:
        import torch
    except ImportError:
        torch = None  # type: ignore[assignment]
    if torch is not None and isinstance(logits, torch.Tensor):
        row = logits[0].to(torch.float64)

        def h(x: torch.Tensor) -> float:
            return float(torch.special.entr(torch.softmax(x, dim=-1)).sum())

        return h(row[:vocab]), h(row)
    import numpy as np

    arr = np.asarray(logits.float().cpu().numpy(), dtype=np.float64)[0]  # type: ignore[attr-defined]

    def hn(x: np.ndarray) -> float:
        p = np.exp(x - x.max())
        p /= p.sum()
        nz = p[p > 0]
        return float(-(nz * np.log(nz)).sum())

    return hn(arr[:vocab]), hn(arr)


async def run_smoke(
    small_dir: str, large_dir: str, *, concurrency: int = 16, threshold: float = 1.0, max_tokens: int = 256
) -> Report:
    report = Report()
    small = TensorRTLLMEngine(small_dir, name="small", free_gpu_memory_fraction=0.15)
    large = TensorRTLLMEngine(large_dir, name="large", free_gpu_memory_fraction=0.8)
    t0 = time.perf_counter()
    await small.start()  # small first: memory fractions are shares of what is free at load time
    await large.start()
    try:
        report.add("load", True, f"{small.info.backend} + {large.info.backend} in {time.perf_counter() - t0:.1f} s")
        messages = [{"role": "user", "content": QUESTION}]
        ctx = await small.tokenize(await small.render_chat(messages))
        small.keep_last_logits = True  # the logits of this very glimpse request, not of a second one
        g = await small.glimpse(ctx, SamplingParams())
        small.keep_last_logits = False
        logits = small.last_logits
        exact, padded = _independent_entropy(logits, small.info.vocab_size)
        numpy_again = entropy_from_logits(logits[0].float().cpu().numpy(), small.info.vocab_size)
        report.add(
            "glimpse entropy",
            abs(g.entropy - exact) < 1e-4 and abs(numpy_again - exact) < 1e-6,
            f"glimpse {g.entropy:.6f} nats, independent {exact:.6f}; logits {tuple(logits.shape)}, real vocab "
            f"{small.info.vocab_size} (all rows would give {padded:.6f})",
        )
        step = await small.generate(ctx, max_tokens=64, stop=["\n\n"])
        g2 = await small.glimpse(ctx + list(step.token_ids), SamplingParams())
        how = (
            "RequestOutput.cached_tokens"
            if small.info.backend.endswith("[pytorch]")
            else "reused KV blocks x tokens per block (request perf metrics; cached_tokens is 0 on this backend)"
        )
        report.add(
            "KV block reuse",
            g2.cached_tokens > 0,
            f"second glimpse reused {g2.cached_tokens} of {len(ctx) + len(step.token_ids)} context tokens ({how})",
        )
        router = Router(small, large, RouterConfig(threshold=threshold, max_tokens=max_tokens))
        t1 = time.perf_counter()
        results = await asyncio.gather(*(router.generate(QUESTION) for _ in range(concurrency)))
        wall = time.perf_counter() - t1
        steps = sum(len(r.steps) for r in results)
        large_steps = sum(r.usage.large_steps for r in results)
        tokens = sum(r.usage.completion_tokens for r in results)
        report.add(
            "routed generation",
            all(r.steps for r in results),
            f"{concurrency} concurrent requests, {steps} steps ({large_steps / max(steps, 1):.0%} large), "
            f"{tokens} tokens in {wall:.1f} s ({tokens / wall:.0f} tok/s); finish: "
            f"{sorted({r.finish_reason for r in results})}",
        )
        print("sample answer:\n" + results[0].text[-400:], file=sys.stderr)
    finally:
        await small.close()
        await large.close()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", help="small model: engine directory or HF checkpoint")
    parser.add_argument("--large", help="large model: engine directory or HF checkpoint")
    parser.add_argument("--build", help="build_engines YAML config: build (if needed) and load its engines")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--threshold", type=float, default=1.0)
    args = parser.parse_args()
    if args.build:
        root = Path(__file__).resolve().parent.parent
        subprocess.run([sys.executable, "-m", "build_engines", "build", args.build], cwd=root, check=True)
        sys.path.insert(0, str(root))
        from build_engines.build import load_spec

        spec = load_spec(Path(args.build))
        args.small, args.large = str(spec.engine_dir("small")), str(spec.engine_dir("large"))
    if not args.small or not args.large:
        parser.error("pass --small and --large, or --build CONFIG")
    report = asyncio.run(run_smoke(args.small, args.large, concurrency=args.concurrency, threshold=args.threshold))
    print(report.render())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
