"""The TensorRT-LLM driver on a faithful fake of the tensorrt_llm API (tests/fakes/tensorrt_llm).

The fake is put on sys.path only inside these tests (fixture ``trt``) and removed afterwards, so no other
test — nor the ``gpu`` test — can mistake it for the real package.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from conftest import UNGUARDED
from fakes.model_dirs import (
    FAKES,
    OLD_FORMAT_CONFIG,
    REAL_VOCAB,
    make_engine_dir,
    make_hf_dir,
    write_tokenizer_files,
)

from glimp_llm.config import GlimpConfig, RouterConfig, TensorRTLLMEngineConfig
from glimp_llm.engines.base import Delta, Engine, SamplingParams
from glimp_llm.engines.tensorrt_llm import TENSORRT_LLM_NAMES, TensorRTLLMEngine
from glimp_llm.engines.tensorrt_llm_validate import tokenizer_facts
from glimp_llm.entropy import entropy_from_logits
from glimp_llm.errors import (
    ConfigurationError,
    ContextTooLongError,
    EngineFailureError,
    EngineUnavailableError,
    InvalidRequestError,
)
from glimp_llm.manager import BackendManager
from glimp_llm.router import Router

FAKE_PACKAGES = ("tensorrt_llm", "transformers")


def _drop_fake_modules() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in FAKE_PACKAGES:
            mod = sys.modules[name]
            if mod is None or str(getattr(mod, "__file__", "") or "").startswith(str(FAKES)):
                del sys.modules[name]


def _is_fake(mod: ModuleType | None) -> bool:
    return mod is None or str(getattr(mod, "__file__", "") or "").startswith(str(FAKES))


@pytest.fixture
def trt(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The fake tensorrt_llm (and transformers), importable for the duration of one test.

    A real ``transformers``/``tensorrt_llm`` already imported in this process (another test, a GPU host) is
    set aside for the test and put back afterwards (monkeypatch restores ``sys.modules``), never a reason to
    skip: these tests must run everywhere."""
    for name in list(sys.modules):
        if name.split(".")[0] in FAKE_PACKAGES and not _is_fake(sys.modules[name]):
            monkeypatch.delitem(sys.modules, name)
    _drop_fake_modules()
    monkeypatch.syspath_prepend(str(FAKES))
    import tensorrt_llm._fake as fake

    assert _is_fake(sys.modules["tensorrt_llm"]) and _is_fake(sys.modules.get("transformers"))
    fake.INSTANCES.clear()
    yield fake
    _drop_fake_modules()


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
STEPS = "First we add the numbers.\n\nThen we check the total.\n\nThe answer is 4."


def engine_on(path: Path, **kwargs: Any) -> TensorRTLLMEngine:
    return TensorRTLLMEngine(path, name=kwargs.pop("name", "small"), **kwargs)


async def started(path: Path, **kwargs: Any) -> TensorRTLLMEngine:
    eng = engine_on(path, **kwargs)
    await eng.start()
    return eng


async def prompt_ids(eng: TensorRTLLMEngine, text: str = "What is 2 plus 2?") -> list[int]:
    return await eng.tokenize(await eng.render_chat([{"role": "user", "content": text}]))


# --------------------------------------------------------------------------------------- the fake itself


def test_fake_sampling_params_rejects_unknown_fields(trt: ModuleType) -> None:
    from tensorrt_llm import SamplingParams as TrtSamplingParams

    with pytest.raises(TypeError, match="return_logits"):
        TrtSamplingParams(max_tokens=1, return_logits=True)


def test_fake_pytorch_llm_rejects_tensorrt_only_arguments(trt: ModuleType, tmp_path: Path) -> None:
    from tensorrt_llm import LLM, BuildConfig

    hf = make_hf_dir(tmp_path / "hf")
    with pytest.raises(ValueError, match="_tensorrt_engine import LLM"):
        LLM(model=str(hf), build_config=BuildConfig())
    with pytest.raises(ValueError, match="invalid argument"):
        LLM(model=str(hf), gather_logits=True)


def test_fake_generate_async_outside_a_running_loop_cannot_be_awaited(trt: ModuleType, tmp_path: Path) -> None:
    from tensorrt_llm import LLM
    from tensorrt_llm import SamplingParams as TrtSamplingParams

    llm = LLM(model=str(make_hf_dir(tmp_path / "hf")))
    out = llm.generate_async([1, 2, 3], TrtSamplingParams(max_tokens=1))

    async def wait() -> Any:
        return await out

    with pytest.raises(RuntimeError, match="event loop was not present"):
        asyncio.run(wait())


# -------------------------------------------------------------------------------------------- glimpse


async def test_glimpse_entropy_is_exact_over_the_real_vocabulary(trt: ModuleType, tmp_path: Path) -> None:
    eng = await started(make_engine_dir(tmp_path / "e", STEPS, entropies=[1.7, 0.4, 0.2]))
    ctx = await prompt_ids(eng)
    g = await eng.glimpse(ctx, SamplingParams())
    (llm,) = trt.INSTANCES
    # independently: the model's logits as the runtime returned them (fp16 -> float), padded beyond the vocab
    returned = llm.model_logits(ctx).astype(np.float16).astype(np.float32)
    padded = np.zeros(llm.vocab_padded, np.float32)
    padded[:REAL_VOCAB] = returned
    assert llm.vocab_padded > REAL_VOCAB
    assert g.entropy == pytest.approx(entropy_from_logits(padded, REAL_VOCAB), abs=1e-9)
    assert g.entropy == pytest.approx(1.7, abs=2e-3)  # the script's first-step entropy
    assert entropy_from_logits(padded) > g.entropy + 1.0  # the padded rows would have inflated it
    assert g.entropy_kind == "exact"
    assert g.text == "First" and not g.is_eos
    assert g.logprob == pytest.approx(
        float(np.log(np.exp(returned - returned.max())[g.token_id] / np.exp(returned - returned.max()).sum())), abs=1e-6
    )
    call = llm.executor.calls[-1]
    assert call["inputs"] == ctx  # token ids, not text: exact prefixes for block reuse
    assert call["sampling_params"].max_tokens == 1
    assert call["sampling_params"].return_generation_logits is True
    assert call["streaming"] is False


