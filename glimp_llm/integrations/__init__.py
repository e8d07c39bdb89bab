"""Adapters that make a routed :class:`~glimp_llm.Glimp` a drop-in model for agent frameworks.

Importing this package imports no framework: each adapter module imports its own framework and, when
the framework is missing, fails with the ``pip install`` line of the extra that provides it.

* :mod:`glimp_llm.integrations.langchain`: ``GlimpLLM`` (a ``BaseLLM``) and ``ChatGlimp`` (a
  ``BaseChatModel`` with tool calling), for LangChain and LangGraph agents. Extra: ``langchain``.
* :mod:`glimp_llm.integrations.llama_index`: ``GlimpLlamaIndexLLM`` (a ``FunctionCallingLLM``). Extra:
  ``llamaindex``. (The examples' offline embedding is ``examples/hash_embedding.py``, outside the package.)

Both only map their framework's types: the chat itself (prompt, tools, parsing, streaming hold-back) is
:mod:`glimp_llm.chat`, which ``glimp serve`` uses too.
"""
