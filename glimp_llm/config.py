"""Configuration: one validated :class:`GlimpConfig` (small engine, large engine, router settings).

It loads from a YAML/TOML/JSON file, keyword arguments, or ``GLIMP_*`` environment variables (nested
fields joined by ``__``: ``GLIMP_ROUTER__THRESHOLD=0.8``, ``GLIMP_SMALL__MODEL=/models/a.gguf``), in
that order of increasing precedence: file < environment < keyword arguments. Everything is validated
at construction, and every error names the field and the fix.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    JsonConfigSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)
from pydantic_settings.sources import ConfigFileSourceMixin
from pydantic_settings.sources.utils import parse_env_vars

from glimp_llm.chat.options import MAX_SEED, MAX_TEMPERATURE
from glimp_llm.errors import ConfigurationError
from glimp_llm.models import DEFAULT_LARGE, DEFAULT_SMALL


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class _EngineConfig(_Strict):
    """Base of engine configurations: ``kind`` tells them apart, ``engine`` names the class built from one."""

    engine: ClassVar[str]
    """``module:Class`` of the engine (imported only when built: engines pull heavy optional dependencies)."""

    def engine_class(self) -> Any:
        """The engine class this configuration builds (its ``from_config`` takes this object)."""
        module, _, name = self.engine.partition(":")
        return getattr(importlib.import_module(module), name)


class LlamaCppEngineConfig(_EngineConfig):
    """In-process llama.cpp (the embedded CPU default)."""

    engine = "glimp_llm.engines.llama_cpp:LlamaCppEngine"

    kind: Literal["llama_cpp"] = "llama_cpp"
    model: str = Field(description="a registered model name (`glimp models`) or a path to a .gguf file")
    n_ctx: int = Field(4096, ge=64, le=1 << 20, description="context window in tokens")
    n_threads: int | None = Field(None, ge=1, description="CPU threads; default: all cores")
    n_batch: int = Field(512, ge=1, description="prompt evaluation batch size")
    n_slots: int = Field(
        1, ge=1, le=64, description="independent contexts (KV caches); concurrent requests keep their prefixes"
    )
    max_queue: int | None = Field(256, ge=0, description="callers allowed to wait for a slot; beyond: Overloaded")
    seed: int = 0
    chat_template: str | None = Field(None, description="override the GGUF's chat template (Jinja)")


class ScriptedEngineConfig(_EngineConfig):
    """A scripted engine (tests, docs, fault injection): writes ``response``; step-start entropies."""

    engine = "glimp_llm.engines.scripted:ScriptedEngine"

    kind: Literal["scripted"] = "scripted"
    response: str = Field(description="the text the engine writes, steps separated by a blank line")
    entropies: list[float] | float = 0.05
    name: str = "scripted"
    token_seconds: float = Field(0.0, ge=0.0)
    context_window: int = Field(4096, ge=16)
    n_slots: int = Field(1, ge=1)
    max_queue: int | None = Field(None, ge=0)


class OpenAICompatEngineConfig(_EngineConfig):
    """Any OpenAI-compatible server (vLLM, SGLang, trtllm-serve, llama-server); several replicas allowed."""

    engine = "glimp_llm.engines.openai_compat:OpenAICompatEngine"

    kind: Literal["openai"] = "openai"
    base_urls: list[str] = Field(min_length=1, description="server roots, e.g. http://127.0.0.1:8080/v1")
    model: str = Field(description="the model name the server expects in requests")
    api_key: str | None = None
    top_logprobs: int = Field(20, ge=1, le=100_000, description="k for the top-k entropy estimate")
    vocab_size: int | None = Field(None, ge=2, description="real vocabulary size (for the tail bound)")
    timeout_s: float = Field(60.0, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    max_retries: int = Field(3, ge=0, le=20)
    token_ids: Literal["always", "never"] = Field(
        "always", description="send token-id prompts (exact prefixes; every supported server takes them) or text"
    )
    max_concurrency: int = Field(64, ge=1, description="requests in flight to this model, over all replicas")
    health_interval_s: float = Field(10.0, gt=0, description="seconds between health checks of the replicas")
    tokenizer_from: str | None = Field(
        None,
        description="the served model's Hugging Face directory: its chat template, end token and tokenizer.json "
        "(whose vocabulary fingerprint lets an in-process engine of the same family exchange token ids with it)",
    )
    dialect: Literal["auto", "llama.cpp", "vllm", "sglang", "trtllm"] = Field(
        "auto",
        description=(
            "the server's protocol flavour (docs/deployment.md): llama.cpp = llama-server's native /completion "
            "with n_probs; vllm/sglang/trtllm = /v1/completions with logprobs; auto = from /v1/models owned_by"
        ),
    )
    chat_template: str | None = Field(None, description="Jinja chat template, if the server does not expose one")
    context_window: int | None = Field(None, ge=16, description="context tokens per request, if the server hides it")
    replica_retry_s: float = Field(
        5.0, gt=0, description="a replica that failed is left out this long, then health-checked and tried again"
    )


class TensorRTLLMEngineConfig(_EngineConfig):
    """TensorRT-LLM in-process: a prebuilt engine directory (TensorRT backend) or an HF checkpoint
    (PyTorch backend), with generation logits gathered at runtime and KV block reuse."""

    engine = "glimp_llm.engines.tensorrt_llm:TensorRTLLMEngine"

    kind: Literal["tensorrt_llm"] = "tensorrt_llm"
    model: str = Field(description="engine directory (config.json + rank*.engine) or HF checkpoint directory")
    tokenizer: str | None = Field(None, description="HF tokenizer directory (required for engine dirs)")
    backend: Literal["auto", "tensorrt", "pytorch"] = "auto"
    free_gpu_memory_fraction: float = Field(0.45, gt=0.0, le=1.0)
    max_batch_size: int | None = Field(None, ge=1)
    max_num_tokens: int | None = Field(None, ge=1)
    max_seq_len: int | None = Field(None, ge=16)
    tensor_parallel_size: int = Field(1, ge=1)
    cache_salt: str | None = None
    max_concurrency: int = Field(256, ge=1)


EngineConfig = Annotated[
    LlamaCppEngineConfig | ScriptedEngineConfig | OpenAICompatEngineConfig | TensorRTLLMEngineConfig,
    Field(discriminator="kind"),
]

#: kind -> configuration class, derived from :data:`EngineConfig`: the one registry of engines (the manager
#: builds ``cfg.engine_class().from_config(cfg, name=role)``; error messages list these kinds).
ENGINE_KINDS: dict[str, type[_EngineConfig]] = {
    c.model_fields["kind"].default: c for c in get_args(get_args(EngineConfig)[0])
}


class SamplingConfig(_Strict):
    """Token choice. Greedy by default: reproducible, and what the CPU baseline measured."""

    temperature: float = Field(0.0, ge=0.0, le=MAX_TEMPERATURE, description="0 = greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass (1 = off)")
    top_k: int = Field(0, ge=0, description="sample among the k most likely tokens (0 = off)")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="reproducible sampling for the same context")


class RouterConfig(_Strict):
    """The step loop. Defaults are explained in docs/configuration.md."""

    threshold: float = Field(
        1.0,
        ge=0.0,
        description=(
            "tau, in nats: a step whose glimpse entropy is <= tau is written by the small model, else by "
            "the large one. 1.0 sends about 20-30% of steps to the large model on the Qwen2.5-Coder "
            "0.5B/1.5B pair (the paper's recommended intervention rate); calibrate per pair with "
            "`glimp calibrate`"
        ),
    )
    glimpse_tokens: int = Field(
        1,
        ge=1,
        le=64,
        description=(
            "tokens the small model glimpses before a step is routed; the routing signal is the largest "
            "entropy among them, and they are kept when the small model writes the step. 1 = the paper's "
            "one-token glimpse. Instruct models that number their steps start most of them with a list "
            "marker whose entropy is ~0 whatever follows; a few tokens look past it (see benchmarks/RESULTS.md). "
            "Ignored in paper_faithful mode; calibrate tau for the value you use"
        ),
    )
    step_delimiter: str = Field("\n\n", min_length=1, description="text that ends a reasoning step")
    step_max_tokens: int = Field(512, ge=1, le=1 << 16, description="a step longer than this is cut (as the paper)")
    max_tokens: int = Field(2048, ge=1, le=1 << 20, description="budget of generated tokens per request")
    answer_max_tokens: int = Field(1024, ge=1, description="tokens for the answer after end of thinking")
    answer_model: Literal["small", "large", "router"] = Field(
        "large", description="who writes the answer after `</think>` (router = keep routing by entropy)"
    )
    thinking: Literal["auto", "on", "off"] = Field(
        "auto", description="open a <think> block for reasoning models (auto: when the template knows one)"
    )
    end_of_thinking: str = Field("</think>", description="marker that ends the reasoning of thinking models")
    stop_on_repeated_step: bool = Field(True, description="end the request when a step repeats the previous one")
    paper_faithful: bool = Field(
        False,
        description="reproduce the authors' code: entropy from renormalised top-20, greedy glimpse discarded",
    )
    paper_top_k: int = Field(20, ge=1, le=1000, description="k of the paper-faithful top-k entropy")
    sampling: SamplingConfig = Field(SamplingConfig(), description="how tokens are drawn (glimpse and steps)")
    system_prompt: str | None = Field(None, description="system message added when a request has none")
    max_concurrent_requests: int = Field(64, ge=1, description="routed requests run at once")
    max_queued_requests: int = Field(1024, ge=0, description="requests allowed to wait; beyond: Overloaded")
    request_timeout_s: float | None = Field(None, gt=0, description="deadline per routed request")
    fallback_on_engine_failure: bool = Field(
        False, description="let the other model write a step when one engine fails (recorded in the trace)"
    )
    # ------------------------------------------------------------------ guards (docs/calibration.md)
    routing: Literal["entropy", "random", "small-only", "large-only"] = Field(
        "entropy",
        description=(
            "how steps are routed: by glimpse entropy (GlimpRouter), at random with probability "
            "random_large_share (the paper's chance baseline), or every step on one model (no glimpse, no "
            "guard, no verification: the single-model baselines)"
        ),
    )
    random_large_share: float = Field(
        0.25, ge=0.0, le=1.0, description="routing=random: the probability that a step goes to the large model"
    )
    random_seed: int = Field(0, description="routing=random: seed of the per-request draw (request text + seed)")
    first_step_large: bool = Field(
        True,
        description=(
            "the first step of every routed turn is written by the large model, unglimpsed: it decides "
            "between calling a tool and answering, and sets up the solution"
        ),
    )
    tool_call_large: bool = Field(
        True,
        description=(
            "a step that opens a tool call (a marker in tool_call_markers, when the request has tools) is "
            "written by the large model from the marker on (with verification too: calling or answering is "
            "the large model's decision)"
        ),
    )
    tool_call_markers: list[str] = Field(
        ["<tool_call>", "[TOOL_CALLS]", "<|python_tag|>", '{"name"'],
        description="text that opens a tool call in the templates glimp-llm knows",
    )
    forced_entropy: float = Field(
        0.05,
        ge=0.0,
        description=(
            "glimpse past forced tokens: while the small model's next token has entropy below this "
            "(nats), it is decoded and kept, and the route is decided on the first uncertain token; "
            "whichever model writes the step continues after the kept prefix. 0 = off (the paper). "
            "Left unset, it is 0 when glimpse_tokens > 1 (the look-ahead is the other way past a certain "
            "first token; setting both is an error)"
        ),
    )
    forced_max_tokens: int = Field(8, ge=1, le=64, description="forced_entropy: at most this many kept tokens")
    final_step_check: bool = Field(
        True,
        description=(
            "a small-model step that ends the answer (end of sequence, or a final_answer_markers string) "
            "is checked by the large model before it is final: verified with verify=true, else rewritten"
        ),
    )
    final_answer_markers: list[str] = Field(["\\boxed{"], description="text that marks the final answer")
    verify: bool | Literal["auto"] = Field(
        "auto",
        description=(
            "the large model reads each small-model step right after it is written (its catch-up prefill, "
            "done eagerly) and keeps the longest prefix whose tokens all have log-probability >= "
            "verify_logprob under it; from the first rejected token on, the large model writes the step. "
            "true: an engine pair that cannot (no scoring, no shared tokenizer) fails at start; auto: "
            "verify where the pair can, else route without it (one warning at start, and no step of the "
            "trace is marked verified)"
        ),
    )
    verify_logprob: float = Field(
        -7.0, le=0.0, description="verify: the least log-probability (nats) a small-model token may have"
    )
    verify_margin: float | None = Field(
        None,
        ge=0.0,
        description=(
            "verify: also reject a small-model token when the large model's own most likely token there is "
            "more than this many nats likelier (a relative rule: it catches a plausible token at a decision "
            "point, such as a tool call where the large model would answer). None = the absolute rule only"
        ),
    )

    verify_resume: Literal["large", "small"] = Field(
        "large",
        description=(
            "verify: who writes on after a rejected token. large: the large model writes the rest of the "
            "step. small: the large model's own token (read from the same scoring, at no cost) replaces the "
            "rejected one and the small model drafts on, verified again: speculative decoding inside the "
            "step; with verify_margin=0 every token is the large model's greedy choice"
        ),
    )
    verify_draft_tokens: int = Field(
        0,
        ge=0,
        description=(
            "verify_resume=small: the small model drafts at most this many tokens before the large model "
            "scores them (fewer tokens wasted after a rejection, one more scoring per draft). 0 = to the "
            "end of the step"
        ),
    )

    @model_validator(mode="after")
    def _one_glimpse_extension(self) -> RouterConfig:
        # Both extend the glimpse past its first token. The look-ahead, asked for, turns the forced glimpse's
        # default off; an explicit forced_entropy beside it is an error. The default stays *unset* (written
        # past the frozen model's setattr, which would mark it set), so that with_router, which keeps only
        # what was set, brings the forced glimpse back when the look-ahead is later turned off.
        if self.forced_entropy > 0 and self.glimpse_tokens > 1:
            if "forced_entropy" in self.model_fields_set:
                raise ValueError(
                    "forced_entropy (glimpse past forced tokens) and glimpse_tokens > 1 (look-ahead) both extend "
                    "the glimpse: choose one (set glimpse_tokens=1 or forced_entropy=0)"
                )
            self.__dict__["forced_entropy"] = 0.0
        return self

    @field_validator("threshold", mode="before")
    @classmethod
    def _finite_threshold(cls, value: Any) -> Any:
        # Before the type check, so "NaN" from an environment variable gets this message, not "must be >= 0".
        try:
            number = float(value) if isinstance(value, int | float | str) else 0.0
        except ValueError:
            return value  # not a number at all: the type check says so
        if not math.isfinite(number):
            raise ValueError("threshold must be a finite number of nats (e.g. 1.0); NaN and inf are not allowed")
        return value


class GlimpConfig(_Strict):
    """Everything a routed generator needs."""

    small: EngineConfig = LlamaCppEngineConfig(model=DEFAULT_SMALL)
    large: EngineConfig = LlamaCppEngineConfig(model=DEFAULT_LARGE)
    router: RouterConfig = RouterConfig()

    @model_validator(mode="after")
    def _compatible(self) -> GlimpConfig:
        if self.small.kind == "scripted" and self.large.kind != "scripted":
            raise ValueError("a scripted small engine can only be paired with a scripted large engine")
        return self

    # ----------------------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> GlimpConfig:
        """File (YAML/TOML/JSON) < ``GLIMP_*`` environment (``env``, default ``os.environ``) < keyword
        arguments, merged by pydantic-settings (:class:`_LayeredConfig`); then validated."""
        source = str(path) if path else "arguments"
        token = _LAYERS.set((Path(path) if path is not None else None, os.environ if env is None else env))
        try:
            layered = _LayeredConfig(**overrides)
        except ValidationError as exc:
            raise ConfigurationError(format_validation_error(exc, source)) from None
        except SettingsError as exc:  # a list or mapping field whose variable is not JSON
            raise ConfigurationError(f"invalid configuration (GLIMP_* environment): {exc}: {exc.__cause__}") from None
        finally:
            _LAYERS.reset(token)
        return cls(small=layered.small, large=layered.large, router=layered.router)

    @classmethod
    def validated(cls, data: Mapping[str, Any], *, source: str = "arguments") -> GlimpConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigurationError(format_validation_error(exc, source)) from None

    def with_router(self, **changes: Any) -> GlimpConfig:
        """A copy with router fields changed (validated). The router's defaults stay unset, so a default
        that depends on another field (forced_entropy on glimpse_tokens) follows the change."""
        data = self.model_dump()
        data["router"] = {**self.router.model_dump(exclude_unset=True), **changes}
        return GlimpConfig.validated(data)


# What one GlimpConfig.load call layers: (config file, environment). A context variable, not class state, so
# concurrent loads in threads or tasks each see their own; pydantic-settings asks for the sources per class.
_LAYERS: ContextVar[tuple[Path | None, Mapping[str, str]]] = ContextVar("glimp_config_layers")


class _LayeredConfig(GlimpConfig, BaseSettings):
    """GlimpConfig's fields read from three pydantic-settings sources, highest precedence first: keyword
    arguments, ``GLIMP_<SECTION>__<FIELD>`` variables (list and mapping fields parsed as JSON, ``null`` is
    None), the config file. Only :meth:`GlimpConfig.load` builds it, and returns a plain GlimpConfig."""

    model_config = SettingsConfigDict(
        env_prefix="GLIMP_", env_nested_delimiter="__", env_parse_none_str="null", case_sensitive=False
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,  # reads os.environ only: replaced by _EnvironmentSource
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path, env = _LAYERS.get()
        sources = [init_settings, _EnvironmentSource(settings_cls, env)]
        return (*sources, _file_source(settings_cls, path)) if path is not None else tuple(sources)


class _EnvironmentSource(EnvSettingsSource):
    """``GLIMP_*`` variables from a given mapping (``GlimpConfig.load(env=...)``) instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._env = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._env, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class _MappingFile(ConfigFileSourceMixin):
    """A config file whose top level is not a mapping fails with that said, not with a merge error."""

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        data = super()._read_file(file_path)  # type: ignore[safe-super]
        if not isinstance(data, dict):
            raise ConfigurationError(
                f"config file {file_path} must hold a mapping at the top level, got {type(data).__name__}"
            )
        return data


