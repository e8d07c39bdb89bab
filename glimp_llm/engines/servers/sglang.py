"""SGLang: ``/v1/completions`` with two fields of its own, and a ``/detokenize`` that answers ``text``.

* ``no_stop_trim`` keeps the stop string in the text (the contract keeps it);
* ``return_token_ids`` returns the ids of the step (else the step would be re-tokenised, and a glimpse would
  have no token id at all);
* the stop reason is ``matched_stop``: the stop string, or the id of the end token it stopped on;
* ``/detokenize`` skips special tokens unless told not to.
"""

from __future__ import annotations

from typing import Any

from glimp_llm.engines.replicas import Replica
from glimp_llm.engines.servers.dialect import Dialect


class SGLang(Dialect):
    name = "sglang"
    owned_by = "sglang"

    def extras(self) -> dict[str, Any]:
        return {"no_stop_trim": True, "skip_special_tokens": False, "return_token_ids": True}

    async def detokenize_on(self, replica: Replica, ids: list[int]) -> Any:
        body = {"model": self.engine.model, "tokens": ids, "skip_special_tokens": False}
        return (await self.http.request_json(replica, "/detokenize", body)).get("text")