async def test_glimpse_top_logprobs_and_eos(trt: ModuleType, tmp_path: Path) -> None:
    eng = await started(make_engine_dir(tmp_path / "e", "Done."))
    ctx = await prompt_ids(eng)
    g = await eng.glimpse(ctx, SamplingParams(), top_logprobs=5)
    assert len(g.top_logprobs) == 5 and g.top_logprobs[0][0] == g.token_id
    done = ctx + await eng.tokenize("Done.")
    end = await eng.glimpse(done, SamplingParams())
    assert end.is_eos and end.text == "" and end.token_id in eng.info.eos_token_ids


async def test_loader_passes_the_runtime_switches(trt: ModuleType, tmp_path: Path) -> None:
    hf = make_hf_dir(tmp_path / "hf")
    engine_dir = make_engine_dir(tmp_path / "e", with_tokenizer=False)
    eng = await started(engine_dir, tokenizer=hf, free_gpu_memory_fraction=0.15, max_batch_size=32)
    (llm,) = trt.INSTANCES
    assert type(llm).__name__ == "TrtLLM"  # engine dir -> tensorrt_llm._tensorrt_engine.LLM
    assert llm.args["gather_generation_logits"] is True
    assert llm.args["tokenizer"] == str(hf)
    assert llm.args["max_batch_size"] == 32
    kv = llm.args["kv_cache_config"]
    assert kv.enable_block_reuse is True and kv.free_gpu_memory_fraction == 0.15
    info = eng.info
    assert info.batches_in_flight and info.entropy_kind == "exact" and info.backend == "tensorrt_llm[tensorrt]"
    assert info.vocab_size == REAL_VOCAB and info.context_window == 2048
    facts = tokenizer_facts(hf)
    assert facts is not None and info.tokenizer_fingerprint == facts.fingerprint  # same rule as validate


async def test_hf_checkpoint_runs_on_the_pytorch_backend(trt: ModuleType, tmp_path: Path) -> None:
    eng = await started(make_hf_dir(tmp_path / "hf", STEPS, [0.3]), max_seq_len=1024)
    (llm,) = trt.INSTANCES
    assert type(llm).__name__ == "TorchLLM" and eng.info.backend == "tensorrt_llm[pytorch]"
    assert "build_config" not in llm.args and llm.args["max_seq_len"] == 1024
    g = await eng.glimpse(await prompt_ids(eng), SamplingParams())
    assert g.entropy == pytest.approx(0.3, abs=2e-3)


#: Qwen2.5's own rendering of messages and tool calls (its template writes ``tool_call.arguments | tojson``)
QWEN25_TOOL_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}"
    "{% for tool_call in message.tool_calls or [] %}{% if tool_call.function is defined %}"
    "{% set tool_call = tool_call.function %}{% endif %}"
    '<tool_call>{"name": "{{ tool_call.name }}", "arguments": {{ tool_call.arguments | tojson }}}</tool_call>'
    "{% endfor %}<|im_end|>\n{% endfor %}"
)


async def test_render_chat_takes_openai_messages_as_the_llama_cpp_engine_does(trt: ModuleType, tmp_path: Path) -> None:
    """OpenAI messages (glimp serve's, LangChain's) carry content parts, JSON-string arguments and the
    developer role: the HF template must see text, an arguments object and a role it knows, as llama.cpp's does."""
    hf = make_hf_dir(tmp_path / "hf")
    write_tokenizer_files(hf, QWEN25_TOOL_TEMPLATE)
    eng = await started(hf)
    call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}
    messages: list[dict[str, Any]] = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Add 1 and 2."}]},
        {"role": "assistant", "content": None, "tool_calls": [call]},
    ]
    text = await eng.render_chat(messages, add_generation_prompt=False)
    assert "<|im_start|>system\nBe brief." in text and "<|im_start|>user\nAdd 1 and 2.<|im_end|>" in text
    assert '{"name": "add", "arguments": {"a": 1, "b": 2}}' in text
    assert call["function"]["arguments"] == '{"a": 1, "b": 2}'  # the caller's history is left as it was
    with pytest.raises(InvalidRequestError, match="no messages"):
        await eng.render_chat([])


async def test_prefix_blocks_are_reused_across_steps(trt: ModuleType, tmp_path: Path) -> None:
    eng = await started(make_engine_dir(tmp_path / "e", STEPS))
    ctx = await prompt_ids(eng)
    first = await eng.glimpse(ctx, SamplingParams())
    step = await eng.generate(ctx, max_tokens=64, stop=["\n\n"])
    later = await eng.glimpse(ctx + list(step.token_ids), SamplingParams())
    assert first.cached_tokens == 0
    assert later.cached_tokens >= len(ctx) - 4  # whole 4-token blocks of the shared prefix
    assert eng.stats.tokens_reused >= later.cached_tokens


# ------------------------------------------------------------------------------------------ generate


async def test_step_stops_at_the_delimiter_and_streams_deltas(trt: ModuleType, tmp_path: Path) -> None:
    eng = await started(make_engine_dir(tmp_path / "e", STEPS))
    ctx = await prompt_ids(eng)
    deltas: list[Delta] = []
    c = await eng.generate(ctx, max_tokens=64, stop=["\n\n"], on_token=deltas.append)
    assert c.text == "First we add the numbers.\n\n"
    assert c.finish_reason == "stop" and c.stop_string == "\n\n"
    assert "".join(d.text for d in deltas) == c.text
    assert tuple(t for d in deltas for t in d.token_ids) == c.token_ids
    assert await eng.detokenize(c.token_ids) == c.text
    assert trt.INSTANCES[0].executor.calls[-1]["streaming"] is True


async def test_stop_string_inside_a_merged_token_is_caught_and_the_request_aborted(
    trt: ModuleType, tmp_path: Path
) -> None:
    # the model writes the token " step"; as a token sequence the stop word "step" (a different token) never
    # matches, but the runtime also matches stop strings on the detokenized text and then aborts the request
    # (result.py DetokenizedGenerationResultBase._handle_response); the driver's own text check ends the step
    # at the same token either way.
    eng = await started(make_engine_dir(tmp_path / "e", "Then the step is done and more words follow here."))
    ctx = await prompt_ids(eng)
    c = await eng.generate(ctx, max_tokens=40, stop=["step"])
    assert c.text == "Then the step" and c.finish_reason == "stop" and c.stop_string == "step"
    ex = trt.INSTANCES[0].executor
    assert ex.aborted, "the request must be aborted once the stop string is seen"
    for _ in range(20):
        await asyncio.sleep(0.002)
    assert not ex.running


