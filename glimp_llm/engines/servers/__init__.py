"""The OpenAI-compatible engine's parts: the HTTP transport and one module per server dialect.

=============  ==========================================  ===============================================
dialect        glimpse / steps                             tokenize, detokenize, chat template
=============  ==========================================  ===============================================
``llama.cpp``  ``POST /completion`` with ``n_probs=k``,    ``/tokenize``, ``/detokenize``; the template
               token-id prompt, ``return_tokens``           from ``/props`` rendered here (ChatTemplate)
``vllm``       ``POST /v1/completions`` with ``logprobs``,  ``/tokenize``, ``/detokenize``; template from
               token-id prompt, ``return_token_ids``,       config / ``tokenizer_from``, else rendered by
               ``include_stop_str_in_output``               the server (``/tokenize`` with ``messages``)
``sglang``     as vllm, with ``no_stop_trim``               as vllm
``trtllm``     as vllm; only fields trtllm-serve's          ``/_internal/tokenize``; the template and
               protocol declares (it forbids extra ones)    detokenisation from ``tokenizer_from``
=============  ==========================================  ===============================================
"""

from __future__ import annotations

from glimp_llm.engines.servers.dialect import Dialect
from glimp_llm.engines.servers.llama_server import LlamaServer
from glimp_llm.engines.servers.sglang import SGLang
from glimp_llm.engines.servers.trtllm_serve import TrtllmServe
from glimp_llm.engines.servers.vllm import VLLM

#: dialect name -> its class (what ``dialect=`` names).
DIALECTS: dict[str, type[Dialect]] = {d.name: d for d in (LlamaServer, VLLM, SGLang, TrtllmServe)}
#: ``owned_by`` in ``GET /v1/models`` -> dialect (what ``dialect="auto"`` reads).
OWNED_BY: dict[str, type[Dialect]] = {d.owned_by: d for d in DIALECTS.values()}

__all__ = ["DIALECTS", "OWNED_BY", "Dialect"]
