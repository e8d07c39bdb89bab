"""What makes a TensorRT-LLM engine directory usable by glimp-llm — defined once, used twice.

The engine driver (:mod:`glimp_llm.engines.tensorrt_llm`) checks every engine directory it loads with
:func:`validate_engine_dir`, and ``python -m build_engines validate`` runs the very same checks (plus the
small/large pair check, :func:`check_pair`). Nothing here imports ``tensorrt_llm``: an engine's
``config.json`` and the HF tokenizer files are plain JSON, so a directory can be validated on any machine
(a laptop, CI) before it is shipped to a GPU host.

An engine directory is usable when:

* it is in the 1.x format: ``config.json`` holds ``pretrained_config`` and ``build_config``. The pre-0.8
  format (``builder_config``/``plugin_config`` at the top level) is what broke
  llama-index-llms-nvidia-tensorrt (llama_index #12317); it cannot be loaded by tensorrt-llm 1.x;
* ``build_config.gather_generation_logits`` is true. The LLM API also switches it on at runtime (and we
  do), but the C++ runtime that Triton and the Executor API use reads the build flag, so an engine
  without it cannot give the glimpse its logits everywhere;
* the KV cache is paged and ``plugin_config.use_paged_context_fmha`` is on: together with
  ``KvCacheConfig(enable_block_reuse=True)`` they are what lets step *k+1* reuse the blocks of step *k*'s
  context (without them every glimpse re-reads the whole context and glimpse cost grows with it);
* every ``rank{N}.engine`` of its tensor x pipeline mapping is present;
* (warnings; each message gives the reason) ``max_num_tokens`` below ``max_input_len`` (the C++ runtime's
  prompt cap without chunked context: ``TrtGptModel``, cpp/tensorrt_llm/batch_manager/trtGptModel.h); no
  ``generation_config.json`` next to the tokenizer (``LLM.save`` writes the tokenizer only:
  ``tokenizer.save_pretrained``, tensorrt_llm/llmapi/llm_utils.py). Whether the engine has
  ``gather_context_logits`` (needed by ``score``, the router's verification) is reported in the summary, not
  as a problem: only the verifying (large) model needs it;
* its vocabulary is at least as wide as its tokenizer's real vocabulary (else the tokenizer belongs to
  another model).

A pair is usable when both models share one tokenizer (token-id contexts are exchanged as they are) or
the caller accepts that contexts travel as text (different tokenizers: the paper's Qwen3-4B +
R1-Distill-Qwen-32B pair). Note that the *padded* vocabulary widths of a same-tokenizer pair may differ
(Qwen2.5-0.5B: 151936, Qwen2.5-7B: 152064; the tokenizer has 151665 entries): the widths alone prove
nothing, the tokenizers decide.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from glimp_llm.engines.base import vocab_fingerprint
from glimp_llm.errors import ConfigurationError, EngineDirError, ModelNotFoundError

ModelFormat = Literal["engine", "hf", "trtllm_checkpoint"]

#: Files of an HF tokenizer that travel with an engine (``LLM.save`` writes them; build_engines copies them).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "generation_config.json",
)


@dataclass
class EngineDirReport:
    """What :func:`validate_engine_dir` found. ``problems`` make the directory unusable; ``warnings`` do not."""

    path: Path
    version: str | None = None
    architecture: str | None = None
    dtype: str | None = None
    logits_dtype: str | None = None
    vocab_size: int | None = None
    max_seq_len: int | None = None
    max_input_len: int | None = None
    max_batch_size: int | None = None
    max_num_tokens: int | None = None
    tp_size: int = 1
    pp_size: int = 1
    tokens_per_block: int | None = None
    gather_context_logits: bool = False
    has_tokenizer: bool = False
    has_generation_config: bool = False
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_for_problems(self) -> EngineDirReport:
        """Return ``self`` when usable, else raise :class:`EngineDirError` listing every problem."""
        if self.problems:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            raise EngineDirError(f"engine directory {self.path} cannot be used:\n{lines}")
        return self

    def summary(self) -> str:
        return (
            f"{self.path}: tensorrt-llm {self.version or '?'} engine, {self.architecture or '?'} {self.dtype or '?'}, "
            f"vocab {self.vocab_size}, max_seq_len {self.max_seq_len}, max_input_len {self.max_input_len}, "
            f"max_batch_size {self.max_batch_size}, tp {self.tp_size} x pp {self.pp_size}, "
            f"logits {self.logits_dtype or '?'}, context logits {'yes' if self.gather_context_logits else 'no'}, "
            f"tokenizer {'included' if self.has_tokenizer else 'separate'}"
        )


def read_config_json(path: Path) -> dict[str, Any]:
    """``path/config.json`` as a dict; typed errors for a missing directory, file, or bad JSON."""
    if not path.is_dir():
        raise ModelNotFoundError(f"{path} is not a directory; pass an engine directory or an HF checkpoint directory")
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ModelNotFoundError(
            f"{path} has no config.json: it is neither a TensorRT-LLM engine directory nor an HF checkpoint"
        )
    return json_object(cfg_path, "a model config", "rebuild the engine or re-download")


def json_object(path: Path, what: str, fix: str) -> dict[str, Any]:
    """The JSON object in ``path``; :class:`EngineDirError` saying ``fix`` when it is unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineDirError(f"{path} is not readable JSON ({exc}); {fix}") from None
    if not isinstance(data, dict):
        raise EngineDirError(f"{path} is JSON but not {what} (an object expected, got {type(data).__name__}); {fix}")
    return data


