"""Route several questions concurrently from asyncio, then show who wrote what.

    .venv/bin/python examples/async_batch.py                      # the default Qwen pair
    .venv/bin/python examples/async_batch.py --small smollm2-135m-instruct --large smollm2-135m-instruct

Requests are admitted together; an engine that batches in flight (TensorRT-LLM, a server with parallel
slots) runs them together, and the in-process llama.cpp engine queues them fairly on its slots
(``n_slots`` keeps each request's prefix cached).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from rich.console import Console
from rich.table import Table

from glimp_llm import Glimp, GlimpConfig

QUESTIONS = [
    "A shop sells pens at 3 dollars each. Tom buys 4 pens and pays with a 20 dollar bill. How much change does he get?",
    "A train travels 60 km per hour for 2.5 hours. How far does it go?",
    "Sara has 12 apples. She gives a third of them away and then buys 5 more. How many apples does she have?",
]
INSTRUCTION = " Reason step by step, separating steps with a blank line, and put the final answer in \\boxed{}."


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", default=None)
    parser.add_argument("--large", default=None)
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--slots", type=int, default=2, help="llama.cpp contexts per model")
    args = parser.parse_args()
    overrides: dict = {"router": {"max_tokens": args.max_tokens}}
    for role in ("small", "large"):
        model = getattr(args, role) or GlimpConfig().model_dump()[role]["model"]
        overrides[role] = {"kind": "llama_cpp", "model": model, "n_slots": args.slots, "n_ctx": 2048}
    async with Glimp(GlimpConfig.load(**overrides)) as glimp:
        start = time.perf_counter()
        results = await glimp.abatch([q + INSTRUCTION for q in QUESTIONS])
        elapsed = time.perf_counter() - start
    table = Table(title=f"{len(results)} routed requests in {elapsed:.1f} s")
    for col in ("question", "steps small/large", "tokens small/large", "finish", "answer tail"):
        table.add_column(col)
    for q, r in zip(QUESTIONS, results, strict=True):
        u = r.usage
        table.add_row(
            q[:40] + "...",
            f"{u.small_steps}/{u.large_steps}",
            f"{u.small_tokens}/{u.large_tokens}",
            r.finish_reason,
            r.text.strip()[-40:].replace("\n", " "),
        )
    Console().print(table)


if __name__ == "__main__":
    asyncio.run(main())
