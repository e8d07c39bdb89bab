"""The one error hierarchy of glimp-llm.

Callers catch what they can act on (the httpx model): a bad request or configuration is fixed by the
caller, an unavailable engine by installing or starting something, an overloaded engine by retrying
later, an engine failure by looking at the engine. Every message names the problem *and* the fix.

The tree, what each error carries and how ``glimp serve`` maps it to HTTP: docs/errors.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


class GlimpError(Exception):
    """Base class of every error raised on purpose by glimp-llm."""


class ConfigurationError(GlimpError, ValueError):
    """A configuration value or file is invalid. The message names the field and how to fix it."""


class ModelNotFoundError(ConfigurationError):
    """A model name is unknown, its package is not installed, or its file is missing or corrupt."""


class ModelPatternError(ModelNotFoundError):
    """A hub file pattern or quant matched no GGUF model, or several: the name must say which one.

    ``matches`` are the files that matched (empty: none did), ``available`` the GGUF files that were
    there to choose from (the repository listing, or the cached snapshot offline)."""

    def __init__(self, message: str, *, matches: list[str], available: list[str]) -> None:
        super().__init__(message)
        self.matches = matches
        self.available = available


class ModelIntegrityError(ModelNotFoundError):
    """A model file's sha256 differs from its pin: the file is corrupt, or not the file that was pinned.
    Raised instead of loading it, never worked around by another route."""

    def __init__(self, message: str, *, path: Path, expected: str, actual: str) -> None:
        super().__init__(message)
        self.path = path
        self.expected = expected
        self.actual = actual


class EngineDirError(ConfigurationError):
    """A TensorRT-LLM engine directory (or a small/large pair of them) cannot be used; the message lists
    why and the fix."""


class InvalidRequestError(GlimpError, ValueError):
    """A call received input it cannot serve (empty prompt, non-string prompt, max_tokens <= 0, ...)."""


class ContextTooLongError(InvalidRequestError):
    """The prompt plus the requested tokens do not fit the model's context window."""

    def __init__(self, message: str, *, context_tokens: int, window: int) -> None:
        super().__init__(message)
        self.context_tokens = context_tokens
        self.window = window


class EngineUnavailableError(GlimpError):
    """An engine cannot be used at all: its dependency is missing, it is not started or closed, or down."""


class NoReplicaError(EngineUnavailableError):
    """Every replica of a server model is out after failures. Transient for a retry loop: the soonest one
    comes back."""


class EngineFailureError(GlimpError):
    """An engine call failed. ``transient`` tells whether retrying the same call may succeed."""

    def __init__(self, message: str, *, transient: bool = False, engine: str | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.engine = engine


class EngineTimeoutError(EngineFailureError):
    """An engine call took longer than its configured timeout."""

    def __init__(self, message: str, *, engine: str | None = None) -> None:
        super().__init__(message, transient=True, engine=engine)


class MalformedResponseError(EngineFailureError):
    """A server's answer does not follow the protocol (bad JSON, missing fields, wrong shapes)."""

    def __init__(self, message: str, *, engine: str | None = None) -> None:
        super().__init__(message, transient=False, engine=engine)


class OverloadedError(GlimpError):
    """A bounded queue in front of an engine or the router is full. Retry later."""


class RequestTimeoutError(GlimpError):
    """A routed request did not finish before its deadline; its engine work was cancelled."""


class RequestCancelledError(GlimpError):
    """A routed request was cancelled before it finished (raised to synchronous callers)."""
