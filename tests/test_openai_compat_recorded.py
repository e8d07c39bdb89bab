"""The SGLang and trtllm-serve dialects against recorded responses in each server's documented wire format.

Neither server can run here (SGLang's CPU path and trtllm-serve need GPUs), so each fixture in
``tests/fixtures/`` holds what the server answers, written from its source at a named commit (the fixture's
``version`` and ``follows`` say which files and docs). The recorded server is an ``httpx.MockTransport``: it
serves /v1/models, /tokenize, /detokenize (a byte-level toy vocabulary: id = byte value, 256 = <|im_end|>) and
replays the completions in order, keeping every request the engine sent so the tests can check it too."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from glimp_llm.engines.base import Delta, SamplingParams
from glimp_llm.engines.openai_compat import OpenAICompatEngine
from glimp_llm.errors import EngineUnavailableError

FIXTURES = Path(__file__).parent / "fixtures"
EOS, EOS_TEXT = 256, "<|im_end|>"
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def encode(text: str) -> list[int]:
    """The toy vocabulary: one token per byte, and <|im_end|> as the special token 256."""
    out: list[int] = []
    for i, part in enumerate(text.split(EOS_TEXT)):
        if i:
            out.append(EOS)
        out.extend(part.encode())
    return out


def decode(ids: list[int]) -> str:
    data = bytearray()
    for t in ids:
        data.extend(EOS_TEXT.encode() if t == EOS else bytes([t]))
    return data.decode("utf-8", "replace")


class ByteTokenizer:
    """Stands in for the ``tokenizers.Tokenizer`` the engine loads from ``tokenizer_from`` for trtllm-serve."""

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return decode(ids)


class RecordedServer:
    """A recorded server: the fixture's completions replayed in order; tokenizer routes answered live."""

    def __init__(self, fixture: dict[str, Any]) -> None:
        self.fixture = fixture
        self.exchanges = list(fixture["exchanges"])
        self.sent: list[dict[str, Any]] = []
        self.dialect = "sglang" if fixture["model_card"]["data"][0]["owned_by"] == "sglang" else "trtllm"

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        body = json.loads(request.content) if request.content else {}
        if path == "/v1/models":
            return httpx.Response(200, json=self.fixture["model_card"])
        if path == "/health":
            return httpx.Response(200)
        if path in ("/tokenize", "/_internal/tokenize"):
            tokens = encode(body["prompt"])
            return httpx.Response(200, json={"tokens": tokens, "count": len(tokens), "max_model_len": 4096})
        if path == "/detokenize" and self.dialect == "sglang":  # trtllm-serve has none (404 below)
            return httpx.Response(200, json={"text": decode(body["tokens"])})
        if path == "/v1/completions":
            self.sent.append(body)
            if self.dialect == "trtllm":
                undeclared = set(body) - set(self.fixture["declared_completion_fields"])
                if undeclared:  # trtllm-serve's models forbid extra fields: HTTP 400 from pydantic
                    return httpx.Response(400, json={"object": "error", "message": f"extra: {undeclared}", "code": 400})
            exchange = self.exchanges.pop(0)
            assert bool(body.get("stream")) == exchange["request"]["stream"], exchange["name"]
            if "sse" in exchange:
                text = "".join(f"data: {json.dumps(e)}\n\n" for e in exchange["sse"]) + "data: [DONE]\n\n"
                return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})
            return httpx.Response(200, json=exchange["response"])
        return httpx.Response(404, json={"detail": "Not Found"})


@pytest.fixture(params=["sglang_completions.json", "trtllm_serve_completions.json"])
def fixture(request: pytest.FixtureRequest) -> dict[str, Any]:
    data = json.loads((FIXTURES / request.param).read_text(encoding="utf-8"))
    assert data["version"] and data["follows"] and data["recorded"]  # every recording names its source
    return data


@pytest.fixture
def hf_dir(tmp_path: Path) -> Path:
    """What ``tokenizer_from`` points at: the model's tokenizer_config.json with its chat template."""
    config = {"chat_template": TEMPLATE, "bos_token": None, "eos_token": EOS_TEXT}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return tmp_path


