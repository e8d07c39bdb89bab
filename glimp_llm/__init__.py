"""glimp-llm: step-wise small/large model collaboration for reasoning (GlimpRouter, done right).

Public names only; importing this package loads no engine, framework or GPU runtime. Engines
(``glimp_llm.engines.*``) and adapters (``glimp_llm.integrations.*``) are imported when used.
"""

from glimp_llm._version import __version__
from glimp_llm.client import Glimp
from glimp_llm.config import (
    GlimpConfig,
    LlamaCppEngineConfig,
    OpenAICompatEngineConfig,
    RouterConfig,
    SamplingConfig,
    ScriptedEngineConfig,
    TensorRTLLMEngineConfig,
)
from glimp_llm.engines.base import Completion, Delta, Engine, EngineInfo, Glimpse, SamplingParams
from glimp_llm.entropy import entropy_from_logits, entropy_from_topk, renormalized_topk_entropy
from glimp_llm.errors import (
    ConfigurationError,
    ContextTooLongError,
    EngineDirError,
    EngineFailureError,
    EngineTimeoutError,
    EngineUnavailableError,
    GlimpError,
    InvalidRequestError,
    MalformedResponseError,
    ModelIntegrityError,
    ModelNotFoundError,
    ModelPatternError,
    NoReplicaError,
    OverloadedError,
    RequestCancelledError,
    RequestTimeoutError,
)
from glimp_llm.manager import BackendManager
from glimp_llm.router import Router, RouteRequest
from glimp_llm.trace import DoneEvent, RoutedResult, Step, StepEvent, TokenEvent, Usage

__all__ = [
    "BackendManager",
    "Completion",
    "ConfigurationError",
    "ContextTooLongError",
    "Delta",
    "DoneEvent",
    "Engine",
    "EngineDirError",
    "EngineFailureError",
    "EngineInfo",
    "EngineTimeoutError",
    "EngineUnavailableError",
    "Glimp",
    "GlimpConfig",
    "GlimpError",
    "Glimpse",
    "InvalidRequestError",
    "LlamaCppEngineConfig",
    "MalformedResponseError",
    "ModelIntegrityError",
    "ModelNotFoundError",
    "ModelPatternError",
    "NoReplicaError",
    "OpenAICompatEngineConfig",
    "OverloadedError",
    "RequestCancelledError",
    "RequestTimeoutError",
    "RouteRequest",
    "RoutedResult",
    "Router",
    "RouterConfig",
    "SamplingConfig",
    "SamplingParams",
    "ScriptedEngineConfig",
    "Step",
    "StepEvent",
    "TensorRTLLMEngineConfig",
    "TokenEvent",
    "Usage",
    "__version__",
    "entropy_from_logits",
    "entropy_from_topk",
    "renormalized_topk_entropy",
]
