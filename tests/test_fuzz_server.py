"""Bounded fuzzing of `glimp serve`'s request parsing (hypothesis), in process over ASGI (no socket).

Whatever bytes a client sends to the OpenAI-compatible endpoints, the server answers with a JSON body:
200 for a request it can serve, a 4xx with an OpenAI-style ``error`` object naming the problem
otherwise; never a 500, never a stack trace in the response, and no request left running afterwards.
"""

from __future__ import annotations

import asyncio
import json
import string
from typing import Any

import pytest
from conftest import require
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glimp_llm.config import GlimpConfig
from glimp_llm.manager import BackendManager

pytestmark = pytest.mark.timeout(120)

CONFIG = GlimpConfig.validated(
    {
        "small": {"kind": "scripted", "response": "We add.\n\nThe answer is 7.", "name": "small"},
        "large": {"kind": "scripted", "response": "LARGE one.\n\nLARGE two.", "name": "large"},
        "router": {"threshold": 1.0, "max_tokens": 64},
    }
)
FIELDS = [
    "model",
    "messages",
    "prompt",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "n",
    "glimp",
    "tools",
    "logprobs",
    "echo",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=False),  # JSON has no NaN; json.dumps would write a non-JSON token
    st.text(max_size=20),
    st.sampled_from(["glimp", "user", "assistant", "system", "tool", "", "\x00", "é"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["role", "content", "text", "type", "threshold", "include_usage"]), inner),
    ),
    max_leaves=10,
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "bogus"]), "content": VALUES}
)
BODIES = st.one_of(
    st.fixed_dictionaries(
        {"messages": st.lists(MESSAGE, max_size=3)}, optional={k: VALUES for k in FIELDS if k != "messages"}
    ),
    st.fixed_dictionaries({"prompt": VALUES}, optional={k: VALUES for k in FIELDS if k != "prompt"}),
    st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=5),
    VALUES,
)
RAW = st.one_of(st.binary(max_size=200), st.text(string.printable, max_size=200).map(str.encode))


async def _post_all(requests: list[tuple[str, bytes]]) -> list[tuple[int, bytes]]:
    import httpx

    from glimp_llm.server import ServerSettings, create_app

    manager = BackendManager(CONFIG)
    app = create_app(settings=ServerSettings(), manager=manager)
    await manager.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
            answers = []
            for path, body in requests:
                r = await client.post(path, content=body, headers={"content-type": "application/json"})
                answers.append((r.status_code, r.content))
        assert manager.router.admission.running == 0 and manager.router.admission.waiting == 0
        return answers
    finally:
        await manager.close()


def _check(status: int, content: bytes) -> None:
    assert status < 500 or status == 503, (status, content[:300])  # 503 = engines unavailable, said so
    assert b"Traceback" not in content and b'File "' not in content, content[:300]
    if status >= 400:
        body = json.loads(content)
        assert isinstance(body.get("error"), dict) and body["error"].get("message"), body
    elif content.startswith(b"data:"):  # a stream: every event is JSON or [DONE]
        for line in content.decode().splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                json.loads(line[6:])
    else:
        json.loads(content)


FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(body=BODIES, chat=st.booleans())
def test_json_bodies_get_a_json_answer_never_a_500(body: Any, chat: bool) -> None:
    require("fastapi", "glimp serve needs the server extra")
    path = "/v1/chat/completions" if chat else "/v1/completions"
    [(status, content)] = asyncio.run(_post_all([(path, json.dumps(body).encode())]))
    _check(status, content)


@FUZZ
@given(raw=RAW, chat=st.booleans())
def test_raw_bytes_get_a_json_answer_never_a_500(raw: bytes, chat: bool) -> None:
    require("fastapi", "glimp serve needs the server extra")
    path = "/v1/chat/completions" if chat else "/v1/completions"
    [(status, content)] = asyncio.run(_post_all([(path, raw)]))
    _check(status, content)


def test_the_fuzzer_reaches_success_and_refusal() -> None:
    require("fastapi", "glimp serve needs the server extra")
    ok = json.dumps({"messages": [{"role": "user", "content": "2+5?"}]}).encode()
    answers = asyncio.run(_post_all([("/v1/chat/completions", ok), ("/v1/chat/completions", b"{")]))
    assert [a[0] for a in answers] == [200, 400]
    for status, content in answers:
        _check(status, content)