class _YamlFile(_MappingFile, YamlConfigSettingsSource):
    pass


class _TomlFile(_MappingFile, TomlConfigSettingsSource):
    pass


class _JsonFile(_MappingFile, JsonConfigSettingsSource):
    pass


def _file_source(settings_cls: type[BaseSettings], path: Path) -> PydanticBaseSettingsSource:
    """The pydantic-settings source for ``path`` by its extension; a missing, unknown or unreadable file is a
    ConfigurationError that names it (pydantic-settings itself skips a missing file silently)."""
    if not path.is_file():
        raise ConfigurationError(f"config file {path} does not exist; pass an existing .yaml, .toml or .json file")
    try:
        match path.suffix:
            case ".yaml" | ".yml":
                return _YamlFile(settings_cls, yaml_file=path, yaml_file_encoding="utf-8")
            case ".toml":
                return _TomlFile(settings_cls, toml_file=path)
            case ".json":
                return _JsonFile(settings_cls, json_file=path, json_file_encoding="utf-8")
    except ConfigurationError:
        raise
    except Exception as exc:  # the parser's own message, with line and column
        raise ConfigurationError(f"config file {path} is not valid {path.suffix[1:].upper()}: {exc}") from None
    raise ConfigurationError(f"config file {path}: unknown extension {path.suffix!r}; use .yaml, .toml or .json")


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and p in ENGINE_KINDS))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field; check the spelling (see docs/configuration.md)"
        elif err["type"] == "union_tag_invalid":
            msg = f"unknown engine kind; use one of {', '.join(sorted(ENGINE_KINDS))}"
        lines.append(f"  {loc or '<root>'}: {msg} (got {err.get('input')!r:.60})")
    return "\n".join(lines)