async def test_eos_ends_a_step_without_the_eos_token(trt: ModuleType, tmp_path: Path) -> None:
    eng = await started(make_engine_dir(tmp_path / "e", "Short answer."))
    ctx = await prompt_ids(eng)
    for stop in ([], ["\n\n"]):  # non-streaming and streaming paths
        c = await eng.generate(ctx, max_tokens=40, stop=stop)
        assert c.text == "Short answer." and c.finish_reason == "eos"
        assert not set(c.token_ids) & eng.info.eos_token_ids


async def test_length_cap_and_sampling_settings(trt: ModuleType, tmp_path: Path) -> None:
    eng = await started(make_engine_dir(tmp_path / "e", STEPS))
    ctx = await prompt_ids(eng)
    c = await eng.generate(ctx, max_tokens=3)
    assert len(c.token_ids) == 3 and c.finish_reason == "length"
    greedy = trt.INSTANCES[0].executor.calls[-1]["sampling_params"]
    assert greedy._greedy_decoding and greedy.temperature is None
    await eng.generate(ctx, max_tokens=3, sampling=SamplingParams(temperature=0.7, seed=5))
    sampled = trt.INSTANCES[0].executor.calls[-1]["sampling_params"]
    # 1.1+ samples for a temperature alone (params_imply_greedy_decoding); top_p is passed so ours applies
    assert not sampled._greedy_decoding and sampled.temperature == 0.7 and sampled.top_p == 1.0
    assert sampled.seed == 5 and sampled.stop_token_ids == sorted(eng.info.eos_token_ids)


async def test_cancellation_aborts_the_runtime_request(trt: ModuleType, tmp_path: Path) -> None:
    long = " ".join(["then we check the total"] * 60)
    eng = await started(make_engine_dir(tmp_path / "e", long))
    trt.INSTANCES[0].executor.iteration_seconds = 0.01
    ctx = await prompt_ids(eng)
    task = asyncio.create_task(eng.generate(ctx, max_tokens=300, stop=["\n\n"]))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    ex = trt.INSTANCES[0].executor
    assert len(ex.aborted) == 1 and eng.stats.cancelled_calls == 1
    for _ in range(500):  # bounded (5 s): the runtime drops the aborted request on its next iteration
        if not ex.running and (await eng.health()).in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert not ex.running and (await eng.health()).in_flight == 0


async def test_fifty_concurrent_glimpses_are_batched_in_flight(trt: ModuleType, tmp_path: Path) -> None:
    eng = await started(make_engine_dir(tmp_path / "e", STEPS, [0.9]), max_concurrency=16)
    base = await prompt_ids(eng)
    words = await eng.tokenize(" the step")
    contexts = [base + words * (i % 7) for i in range(50)]
    glimpses = await asyncio.gather(*(eng.glimpse(c, SamplingParams()) for c in contexts))
    assert len(glimpses) == 50 and all(np.isfinite(g.entropy) for g in glimpses)
    ex = trt.INSTANCES[0].executor
    assert 1 < ex.max_batch_seen <= 16  # in flight together, bounded by max_concurrency
    assert eng.stats.extra["max_in_flight"] == 16 and eng.stats.glimpses == 50


# -------------------------------------------------------------------------------------------- errors


async def test_missing_tensorrt_llm_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch, trt: ModuleType, tmp_path: Path
) -> None:
    eng = engine_on(make_engine_dir(tmp_path / "e"))
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
    with pytest.raises(EngineUnavailableError, match=r"tensorrt-llm>=1.1,<1.3.*pypi.nvidia.com"):
        await eng.start()


async def test_tensorrt_backend_removed_in_newer_releases(
    monkeypatch: pytest.MonkeyPatch, trt: ModuleType, tmp_path: Path
) -> None:
    eng = engine_on(make_engine_dir(tmp_path / "e"))
    monkeypatch.setitem(sys.modules, "tensorrt_llm._tensorrt_engine", None)
    with pytest.raises(EngineUnavailableError, match=r"removed after 1.3.0rc20.*backend: pytorch"):
        await eng.start()


async def test_unusable_directories_are_configuration_errors(trt: ModuleType, tmp_path: Path) -> None:
    old = make_engine_dir(tmp_path / "old", config=OLD_FORMAT_CONFIG)
    with pytest.raises(ConfigurationError, match="pre-0.8"):
        await engine_on(old).start()
    no_logits = make_engine_dir(tmp_path / "nl", gather_generation_logits=False)
    with pytest.raises(ConfigurationError, match="gather_generation_logits"):
        await engine_on(no_logits).start()
    bare = make_engine_dir(tmp_path / "bare", with_tokenizer=False)
    with pytest.raises(ConfigurationError, match="tokenizer"):
        await engine_on(bare).start()
    with pytest.raises(ConfigurationError, match="only the TensorRT backend"):
        await engine_on(make_engine_dir(tmp_path / "ok"), backend="pytorch").start()
    narrow = make_engine_dir(tmp_path / "narrow", vocab_size=REAL_VOCAB - 10)
    with pytest.raises(ConfigurationError, match="another model"):
        await engine_on(narrow).start()
    assert not trt.INSTANCES  # every mistake was caught before the runtime was asked to load anything


async def test_load_failures_are_typed(trt: ModuleType, tmp_path: Path) -> None:
    hf = make_hf_dir(tmp_path / "hf")
    with pytest.raises(EngineUnavailableError, match="GPUs are available"):
        await engine_on(hf, tensor_parallel_size=2).start()
    with pytest.raises(ConfigurationError):
        TensorRTLLMEngine(hf, free_gpu_memory_fraction=1.5)


async def test_request_errors_are_typed(trt: ModuleType, tmp_path: Path) -> None:
    eng = await started(make_engine_dir(tmp_path / "e", STEPS, max_seq_len=64))
    ctx = await prompt_ids(eng)
    with pytest.raises(ContextTooLongError):
        await eng.glimpse(ctx * 10, SamplingParams())
    with pytest.raises(InvalidRequestError):
        await eng.generate([], max_tokens=4)
    with pytest.raises(InvalidRequestError, match=r"token ids \[-1\] are not tokens"):
        await eng.glimpse([*ctx, -1], SamplingParams())
    ex = trt.INSTANCES[0].executor
    ex.fail_next.append(RuntimeError("Encountered an error in forwardAsync"))
    with pytest.raises(EngineFailureError, match="forwardAsync"):
        await eng.glimpse(ctx, SamplingParams())
    assert eng.stats.failed_calls == 1
    ex.drop_logits = True
    with pytest.raises(EngineFailureError, match="gather_generation_logits"):
        await eng.glimpse(ctx, SamplingParams())
    ex.drop_logits = False
    assert (await eng.glimpse(ctx, SamplingParams())).text == "First"  # still usable afterwards


