"""The chat layer: what every front end (``ChatGlimp``, ``GlimpLlamaIndexLLM``, ``glimp serve``) does between
OpenAI-shaped messages and the router, written once.

* :mod:`~glimp_llm.chat.content`: the text of a message's content parts (one flattening for everyone);
* :mod:`~glimp_llm.chat.options`: the per-request options and their bounds, one pydantic model that the
  router's request validation and the server's request bodies share;
* :mod:`~glimp_llm.chat.tools`: tool calls through the model's own template: rendering, the fallback
  instruction for templates without tools, ``tool_choice`` forcing, parsing (valid and invalid calls);
* :mod:`~glimp_llm.chat.prompt`: a routed request as one engine's prompt (system prompt, template, tools,
  ``<think>``, forced-call prefill, BOS), which :meth:`Router.prepare_prompt` delegates to;
* :mod:`~glimp_llm.chat.turn`: messages + tools + options in -> a :class:`~glimp_llm.router.RouteRequest`;
  routed result or event stream in -> visible text, tool calls and usage out, with the one streaming
  hold-back of stop strings and tool calls.

This ``__init__`` imports nothing on purpose: the router imports :mod:`~glimp_llm.chat.options` and
:mod:`~glimp_llm.chat.prompt`, and :mod:`~glimp_llm.chat.turn` imports the router, so a package that
re-exported everything would import itself in a circle.
"""
