"""The chat layer: what every front end (``ChatGlimp``, ``GlimpLlamaIndexLLM``, ``glimp serve``) does between
OpenAI-shaped messages and the router, written once: content parts to text (``content``), request options and
their bounds (``options``), tool calls (``tools``), a request as one engine's prompt (``prompt``), the
streaming hold-back (``stream``), and one turn in and its answer out (``turn``).

This ``__init__`` imports nothing on purpose: the router imports :mod:`~glimp_llm.chat.options` and
:mod:`~glimp_llm.chat.prompt`, and :mod:`~glimp_llm.chat.turn` imports the router, so a package that
re-exported everything would import itself in a circle.
"""
