"""langchain-tests standard suites for ChatGlimp.

* ``ChatModelUnitTests`` on scripted engines (construction, standard params, tool binding).
* ``ChatModelIntegrationTests`` on the real SmolLM2-135M through llama.cpp (small and large share one
  engine), and the same suite on the Qwen2.5-Coder 0.5B -> 1.5B default pair under ``-m qwen``.

Tests a 135M model cannot pass on quality alone are marked ``xfail`` with the reason; every mechanical
test (invoke, stream, batch, usage, stop, events, conversations) must pass for real. One ``Glimp`` client is
shared per model so each test does not load the weights again.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from conftest import require, require_model

require("langchain_tests", "the standard suites need langchain-tests (the dev extra)")

from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_tests.integration_tests import ChatModelIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import ChatModelUnitTests  # noqa: E402

from glimp_llm import Glimp, GlimpConfig, LlamaCppEngineConfig, ScriptedEngineConfig  # noqa: E402
from glimp_llm.integrations.langchain import ChatGlimp  # noqa: E402

_CLIENTS: dict[str, Glimp] = {}


def _client(key: str, small: str, large: str) -> Glimp:
    """One started client per model pair for the whole session (closed by the fixture below)."""
    if key not in _CLIENTS:
        require("llama_cpp", "the real-model suite runs on llama-cpp-python")
        s, lg = require_model(small), require_model(large)
        config = GlimpConfig(
            small=LlamaCppEngineConfig(model=s, n_ctx=2048), large=LlamaCppEngineConfig(model=lg, n_ctx=2048)
        )
        _CLIENTS[key] = Glimp(config)
    return _CLIENTS[key]


@pytest.fixture(scope="module", autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.popitem()[1].close()


SCRIPTED = GlimpConfig(
    small=ScriptedEngineConfig(response="Hello there.\n\nHow can I help?"),
    large=ScriptedEngineConfig(response="Hello from the large model."),
)


class TestChatGlimpUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ChatGlimp

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"config": SCRIPTED}


_QUALITY = "SmolLM2-135M cannot follow tool/JSON instructions reliably; the mechanics are tested with scripted engines"
# What each may raise when the model writes no usable call: the suite's assertions, and for structured output
# also the TypeError of the suite's validator iterating the None a call-less answer parses to. Anything else
# (a crash in ChatGlimp's tool mechanics) fails the test instead of passing as expected.
_AFTER_NO_CALL: tuple[type[BaseException], ...] = (AssertionError, TypeError)
_NEEDS_TOOL_JSON: dict[str, type[BaseException] | tuple[type[BaseException], ...]] = {
    "test_tool_calling": AssertionError,
    "test_tool_calling_async": AssertionError,
    "test_tool_choice": AssertionError,
    "test_tool_calling_with_no_arguments": AssertionError,
    "test_structured_output": _AFTER_NO_CALL,
    "test_structured_output_async": _AFTER_NO_CALL,
    "test_structured_output_pydantic_2_v1": AssertionError,
    "test_structured_output_optional_param": AssertionError,
    "test_agent_loop": AssertionError,
    "test_unicode_tool_call_integration": AssertionError,
}


class _RealPair(ChatModelIntegrationTests):
    """The integration suite on a real model pair, loaded once (``_client``); subclasses name the pair."""

    pair: ClassVar[tuple[str, str, str]]  # (client key, small model, large model)
    max_tokens: ClassVar[int] = 48

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ChatGlimp

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"glimp": _client(*self.pair), "max_tokens": self.max_tokens, "temperature": 0}

    @property
    def supports_model_override(self) -> bool:
        return False  # the pair is fixed by the client; ``model=`` only renames it in metadata


class TestChatGlimpSmolLM2(_RealPair):
    pytestmark = pytest.mark.llama_cpp
    pair = ("smollm2", "smollm2-135m-instruct", "smollm2-135m-instruct")

    @pytest.fixture(autouse=True)
    def _quality_xfails(self, request: pytest.FixtureRequest) -> None:
        """The tests whose pass depends on the model writing valid tool-call JSON: a 135M model cannot."""
        raises = _NEEDS_TOOL_JSON.get(request.node.originalname)
        if raises is not None:
            request.applymarker(pytest.mark.xfail(reason=_QUALITY, raises=raises, strict=False))


class TestChatGlimpQwenPair(_RealPair):
    """The whole integration suite on the embedded default pair (Qwen2.5-Coder 0.5B -> 1.5B), tool calling
    and structured output included: Qwen2.5 writes ``<tool_call>`` JSON through its own chat template."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.llama_cpp, pytest.mark.qwen, pytest.mark.slow]
    pair = ("qwen", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct")
    max_tokens = 96