def _is_old_engine_format(cfg: Mapping[str, Any]) -> bool:
    return ("builder_config" in cfg or "plugin_config" in cfg) and "build_config" not in cfg


def detect_model_format(path: str | Path) -> ModelFormat:
    """Tell an engine directory, an HF checkpoint and a converted TRT-LLM checkpoint (``convert_checkpoint.py``)
    apart by ``config.json``; the pre-0.8 engine layout counts as an engine, so that validation rejects it with
    the reason."""
    p = Path(path).expanduser()
    cfg = read_config_json(p)
    if ("build_config" in cfg and "pretrained_config" in cfg) or _is_old_engine_format(cfg):
        return "engine"
    if "architectures" in cfg or "model_type" in cfg:
        return "hf"
    if "architecture" in cfg and "mapping" in cfg:
        return "trtllm_checkpoint"
    raise ConfigurationError(
        f"{p}/config.json is neither a TensorRT-LLM engine config (build_config + pretrained_config) nor an HF "
        "model config (architectures/model_type); point `model` at an engine directory or an HF checkpoint"
    )


def int_or_none(value: Any) -> int | None:
    """``value`` when it is an int (not a bool): JSON fields and runtime attributes are read without trust."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _plugin_flag(plugin: Mapping[str, Any], name: str) -> Any:
    """A PluginConfig field; its keys are written with or without a leading _ depending on the version."""
    return plugin.get(name, plugin.get(f"_{name}"))


def has_tokenizer_files(path: Path) -> bool:
    return (path / "tokenizer_config.json").is_file() and any(
        (path / f).is_file() for f in ("tokenizer.json", "vocab.json", "tokenizer.model")
    )


def validate_engine_dir(path: str | Path) -> EngineDirReport:
    """Check one engine directory against the rules in the module docstring.

    Content problems are collected in the report (so ``validate`` can print all of them at once); only a
    missing directory/config.json or unreadable JSON raises here.
    """
    p = Path(path).expanduser()
    cfg = read_config_json(p)
    report = EngineDirReport(
        path=p, has_tokenizer=has_tokenizer_files(p), has_generation_config=(p / "generation_config.json").is_file()
    )
    if _is_old_engine_format(cfg):
        report.problems.append(
            "config.json is in the pre-0.8 engine format (builder_config/plugin_config at the top level), which "
            "tensorrt-llm 1.x cannot load; rebuild it with tensorrt-llm>=1.0,<1.3: python -m build_engines build CONFIG"
        )
        return report
    pre = cfg.get("pretrained_config")
    build = cfg.get("build_config")
    if not isinstance(pre, dict) or not isinstance(build, dict):
        report.problems.append(
            "config.json lacks the pretrained_config/build_config objects of a tensorrt-llm 1.x engine; rebuild it "
            "with python -m build_engines build CONFIG"
        )
        return report
    report.version = str(cfg["version"]) if "version" in cfg else None
    report.architecture = pre.get("architecture")
    report.dtype = pre.get("dtype")
    report.logits_dtype = pre.get("logits_dtype")
    report.vocab_size = int_or_none(pre.get("vocab_size"))
    report.max_seq_len = int_or_none(build.get("max_seq_len"))
    report.max_input_len = int_or_none(build.get("max_input_len"))
    report.max_batch_size = int_or_none(build.get("max_batch_size"))
    report.max_num_tokens = int_or_none(build.get("max_num_tokens"))
    report.gather_context_logits = build.get("gather_context_logits") is True
    mapping = raw if isinstance(raw := pre.get("mapping"), dict) else {}
    report.tp_size = int_or_none(mapping.get("tp_size")) or 1
    report.pp_size = int_or_none(mapping.get("pp_size")) or 1
    plugin = raw if isinstance(raw := build.get("plugin_config"), dict) else {}
    report.tokens_per_block = int_or_none(_plugin_flag(plugin, "tokens_per_block")) or int_or_none(
        build.get("tokens_per_block")
    )

    if report.vocab_size is None or report.vocab_size < 2:
        report.problems.append("pretrained_config.vocab_size is missing or invalid; the engine config is damaged")
    if build.get("gather_generation_logits") is not True:
        report.problems.append(
            "build_config.gather_generation_logits is not true: the glimpse needs the full next-token logits; "
            "rebuild with trtllm-build --gather_generation_logits (build_engines does)"
        )
    kv_type = build.get("kv_cache_type")
    paged_flag = _plugin_flag(plugin, "paged_kv_cache")
    # BuildConfig: kv_cache_type None means PAGED unless the (older) plugin flag says no
    paged = paged_flag is not False if kv_type is None else str(kv_type).split(".")[-1].upper() == "PAGED"
    if not paged:
        report.problems.append(
            f"the KV cache is not paged (kv_cache_type={kv_type!r}, paged_kv_cache={paged_flag!r}): no KV block reuse, "
            "so every glimpse re-reads the whole context; rebuild with --kv_cache_type paged"
        )
    fmha = _plugin_flag(plugin, "use_paged_context_fmha")
    if fmha is not True:
        report.problems.append(
            f"build_config.plugin_config.use_paged_context_fmha is {fmha!r}, not true: KV block reuse needs paged "
            "context FMHA; rebuild with --use_paged_context_fmha enable"
        )
    world = report.tp_size * report.pp_size
    missing = [f"rank{r}.engine" for r in range(world) if not (p / f"rank{r}.engine").is_file()]
    if missing:
        report.problems.append(
            f"missing {', '.join(missing)} (tp {report.tp_size} x pp {report.pp_size}); the build did not finish "
            "or the directory was copied partially"
        )
    if report.max_seq_len and report.max_input_len and report.max_input_len < report.max_seq_len // 2:
        report.warnings.append(
            f"max_input_len={report.max_input_len} is far below max_seq_len={report.max_seq_len}: routed contexts are "
            "sent as prompts and grow to max_seq_len, so long reasoning will be rejected; rebuild with "
            "--max_input_len close to max_seq_len"
        )
    input_len = report.max_input_len or ((report.max_seq_len - 1) if report.max_seq_len else None)
    if report.max_num_tokens and input_len and report.max_num_tokens < input_len:
        report.warnings.append(
            f"max_num_tokens={report.max_num_tokens} is below max_input_len={input_len}: without chunked context the "
            f"runtime takes prompts of at most min(max_seq_len - 1, max_num_tokens) = {report.max_num_tokens} tokens "
            "and fails longer ones; the glimp driver enables chunked prefill (enable_chunked_prefill=True), other "
            "runtimes (Triton enable_chunked_context, trtllm-serve --enable_chunked_prefill) must too, or rebuild "
            "with --max_num_tokens >= max_input_len"
        )
    if report.has_tokenizer and not report.has_generation_config:
        report.warnings.append(
            "no generation_config.json next to the tokenizer (LLM.save writes the tokenizer only): end-of-sequence "
            "ids listed only there (Qwen: 151643) will not stop generation; copy it from the HF checkpoint "
            "(build_engines does)"
        )
    if report.logits_dtype not in (None, "float32"):
        report.warnings.append(
            f"logits_dtype={report.logits_dtype}: entropies are computed from {report.logits_dtype} logits "
            "(float32 is more exact)"
        )
    facts = tokenizer_facts(p) if report.has_tokenizer else None
    if facts is not None and (problem := _tokenizer_too_wide(report, facts)):
        report.problems.append(problem)
    return report


# ----------------------------------------------------------------------------- tokenizers


@dataclass(frozen=True)
class TokenizerFacts:
    """The real vocabulary (``len(tokenizer)``: highest id + 1) and its fingerprint."""

    source: Path
    real_vocab_size: int
    fingerprint: str


def tokenizer_facts(path: str | Path) -> TokenizerFacts | None:
    """Read ``tokenizer.json`` (a fast tokenizer) without ``transformers``; None when there is none."""
    p = Path(path).expanduser()
    tj = p / "tokenizer.json"
    if not tj.is_file():
        return None
    data = json_object(tj, "a tokenizer", "copy the tokenizer files again")
    model = data.get("model")
    raw_vocab = model.get("vocab") if isinstance(model, dict) else None
    vocab: dict[str, int] = {}
    try:
        if isinstance(raw_vocab, dict):
            vocab.update({str(k): int(v) for k, v in raw_vocab.items()})
        elif isinstance(raw_vocab, list):  # Unigram: [[piece, score], ...] in id order
            vocab.update({str(item[0]): i for i, item in enumerate(raw_vocab)})
        for tok in data.get("added_tokens") or []:
            if isinstance(tok, dict) and "content" in tok and "id" in tok:
                vocab[str(tok["content"])] = int(tok["id"])
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise EngineDirError(f"{tj} has a malformed vocabulary ({exc}); copy the tokenizer files again") from None
    if not vocab:
        raise EngineDirError(f"{tj} holds no vocabulary; copy the tokenizer files again")
    return TokenizerFacts(source=p, real_vocab_size=max(vocab.values()) + 1, fingerprint=vocab_fingerprint(vocab))


def _tokenizer_too_wide(report: EngineDirReport, facts: TokenizerFacts) -> str | None:
    """The problem when a tokenizer has more entries than the engine's vocabulary is wide, else None."""
    if report.vocab_size is None or facts.real_vocab_size <= report.vocab_size:
        return None
    return (
        f"tokenizer {facts.source} has {facts.real_vocab_size} entries but engine {report.path} is only "
        f"{report.vocab_size} wide: that tokenizer belongs to another model; use the one the engine was built from"
    )