async def test_calls_from_another_event_loop_are_refused(trt: ModuleType, tmp_path: Path) -> None:
    eng = await started(make_engine_dir(tmp_path / "e", STEPS))
    ctx = await prompt_ids(eng)
    with pytest.raises(EngineUnavailableError, match="inside the loop"):
        await asyncio.to_thread(lambda: asyncio.run(eng.glimpse(ctx, SamplingParams())))


async def test_close_shuts_down_and_refuses_later_calls(trt: ModuleType, tmp_path: Path) -> None:
    eng = await started(make_engine_dir(tmp_path / "e", STEPS))
    ctx = await prompt_ids(eng)
    await eng.close()
    assert trt.INSTANCES[0]._shutdown
    assert not (await eng.health()).ok
    with pytest.raises(EngineUnavailableError, match="closed"):
        await eng.glimpse(ctx, SamplingParams())
    with pytest.raises(EngineUnavailableError):
        await eng.start()


# -------------------------------------------------------------------------------------------- routing


async def test_routed_generation_with_two_fake_engines(trt: ModuleType, tmp_path: Path) -> None:
    small = await started(
        make_engine_dir(tmp_path / "small", STEPS, entropies=[0.2, 2.5, 0.2]),
        name="small",
        free_gpu_memory_fraction=0.15,
    )
    large_text = "Large one.\n\nLarge writes the check.\n\nLarge three."
    large = await started(make_hf_dir(tmp_path / "large", large_text, 0.1), name="large", free_gpu_memory_fraction=0.8)
    assert isinstance(small, Engine) and isinstance(large, Engine)
    router = Router(small, large, RouterConfig(threshold=1.0, thinking="off", **UNGUARDED))  # the entropy loop alone
    results = await asyncio.gather(*(router.generate("What is 2 plus 2?") for _ in range(8)))
    r = results[0]
    assert [s.model for s in r.steps] == ["small", "large", "small"]
    assert r.text == "First we add the numbers.\n\nLarge writes the check.\n\nThe answer is 4."
    assert r.finish_reason == "eos" and all(x.text == r.text for x in results)
    small_llm, large_llm = trt.INSTANCES
    assert small_llm.executor.max_batch_seen > 1 and large_llm.executor.max_batch_seen > 1


async def test_manager_builds_tensorrt_llm_engines_from_config(trt: ModuleType, tmp_path: Path) -> None:
    cfg = GlimpConfig(
        small=TensorRTLLMEngineConfig(
            model=str(make_engine_dir(tmp_path / "s", STEPS, [0.1])), free_gpu_memory_fraction=0.15
        ),
        large=TensorRTLLMEngineConfig(model=str(make_hf_dir(tmp_path / "l", STEPS)), backend="pytorch"),
        router=RouterConfig(thinking="off", **UNGUARDED),  # the entropy loop alone: no guard sends steps large
    )
    async with BackendManager(cfg) as manager:
        assert isinstance(manager.small, TensorRTLLMEngine) and manager.small.name == "small"
        result = await manager.router.generate("What is 2 plus 2?")
        assert result.text == STEPS and result.usage.large_steps == 0
        assert (await manager.health())["ok"]
    assert all(llm._shutdown for llm in trt.INSTANCES)


async def test_hf_checkpoint_on_the_tensorrt_backend_is_built_for_the_whole_window(
    trt: ModuleType, tmp_path: Path
) -> None:
    """Building at load time, BuildConfig's default max_input_len (1,024) would refuse the long contexts the
    router was promised: the driver builds for the context window, with logits and paged context FMHA."""
    eng = await started(make_hf_dir(tmp_path / "hf", STEPS, [0.3]), backend="tensorrt", max_seq_len=1800)
    (llm,) = trt.INSTANCES
    assert type(llm).__name__ == "TrtLLM"
    bc = llm.args["build_config"]
    assert (bc.max_seq_len, bc.max_input_len) == (1800, 1799) == (eng.info.context_window, llm.max_input_len)
    assert bc.gather_generation_logits and bc.plugin_config.use_paged_context_fmha
    long_context = (await prompt_ids(eng)) * 90  # well past 1,024 tokens
    assert 1024 < len(long_context) < 1799
    g = await eng.glimpse(long_context, SamplingParams())
    assert g.entropy == pytest.approx(0.3, abs=2e-3)


