"""A LlamaIndex query engine over a few local documents, answered by the routed CPU default, streamed.

    .venv/bin/python examples/llamaindex_query_engine.py
    .venv/bin/python examples/llamaindex_query_engine.py --small smollm2-135m-instruct --large smollm2-135m-instruct

Fully offline: the documents are below, the embedding is ``HashEmbedding`` (``examples/hash_embedding.py``,
a hashed bag of words), and the LLM is ``GlimpLlamaIndexLLM``. The answer streams token by token; then the
example prints which document was retrieved (``SOURCE``), the answer (``ANSWER``) and the
routing trace (which model wrote each step). Needs the ``llamaindex`` extra:
``pip install 'glimp-llm[cpu,llamaindex]'``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hash_embedding import HashEmbedding  # beside this file: an offline stand-in, not part of glimp_llm
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload, TokenCountingHandler
from llama_index.core.callbacks.base_handler import BaseCallbackHandler

from glimp_llm import Glimp, GlimpConfig
from glimp_llm.integrations.llama_index import GlimpLlamaIndexLLM

DOCUMENTS = {
    "lighthouse.txt": (
        "The Karvik lighthouse stands on the northern cape of Ostra island. It was built in 1871 from grey granite, "
        "is 31 metres tall, and its lamp can be seen 22 nautical miles out at sea. The last keeper, Ingrid Moll, "
        "left in 1969 when the light was automated."
    ),
    "orchard.txt": (
        "The Hallberg orchard grows 14 varieties of apple on 6 hectares. Harvest starts in late August with the "
        "early Astrakan apples and ends in October with the Ingrid Marie variety. The orchard presses its own cider."
    ),
    "observatory.txt": (
        "The Tallmo observatory has a 60 centimetre reflecting telescope under a copper dome. Public viewing "
        "nights are held every Thursday from October to March, weather permitting."
    ),
}
QUESTION = "In which year was the Karvik lighthouse built?"
EXPECTED_SOURCE = "lighthouse.txt"


class RoutingTraces(BaseCallbackHandler):
    """Collects ``raw["glimp"]`` (the routing trace) from every finished LLM call."""

    def __init__(self) -> None:
        super().__init__(event_starts_to_ignore=[], event_ends_to_ignore=[])
        self.traces: list[dict[str, Any]] = []

    def on_event_start(self, event_type: CBEventType, payload: dict[str, Any] | None = None, **kw: Any) -> str:
        return kw.get("event_id", "")

    def on_event_end(self, event_type: CBEventType, payload: dict[str, Any] | None = None, **kw: Any) -> None:
        response = (payload or {}).get(EventPayload.RESPONSE) or (payload or {}).get(EventPayload.COMPLETION)
        raw = getattr(response, "raw", None)
        if event_type == CBEventType.LLM and isinstance(raw, dict) and "glimp" in raw:
            self.traces.append(raw["glimp"])

    def start_trace(self, trace_id: str | None = None) -> None:
        return None

    def end_trace(self, trace_id: str | None = None, trace_map: dict[str, list[str]] | None = None) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", default=None, help="small model (default: the embedded default pair)")
    parser.add_argument("--large", default=None, help="large model")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--question", default=QUESTION)
    args = parser.parse_args()

    overrides: dict[str, Any] = {}
    for role in ("small", "large"):
        model = getattr(args, role)
        if model:
            overrides[role] = {"kind": "llama_cpp", "model": model}
    config = GlimpConfig.load(**overrides) if overrides else GlimpConfig()

    docs = [Document(text=text, metadata={"file_name": name}) for name, text in DOCUMENTS.items()]
    counter = TokenCountingHandler()
    traces = RoutingTraces()
    # The query engine hands its callback manager (Settings.callback_manager unless given one) to the LLM
    # it drives, replacing the LLM's own: handlers given to the LLM alone would never see the query's calls.
    callbacks = CallbackManager([counter, traces])
    Settings.callback_manager = callbacks
    with Glimp(config) as glimp:
        llm = GlimpLlamaIndexLLM(glimp=glimp, max_tokens=args.max_tokens, callback_manager=callbacks)
        index = VectorStoreIndex.from_documents(docs, embed_model=HashEmbedding())
        engine = index.as_query_engine(llm=llm, streaming=True, similarity_top_k=1)
        print(f"question: {args.question}\nanswer (streamed): ", end="", flush=True)
        response = engine.query(args.question)
        answer = ""
        for delta in response.response_gen:
            answer += delta
            print(delta, end="", flush=True)
        print()

    for node in response.source_nodes:
        print(f"SOURCE {node.node.metadata['file_name']} score={node.score:.3f}")
    print(f"ANSWER {' '.join(answer.split())}")
    print(f"TOKENS prompt={counter.prompt_llm_token_count} completion={counter.completion_llm_token_count}")
    for trace in traces.traces:
        steps = " ".join(f"{s['model'][0].upper()}({s['tokens']}t,H={s['entropy']})" for s in trace["steps_detail"])
        print(f"ROUTING small/large steps {trace['small_steps']}/{trace['large_steps']}: {steps}")
    if not response.source_nodes:
        sys.exit("no document was retrieved")


if __name__ == "__main__":
    main()