def check_pair(
    small: EngineDirReport,
    large: EngineDirReport,
    *,
    small_tokenizer: TokenizerFacts | None = None,
    large_tokenizer: TokenizerFacts | None = None,
    allow_different_tokenizers: bool = False,
) -> tuple[list[str], list[str]]:
    """``(problems, notes)`` for using two engines as the small and the large model of one router."""
    problems: list[str] = []
    notes: list[str] = []
    st = small_tokenizer or (tokenizer_facts(small.path) if small.has_tokenizer else None)
    lt = large_tokenizer or (tokenizer_facts(large.path) if large.has_tokenizer else None)
    if st is not None and lt is not None:
        problems += [p for p in (_tokenizer_too_wide(small, st), _tokenizer_too_wide(large, lt)) if p]
        if st.fingerprint != lt.fingerprint:
            text = (
                f"small and large use different tokenizers ({st.source}: {st.real_vocab_size} entries, "
                f"{lt.source}: {lt.real_vocab_size} entries)"
            )
            if allow_different_tokenizers:
                notes.append(text + ": contexts will travel as text and be re-tokenised for the other model")
            else:
                problems.append(
                    text + ": token-id contexts cannot be exchanged; pick a same-family pair, or accept text "
                    "contexts with --allow-different-tokenizers (pair: text in a build config)"
                )
        else:
            notes.append(f"small and large share one tokenizer ({st.real_vocab_size} entries, {st.fingerprint})")
    elif small.vocab_size != large.vocab_size and not allow_different_tokenizers:
        problems.append(
            f"the vocabularies disagree (small {small.vocab_size}, large {large.vocab_size}) and no tokenizer files "
            "were found to tell a padding difference from different tokenizers; pass --tokenizer/--tokenizer2 "
            "(HF directories) or build with build_engines, which copies the tokenizer into each engine"
        )
    elif st is None or lt is None:
        notes.append("tokenizer identity not checked (no tokenizer.json next to one of the engines)")
    return problems, notes