async def test_a_tokenizer_object_is_passed_to_the_runtime_as_it_is(trt: ModuleType, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    hf = make_hf_dir(tmp_path / "hf")
    tok = AutoTokenizer.from_pretrained(str(hf))
    await started(make_engine_dir(tmp_path / "e", with_tokenizer=False), tokenizer=tok)
    (llm,) = trt.INSTANCES
    assert llm.args["tokenizer"] is tok  # not the engine directory, which holds no tokenizer files


async def test_manager_loads_the_small_engine_before_the_large_one(
    trt: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory fractions are shares of what is free at load time, so loads must never interleave."""
    events: list[str] = []
    original = TensorRTLLMEngine.start

    async def start(self: TensorRTLLMEngine) -> None:
        events.append(f"{self.name} begins")
        await asyncio.sleep(0.01)  # a real load yields; interleaving would show here
        await original(self)
        events.append(f"{self.name} loaded")

    monkeypatch.setattr(TensorRTLLMEngine, "start", start)
    config = GlimpConfig(
        small=TensorRTLLMEngineConfig(model=str(make_hf_dir(tmp_path / "s", STEPS)), backend="pytorch"),
        large=TensorRTLLMEngineConfig(model=str(make_hf_dir(tmp_path / "l", STEPS)), backend="pytorch"),
    )
    async with BackendManager(config):
        assert events == ["small begins", "small loaded", "large begins", "large loaded"]


def test_fake_build_config_rejects_misspelt_plugin_fields(trt: ModuleType) -> None:
    bc = trt.BuildConfig()
    with pytest.raises(AttributeError):
        bc.plugin_config.use_paged_context_fhma = True  # type: ignore[attr-defined]


def test_every_tensorrt_llm_name_is_listed() -> None:
    source = Path(__import__("glimp_llm.engines.tensorrt_llm", fromlist=["x"]).__file__).read_text()
    for name in ("_tensorrt_engine", "KvCacheConfig", "generate_async", "generation_logits", "abort", "shutdown"):
        assert name in source and any(name in k for k in TENSORRT_LLM_NAMES), name


# ---------------------------------------------------------------- the fake is as unkind as the real runtime
# Each test below pins one behaviour of tensorrt-llm 1.1/1.2 that the driver depends on (source in _fake.py).


def fake_llm(trt: ModuleType, backend: str, directory: Path, **kwargs: Any) -> Any:
    cls = trt.TrtLLM if backend == "tensorrt" else trt.TorchLLM
    return cls(model=str(directory), gather_generation_logits=True, **kwargs)


def model_dir(backend: str, directory: Path, response: str = "Done.", **build: Any) -> Path:
    """An engine directory (TensorRT backend) or an HF checkpoint (PyTorch backend; build settings ignored)."""
    if backend == "tensorrt":
        return make_engine_dir(directory, response, **build)
    return make_hf_dir(directory, response)


async def eos_context(llm: Any, response: str = "Done.") -> list[int]:
    """A prompt after which the fake model's next token is its end-of-sequence token."""
    tok = llm.tokenizer
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False)
    return tok.encode(prompt) + tok.encode(response)


BACKENDS = ("tensorrt", "pytorch")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_fake_end_id_and_the_logits_slice_follow_the_backend(
    trt: ModuleType, tmp_path: Path, backend: str
) -> None:
    from tensorrt_llm import SamplingParams as P

    llm = fake_llm(trt, backend, model_dir(backend, tmp_path / "m"))
    ctx = await eos_context(llm)
    eos = llm.tokenizer.eos_token_id
    out = await llm.generate_async(ctx, P(max_tokens=1, return_generation_logits=True))
    c = out.outputs[0]
    assert c.finish_reason == "stop"
    if backend == "tensorrt":  # end id left out of token_ids; logits sliced to [:len(token_ids)]
        assert c.token_ids == [] and c.generation_logits.shape == (0, llm.vocab_padded)
    else:  # the PyTorch sampler adds the token before it stops on it
        assert c.token_ids == [eos] and c.generation_logits.shape == (1, llm.vocab_padded)
    kept = await llm.generate_async(ctx, P(max_tokens=1, return_generation_logits=True, ignore_eos=True))
    k = kept.outputs[0]  # end_id=-1: the token comes back on both backends, as an ordinary one
    assert k.token_ids == [eos] and k.finish_reason == "length" and k.generation_logits.shape == (1, llm.vocab_padded)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_fake_reports_cached_tokens_only_on_pytorch(trt: ModuleType, tmp_path: Path, backend: str) -> None:
    from tensorrt_llm import SamplingParams as P

    llm = fake_llm(trt, backend, model_dir(backend, tmp_path / "m", STEPS, tokens_per_block=4))
    if backend == "pytorch":
        llm.tokens_per_block = 4
    ctx = await eos_context(llm, "")
    await llm.generate_async(ctx, P(max_tokens=4))
    again = await llm.generate_async(ctx, P(max_tokens=1, return_perf_metrics=True))
    metrics = again.outputs[0].request_perf_metrics
    if backend == "pytorch":
        assert again.cached_tokens >= len(ctx) - 4 > 0 and metrics is None
    else:  # the C++ Result has no cached_tokens: always 0; reused blocks come with the perf metrics
        assert again.cached_tokens == 0
        assert metrics.kv_cache_metrics.num_reused_blocks * 4 >= len(ctx) - 4 > 0


async def test_fake_pytorch_length_checks(trt: ModuleType, tmp_path: Path) -> None:
    from tensorrt_llm import SamplingParams as P

    hf = make_hf_dir(tmp_path / "hf", STEPS, max_position_embeddings=256)
    long_prompt = [5] * 100
    strict = fake_llm(trt, "pytorch", hf, max_num_tokens=64)
    with pytest.raises(ValueError, match="max_num_tokens"):  # _check_arguments: the prompt alone
        strict.generate_async(long_prompt, P(max_tokens=1))
    chunked = fake_llm(trt, "pytorch", hf, max_num_tokens=64, enable_chunked_prefill=True)
    out = await chunked.generate_async(long_prompt, P(max_tokens=1000))  # max_tokens is clamped, not refused
    assert out.finished
    with pytest.raises(trt.RequestError, match="default_max_tokens"):  # no room left under max_seq_len
        chunked.generate_async([5] * 256, P(max_tokens=1))


async def test_fake_tensorrt_length_checks(trt: ModuleType, tmp_path: Path) -> None:
    from tensorrt_llm import SamplingParams as P

    engine = make_engine_dir(tmp_path / "e", STEPS, max_seq_len=256, max_num_tokens=64)
    strict = fake_llm(trt, "tensorrt", engine)
    with pytest.raises(ValueError, match="max_seq_len"):  # _check_arguments, in Python
        strict.generate_async([5] * 200, P(max_tokens=100))
    pending = strict.generate_async([5] * 100, P(max_tokens=1))  # accepted here...
    with pytest.raises(trt.RequestError, match="exceeds maximum input length"):  # ...refused by the executor
        await pending
    chunked = fake_llm(trt, "tensorrt", engine, enable_chunked_prefill=True)
    assert chunked.max_input_len == 255
    assert (await chunked.generate_async([5] * 200, P(max_tokens=100))).finished  # clamped by LlmRequest::validate
    no_fmha = make_engine_dir(tmp_path / "nf", use_paged_context_fmha=False)
    with pytest.raises(RuntimeError, match="paged context FMHA"):
        fake_llm(trt, "tensorrt", no_fmha, enable_chunked_prefill=True)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_fake_streaming_logits_hold_only_the_newest_rows(trt: ModuleType, tmp_path: Path, backend: str) -> None:
    from tensorrt_llm import SamplingParams as P

    llm = fake_llm(trt, backend, model_dir(backend, tmp_path / "m", STEPS))
    ctx = await eos_context(llm, "")
    shapes = [
        part.outputs[0].generation_logits.shape[0]
        async for part in llm.generate_async(ctx, P(max_tokens=5, return_generation_logits=True), streaming=True)
    ]
    assert shapes == [1, 1, 1, 1, 1]
    whole = await llm.generate_async(ctx, P(max_tokens=5, return_generation_logits=True))
    assert whole.outputs[0].generation_logits.shape[0] == 5


def test_fake_greedy_rule_and_validation_bounds(trt: ModuleType) -> None:
    from tensorrt_llm import SamplingParams as P

    assert P()._greedy_decoding and P(temperature=0.0)._greedy_decoding
    assert not P(temperature=0.7)._greedy_decoding  # 1.1+: a temperature alone samples
    assert P(temperature=0.7, top_k=1)._greedy_decoding and P(temperature=0.7, top_p=0.0)._greedy_decoding
    assert P(max_tokens=0).max_tokens == 0  # no max_tokens check in SamplingParams._validate
    for bad in ({"top_p": 1.5}, {"top_p": -0.1}, {"top_k": -1}, {"temperature": -0.5}):
        with pytest.raises(ValueError, match="require"):
            P(**bad)


async def test_fake_matches_stop_strings_on_text_and_aborts(trt: ModuleType, tmp_path: Path) -> None:
    from tensorrt_llm import SamplingParams as P

    llm = fake_llm(trt, "pytorch", make_hf_dir(tmp_path / "hf", "Then the step is done and more words follow."))
    ctx = await eos_context(llm, "")
    params = P(max_tokens=30, stop=["step"], include_stop_str_in_output=True)
    parts = [p async for p in llm.generate_async(ctx, params, streaming=True)]
    c = parts[-1].outputs[0]
    assert c.finish_reason == "stop" and c.stop_reason == "step" and c.text == "Then the step"
    assert llm.tokenizer.decode(c.token_ids) == "Then the step"  # " step" is one token: not a token-level match
    assert llm.executor.aborted == [parts[-1].request_id]  # the result aborts the request itself


async def test_fake_save_writes_no_generation_config(trt: ModuleType, tmp_path: Path) -> None:
    llm = trt.TrtLLM(model=str(make_hf_dir(tmp_path / "hf")), build_config=trt.BuildConfig(max_seq_len=512))
    llm.save(str(tmp_path / "saved"))
    names = {f.name for f in (tmp_path / "saved").iterdir()}
    assert {"config.json", "rank0.engine", "tokenizer.json", "tokenizer_config.json"} <= names
    assert "generation_config.json" not in names  # LLM.save: engine + tokenizer.save_pretrained only
    assert (tmp_path / "hf" / "generation_config.json").is_file()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_fake_context_logits_cover_recomputed_positions(trt: ModuleType, tmp_path: Path, backend: str) -> None:
    from tensorrt_llm import SamplingParams as P

    llm = fake_llm(trt, backend, model_dir(backend, tmp_path / "m", STEPS, gather_context_logits=True))
    llm.tokens_per_block = 4
    ctx = await eos_context(llm, "")
    first = await llm.generate_async(ctx, P(max_tokens=1, return_context_logits=True))
    assert first.context_logits.shape == (len(ctx), llm.vocab_padded)
    second = await llm.generate_async(ctx, P(max_tokens=1, return_context_logits=True))
    reused = len(ctx) - second.context_logits.shape[0]
    assert reused > 0 and reused % 4 == 0  # reused blocks are not recomputed, so they have no rows
    salted = await llm.generate_async(ctx, P(max_tokens=1, return_context_logits=True), cache_salt="fresh")
    assert salted.context_logits.shape[0] == len(ctx)
    if backend == "tensorrt":
        plain = fake_llm(trt, backend, model_dir(backend, tmp_path / "plain", STEPS))
        pending = plain.generate_async(ctx, P(max_tokens=1, return_context_logits=True))
        with pytest.raises(trt.RequestError, match="gather_context_logits"):
            await pending


# ------------------------------------------------------------------------- the five defects of issue 13


def engine_or_hf(backend: str, directory: Path, response: str, entropies: Any = 0.05, **build: Any) -> Path:
    if backend == "tensorrt":
        return make_engine_dir(directory, response, entropies, **build)
    return make_hf_dir(directory, response, entropies)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_defect1_eos_glimpse_on_both_backends(trt: ModuleType, tmp_path: Path, backend: str) -> None:
    """The TensorRT backend strips the end id and slices the logits to the tokens: without ignore_eos an EOS
    glimpse has neither a token nor a logits row."""
    eng = await started(engine_or_hf(backend, tmp_path / "m", "Done."))
    ctx = await prompt_ids(eng)
    end = await eng.glimpse(ctx + await eng.tokenize("Done."), SamplingParams())
    assert end.is_eos and end.text == "" and end.token_id in eng.info.eos_token_ids
    assert np.isfinite(end.entropy) and end.logprob == pytest.approx(0.0, abs=0.1)
    assert trt.INSTANCES[0].executor.calls[-1]["sampling_params"].ignore_eos is True
    router = Router(eng, eng, RouterConfig(threshold=1.0, thinking="off"))
    result = await router.generate("What is 2 plus 2?")  # every step boundary ends on an EOS glimpse
    assert result.text == "Done." and result.finish_reason == "eos"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_defect2_contexts_longer_than_max_num_tokens(trt: ModuleType, tmp_path: Path, backend: str) -> None:
    """Prompts past max_num_tokens (but inside the advertised window) work: chunked prefill is on."""
    directory = engine_or_hf(backend, tmp_path / "m", STEPS, [0.3], max_num_tokens=64)
    eng = await started(directory, max_num_tokens=64)
    (llm,) = trt.INSTANCES
    assert llm.args["enable_chunked_prefill"] is True
    long_context = (await prompt_ids(eng)) * 12
    assert 64 < len(long_context) < eng.info.context_window
    g = await eng.glimpse(long_context, SamplingParams())
    assert g.entropy == pytest.approx(0.3, abs=2e-3)
    c = await eng.generate(long_context, max_tokens=8, stop=["\n\n"])
    assert c.token_ids and eng.stats.failed_calls == 0


def test_defect2_validate_reports_max_num_tokens_below_max_input_len(tmp_path: Path) -> None:
    from glimp_llm.engines.tensorrt_llm_validate import validate_engine_dir

    short = validate_engine_dir(make_engine_dir(tmp_path / "s", max_seq_len=16384, max_num_tokens=8192))
    assert short.ok and any("max_num_tokens=8192 is below max_input_len=16383" in w for w in short.warnings)
    fine = validate_engine_dir(make_engine_dir(tmp_path / "f", max_seq_len=8192, max_num_tokens=8192))
    assert not any("max_num_tokens" in w for w in fine.warnings)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_defect3_prefix_reuse_is_measured_on_both_backends(trt: ModuleType, tmp_path: Path, backend: str) -> None:
    """cached_tokens is always 0 on the TensorRT backend: reuse is read from the KV-cache perf metrics there."""
    eng = await started(engine_or_hf(backend, tmp_path / "m", STEPS))
    trt.INSTANCES[0].tokens_per_block = 4
    ctx = await prompt_ids(eng)
    first = await eng.glimpse(ctx, SamplingParams())
    step = await eng.generate(ctx, max_tokens=64, stop=["\n\n"])
    later = await eng.glimpse(ctx + list(step.token_ids), SamplingParams())
    assert first.cached_tokens == 0
    assert len(ctx) - 4 <= later.cached_tokens < len(ctx) + len(step.token_ids)
    assert eng.stats.tokens_reused >= later.cached_tokens
    if backend == "tensorrt":
        assert trt.INSTANCES[0].executor.calls[-1]["sampling_params"].return_perf_metrics is True


@pytest.mark.parametrize("backend", BACKENDS)
async def test_defect3_the_smoke_script_checks_reuse_correctly(trt: ModuleType, tmp_path: Path, backend: str) -> None:
    """examples/tensorrt_llm_smoke.py's checks on the fake: the KV-reuse check passes on both backends, and the
    entropy check reads the logits of the glimpse request itself."""
    import importlib

    sys.path.insert(0, str(EXAMPLES))
    try:
        smoke = importlib.import_module("tensorrt_llm_smoke")
    finally:
        sys.path.pop(0)
    small = engine_or_hf(backend, tmp_path / "s", STEPS, [0.2, 2.5, 0.2])
    large = engine_or_hf(backend, tmp_path / "l", "Large one.\n\nLarge two.\n\nLarge three.")
    report = await smoke.run_smoke(str(small), str(large), concurrency=3, max_tokens=64)
    assert report.ok, report.render()
    calls = trt.INSTANCES[0].executor.calls
    assert sum(c["sampling_params"].return_generation_logits for c in calls[:2]) == 1  # one glimpse request


async def test_defect4_versions_below_the_floor_are_refused(
    trt: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import glimp_llm.engines.tensorrt_llm as driver

    monkeypatch.setattr(driver, "_installed_version", lambda: "1.0.0")
    with pytest.raises(EngineUnavailableError, match=r"1\.0\.0 is older.*>=1\.1,<1\.3"):
        await started(make_engine_dir(tmp_path / "e", STEPS))
    assert not trt.INSTANCES


async def test_defect4_a_salt_on_a_runtime_without_cache_salt_is_a_configuration_error(
    trt: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1.0's generate_async has no cache_salt: every salted request would raise TypeError. Feature-detected."""

    def generate_async_1_0(self: Any, inputs: Any, sampling_params: Any = None, streaming: bool = False) -> Any:
        return trt._LLMBase.generate_async(self, inputs, sampling_params, streaming=streaming)

    monkeypatch.setattr(trt.TrtLLM, "generate_async", generate_async_1_0)
    with pytest.raises(ConfigurationError, match="cache_salt"):
        await started(make_engine_dir(tmp_path / "e", STEPS), cache_salt="user-1")
    assert trt.INSTANCES[0]._shutdown


async def test_defect5_extra_eos_ids_come_from_generation_config(trt: ModuleType, tmp_path: Path) -> None:
    """LLM.save writes no generation_config.json; the loaded engine then misses the model's extra EOS ids,
    and validate says so."""
    from glimp_llm.engines.tensorrt_llm_validate import validate_engine_dir

    hf = make_hf_dir(tmp_path / "hf", STEPS)
    eos = json.loads((hf / "generation_config.json").read_text())["eos_token_id"][0]
    (hf / "generation_config.json").write_text(json.dumps({"eos_token_id": [eos, 3]}))
    bc = trt.BuildConfig(max_seq_len=512, gather_generation_logits=True)
    trt.TrtLLM(model=str(hf), build_config=bc).save(str(tmp_path / "saved"))
    report = validate_engine_dir(tmp_path / "saved")
    assert report.ok and any("generation_config.json" in w for w in report.warnings)
    bare = await started(tmp_path / "saved", name="bare")
    assert bare.info.eos_token_ids == {eos}  # what an engine saved by the python route alone gives
    with_tokenizer_dir = await started(tmp_path / "saved", name="hf", tokenizer=hf)
    assert with_tokenizer_dir.info.eos_token_ids == {eos, 3}


@pytest.mark.parametrize(
    ("content", "problem"),
    [("{not json", "is not readable JSON"), ("[1, 2]", "not a generation config .an object expected, got list")],
)
async def test_a_malformed_generation_config_is_named_before_the_load(
    trt: ModuleType, tmp_path: Path, content: str, problem: str
) -> None:
    """The EOS ids are read before the minutes-long LLM(...) load: a broken generation_config.json is a typed
    error naming the file, and no runtime instance is left holding the GPU."""
    engine = make_engine_dir(tmp_path / "e", STEPS)
    (engine / "generation_config.json").write_text(content)
    with pytest.raises(ConfigurationError, match=problem) as caught:
        await started(engine)
    assert "generation_config.json" in str(caught.value)
    assert trt.INSTANCES == []


async def test_boolean_eos_ids_in_generation_config_are_not_token_ids(trt: ModuleType, tmp_path: Path) -> None:
    engine = make_engine_dir(tmp_path / "e", STEPS)
    eos = json.loads((engine / "generation_config.json").read_text())["eos_token_id"][0]
    (engine / "generation_config.json").write_text(json.dumps({"eos_token_id": [eos, True]}))
    eng = await started(engine)
    assert eng.info.eos_token_ids == {eos}


# ------------------------------------------------------------------------------------------------ score


def log_softmax(row: np.ndarray) -> np.ndarray:
    x = row.astype(np.float64)
    return x - (x.max() + np.log(np.exp(x - x.max()).sum()))


@pytest.mark.parametrize("backend", BACKENDS)
async def test_score_reads_context_logits(trt: ModuleType, tmp_path: Path, backend: str) -> None:
    eng = await started(engine_or_hf(backend, tmp_path / "m", STEPS, [0.4], gather_context_logits=True))
    assert eng.info.can_score
    (llm,) = trt.INSTANCES
    llm.tokens_per_block = 4
    ctx = await prompt_ids(eng)
    cont = await eng.tokenize("First we add the numbers.")
    scores = await eng.score(ctx, cont)
    vocab = eng.info.vocab_size
    expected = [log_softmax(llm.model_logits(ctx + cont[:j])[:vocab])[tok] for j, tok in enumerate(cont)]
    assert scores.logprobs == pytest.approx(expected, abs=2e-2)  # fp16 logits, as the fake returns them
    best = [log_softmax(llm.model_logits(ctx + cont[:j])[:vocab]).max() for j in range(len(cont))]
    assert scores.best_logprobs == pytest.approx(best, abs=2e-2)
    call = llm.executor.calls[-1]
    assert call["inputs"] == ctx + cont and call["sampling_params"].return_context_logits is True
    assert call["sampling_params"].max_tokens == 1
    again = await eng.score(ctx, cont)  # the whole sequence is cached now: reuse skips the rows we need
    assert again.logprobs == pytest.approx(scores.logprobs, abs=1e-6)
    assert llm.executor.calls[-1]["cache_salt"].startswith("glimp-score-")  # the retry without reuse
    assert (await eng.score(ctx, [])).logprobs == ()
    with pytest.raises(InvalidRequestError):
        await eng.score([], cont)


async def test_score_needs_an_engine_built_with_context_logits(trt: ModuleType, tmp_path: Path) -> None:
    eng = await started(make_engine_dir(tmp_path / "e", STEPS))
    assert not eng.info.can_score
    ctx = await prompt_ids(eng)
    with pytest.raises(EngineUnavailableError, match="--gather_context_logits"):
        await eng.score(ctx, [5, 6])
    assert not trt.INSTANCES[0].executor.calls  # refused before the runtime was asked
    on_load = await started(make_hf_dir(tmp_path / "hf", STEPS), name="built", backend="tensorrt")
    assert not on_load.info.can_score


# ------------------------------------------------------------------------------------------ test honesty


def test_the_gpu_test_skips_only_when_tensorrt_llm_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import importlib.util

    from test_tensorrt_llm_gpu import _real_tensorrt_llm_reason

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())

    def broken(name: str) -> Any:
        raise OSError("libcuda.so.1: cannot open shared object file")

    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(OSError, match="libcuda"):  # a broken install fails loudly
        _real_tensorrt_llm_reason()

    def missing(name: str) -> Any:
        raise ImportError("No module named 'tensorrt'")

    monkeypatch.setattr(importlib, "import_module", missing)
    assert "cannot be imported" in str(_real_tensorrt_llm_reason())


@pytest.fixture
def real_transformers_imported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ModuleType:
    """A stand-in for the real transformers, imported before the ``trt`` fixture runs (as on a GPU host)."""
    real = ModuleType("transformers")
    real.__file__ = str(tmp_path / "site-packages" / "transformers" / "__init__.py")
    monkeypatch.setitem(sys.modules, "transformers", real)
    return real


async def test_the_fake_replaces_an_already_imported_real_package(
    real_transformers_imported: ModuleType, trt: ModuleType, tmp_path: Path
) -> None:
    """A real transformers in sys.modules must not turn the fake-runtime tests into skips (GLIMP_TEST_STRICT)."""
    assert sys.modules.get("transformers") is not real_transformers_imported
    eng = await started(make_engine_dir(tmp_path / "e", STEPS))
    assert (await eng.glimpse(await prompt_ids(eng), SamplingParams())).text == "First"
    assert _is_fake(sys.modules["transformers"])


def test_doctor_and_the_extra_state_the_same_supported_range(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13, defect 4: the extra's floor, the driver's check and `glimp doctor` agree."""
    import tomllib

    from glimp_llm.cli import doctor
    from glimp_llm.engines.tensorrt_llm import SUPPORTED_RANGE, version_problem

    root = Path(__file__).resolve().parent.parent
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["tensorrt"] == [f"tensorrt-llm{SUPPORTED_RANGE}"] and doctor.TENSORRT_SUPPORTED == SUPPORTED_RANGE
    assert version_problem("1.0.0") and not version_problem("1.1.0") and not version_problem("1.2.1")
    assert version_problem("unknown") is None  # then the driver feature-detects
    monkeypatch.setattr(doctor, "_version", lambda dist: "1.0.0" if dist == "tensorrt-llm" else None)
    trt_report = doctor.collect()["engines"]["tensorrt_llm"]
    assert trt_report["supported"] == SUPPORTED_RANGE and "older than this driver supports" in trt_report["problem"]
    assert doctor._tensorrt_version_problem("1.3.0rc21") and doctor._tensorrt_version_problem("1.2.1") is None


async def test_router_verify_with_a_tensorrt_llm_large_model(trt: ModuleType, tmp_path: Path) -> None:
    """router.verify scores the small model's steps with the large engine's context logits (PyTorch backend)."""
    small = await started(make_engine_dir(tmp_path / "small", STEPS, [0.2]), name="small")
    large = await started(make_hf_dir(tmp_path / "large", STEPS, 0.1), name="large")
    assert large.info.can_score and not small.info.can_score
    router = Router(small, large, RouterConfig(threshold=1.0, thinking="off", verify=True))
    result = await router.generate("What is 2 plus 2?")
    assert result.text == STEPS  # the large model agrees with every token, so nothing is rewritten
    assert large.stats.extra["score_calls"] >= 1


def test_steps_stream_a_character_split_over_tokens_whole() -> None:
    """The driver's incremental decoding is tokenizers' DecodeStream: a character whose bytes span tokens is
    held back until it is whole, and flush() gives what a step ending mid-character leaves (U+FFFD)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.decoders import DecodeStream

    from glimp_llm.engines.tensorrt_llm import _TextStream

    # byte-level BPE without merges: one token per byte, as GPT-2/Qwen spell bytes
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    spelling = {
        b: chr(b) if b in printable else chr(256 + i) for i, b in enumerate(x for x in range(256) if x not in printable)
    }
    spelling.update({b: chr(b) for b in printable})
    tok = Tokenizer(models.BPE(vocab={c: b for b, c in spelling.items()}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    ids = tok.encode("Café!").ids
    assert len(ids) == 6  # é is two bytes, two tokens
    stream = _TextStream(tok, DecodeStream)
    pieces = [stream.push(t) for t in ids]
    assert pieces == ["C", "a", "f", "", "é", "!"] and stream.flush() == ""
    cut = _TextStream(tok, DecodeStream)
    assert [cut.push(t) for t in ids[:4]] == ["C", "a", "f", ""] and cut.flush() == "\ufffd"
