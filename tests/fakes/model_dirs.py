"""Tests only: write HF checkpoint and TensorRT-LLM engine directories (config.json layouts of tensorrt-llm 1.2)
that the fake runtime loads and that build_engines validates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from glimp_llm.engines.scripted import SCRIPTED_TEMPLATE, SPECIAL_TOKENS, shared_tokenizer

FAKES = Path(__file__).resolve().parent  # put on sys.path (by a fixture) to import the fake tensorrt_llm

REAL_VOCAB = len(shared_tokenizer())
PADDED_VOCAB = ((REAL_VOCAB + 64) // 64 + 1) * 64  # padded well beyond the real vocabulary


def write_script(directory: Path, response: str, entropies: list[float] | float) -> None:
    (directory / "fake_script.json").write_text(json.dumps({"response": response, "entropies": entropies}))


def make_hf_dir(
    directory: Path,
    response: str = "Hello world.",
    entropies: list[float] | float = 0.05,
    *,
    vocab_size: int = PADDED_VOCAB,
    max_position_embeddings: int = 2048,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    cfg = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": vocab_size,
        "max_position_embeddings": max_position_embeddings,
    }
    (directory / "config.json").write_text(json.dumps(cfg))
    write_tokenizer_files(directory)
    write_script(directory, response, entropies)
    return directory


def engine_config(
    *,
    vocab_size: int = PADDED_VOCAB,
    max_seq_len: int = 2048,
    max_input_len: int | None = None,
    gather_generation_logits: bool = True,
    kv_cache_type: str | None = "PAGED",
    use_paged_context_fmha: bool | None = True,
    tokens_per_block: int = 4,
    tp_size: int = 1,
    gather_context_logits: bool = False,
    max_num_tokens: int = 8192,
) -> dict[str, Any]:
    plugin: dict[str, Any] = {"tokens_per_block": tokens_per_block, "gemm_plugin": "auto"}
    if use_paged_context_fmha is not None:
        plugin["use_paged_context_fmha"] = use_paged_context_fmha
    build: dict[str, Any] = {
        "max_input_len": max_input_len if max_input_len is not None else max_seq_len - 1,
        "max_seq_len": max_seq_len,
        "max_batch_size": 64,
        "max_num_tokens": max_num_tokens,
        "gather_context_logits": gather_context_logits,
        "gather_generation_logits": gather_generation_logits,
        "plugin_config": plugin,
    }
    if kv_cache_type is not None:
        build["kv_cache_type"] = kv_cache_type
    return {
        "version": "1.2.1",
        "pretrained_config": {
            "architecture": "Qwen2ForCausalLM",
            "dtype": "bfloat16",
            "logits_dtype": "float32",
            "vocab_size": vocab_size,
            "mapping": {"world_size": tp_size, "tp_size": tp_size, "pp_size": 1},
        },
        "build_config": build,
    }


def make_engine_dir(
    directory: Path,
    response: str = "Hello world.",
    entropies: list[float] | float = 0.05,
    *,
    with_tokenizer: bool = True,
    config: dict[str, Any] | None = None,
    **build: Any,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    cfg = config if config is not None else engine_config(**build)
    (directory / "config.json").write_text(json.dumps(cfg))
    tp = cfg.get("pretrained_config", {}).get("mapping", {}).get("tp_size", 1)
    for r in range(tp):
        (directory / f"rank{r}.engine").write_bytes(b"fake engine")
    if with_tokenizer:
        write_tokenizer_files(directory)
    write_script(directory, response, entropies)
    return directory


def write_tokenizer_files(directory: Path, chat_template: str | None = SCRIPTED_TEMPLATE) -> None:
    """Write the files a model directory needs for :meth:`AutoTokenizer.from_pretrained` (and for
    ``tokenizer.json``-based validation in build_engines): the vocabulary in the HF fast-tokenizer layout."""
    tok = shared_tokenizer()
    directory.mkdir(parents=True, exist_ok=True)
    specials = set(SPECIAL_TOKENS)
    vocab = {p: i for p, i in tok.ids.items() if p not in specials}
    added = [{"id": i, "content": p, "special": True} for p, i in tok.ids.items() if p in specials]
    (directory / "tokenizer.json").write_text(
        json.dumps({"model": {"type": "BPE", "vocab": vocab}, "added_tokens": added})
    )
    cfg: dict[str, Any] = {"eos_token": "<eos>"}
    if chat_template is not None:
        cfg["chat_template"] = chat_template
    (directory / "tokenizer_config.json").write_text(json.dumps(cfg))
    (directory / "generation_config.json").write_text(json.dumps({"eos_token_id": [tok.eos_id]}))


OLD_FORMAT_CONFIG = {  # a pre-0.8 engine config.json (what llama_index #12317 tripped over)
    "builder_config": {"name": "llama", "vocab_size": 32000, "max_batch_size": 8, "precision": "float16"},
    "plugin_config": {"gpt_attention_plugin": "float16", "paged_kv_cache": False},
}