@pytest.fixture
async def served(
    fixture: dict[str, Any], hf_dir: Path
) -> AsyncIterator[tuple[OpenAICompatEngine, RecordedServer, Callable[[], list[int]]]]:
    server = RecordedServer(fixture)
    engine = OpenAICompatEngine(
        ["http://127.0.0.1:30001/v1"],
        "small",
        vocab_size=257,
        context_window=4096,  # trtllm-serve's model card has no max_model_len
        top_logprobs=5,
        tokenizer_from=str(hf_dir),
        transport=httpx.MockTransport(server),
        max_retries=0,
    )
    engine._local_tokenizer = ByteTokenizer()  # trtllm: instead of tokenizers.Tokenizer.from_file
    await engine.start()
    yield engine, server, lambda: encode(fixture["context"])
    await engine.close()


async def test_start_glimpse_and_steps_in_the_recorded_order(
    served: tuple[OpenAICompatEngine, RecordedServer, Callable[[], list[int]]],
) -> None:
    engine, server, context = served
    ids = context()
    assert engine.dialect == server.dialect  # from owned_by
    assert engine.info.context_window == 4096 and engine.info.eos_token_ids == frozenset({EOS})
    assert not engine.info.can_score  # no prompt logprobs on their OpenAI routes
    assert await engine.render_chat([{"role": "user", "content": "What is 2+2?"}]) == server.fixture["context"]

    # 1. the glimpse: token id from token_ids, top-5 estimate, cached tokens from usage
    g = await engine.glimpse(ids, SamplingParams())
    assert (g.token_id, g.text, g.is_eos, g.top_k) == (83, "S", False, 5)
    assert g.entropy_kind == "top-k estimate" and g.entropy_error_bound > 0 and g.cached_tokens == 32
    assert g.logprob == pytest.approx(-0.2) and 0.95 < (g.captured_mass or 0) < 1

    # 2. a step to the delimiter, streamed: ids and text agree, the delimiter kept
    streamed: list[Delta] = []
    step = await engine.generate([*ids, g.token_id], max_tokens=64, stop=["\n\n"], on_token=streamed.append)
    assert step.text == "tep 1: 2+2=4.\n\n" and decode(list(step.token_ids)) == step.text
    assert (step.finish_reason, step.stop_string, step.cached_tokens) == ("stop", "\n\n", 40)
    assert "".join(d.text for d in streamed) == step.text
    assert engine.stats.extra["retokenized_steps"] == 0  # the server's ids, not re-tokenised text

    # 3. a glimpse at the end of sequence
    end = await engine.glimpse([*ids, *encode("The answer is 4.")], SamplingParams())
    assert end.is_eos and end.token_id == EOS and end.text == ""

    # 4. a step to the end of sequence: the EOS token and its text left out
    streamed.clear()
    last = await engine.generate(ids, max_tokens=64, on_token=streamed.append)
    assert last.finish_reason == "eos" and EOS not in last.token_ids and EOS_TEXT not in last.text
    assert decode(list(last.token_ids)) == last.text == "".join(d.text for d in streamed)

    # 5. a step to the cap
    capped = await engine.generate(ids, max_tokens=4)
    assert capped.finish_reason == "length" and capped.text == "Let "
    assert not server.exchanges  # every recorded answer was used

    # what the engine sent, per dialect
    glimpse_body, step_body = server.sent[0], server.sent[1]
    assert glimpse_body["prompt"] == ids and glimpse_body["max_tokens"] == 1 and glimpse_body["logprobs"] == 5
    assert step_body["stop"] == ["\n\n"] and step_body["stream"] is True
    if server.dialect == "sglang":
        assert step_body["no_stop_trim"] is True and step_body["return_token_ids"] is True
    else:
        assert step_body["detokenize"] is False and step_body["include_stop_str_in_output"] is True


async def test_a_multibyte_character_split_over_tokens_streams_whole(
    served: tuple[OpenAICompatEngine, RecordedServer, Callable[[], list[int]]],
) -> None:
    engine, server, context = served
    if server.dialect != "trtllm":
        pytest.skip("only trtllm-serve (detokenize: false) leaves the decoding to the engine")
    ids = context()
    server.exchanges = [e for e in server.exchanges if e["name"] == "step to end of sequence"]
    streamed: list[Delta] = []
    c = await engine.generate(ids, max_tokens=64, on_token=streamed.append)
    assert c.text == "Café!" and [d.text for d in streamed if d.text] == ["Caf", "é!"]
    assert "\ufffd" not in "".join(d.text for d in streamed)


async def test_score_names_what_the_server_lacks(
    served: tuple[OpenAICompatEngine, RecordedServer, Callable[[], list[int]]],
) -> None:
    engine, server, context = served
    with pytest.raises(EngineUnavailableError, match="no prompt logprobs"):
        await engine.score(context(), [83, 116])
    assert not server.sent  # nothing was asked of the server
