"""Bounded fuzzing of the configuration loader (hypothesis).

Whatever a user writes (a config file in any of the three syntaxes, nested data, ``GLIMP_*`` variables)
the loader answers with a valid :class:`GlimpConfig` or a :class:`ConfigurationError` whose message
names where the problem is. Never another exception: a KeyError or a pydantic traceback from deep inside
tells the user nothing they can act on.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glimp_llm.config import GlimpConfig
from glimp_llm.errors import ConfigurationError

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ROUTER_FIELDS = [
    "threshold",
    "step_delimiter",
    "step_max_tokens",
    "max_tokens",
    "answer_model",
    "thinking",
    "paper_faithful",
    "sampling",
    "max_concurrent_requests",
    "request_timeout_s",
    "fallback_on_engine_failure",
]
ENGINE_FIELDS = ["kind", "model", "response", "n_ctx", "n_slots", "max_queue", "base_urls", "entropies", "timeout_s"]
KEYS = st.one_of(
    st.sampled_from(["small", "large", "router", *ROUTER_FIELDS, *ENGINE_FIELDS]),
    st.text(string.ascii_letters + "_", min_size=1, max_size=8),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["llama_cpp", "scripted", "openai", "tensorrt_llm", "onnx", "nan", "1e999", "-0", "auto"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=12,
)
# Mostly well-formed shapes with random leaves, so the fuzzing reaches deep validation, plus raw noise.
ENGINE = st.fixed_dictionaries(
    {"kind": st.sampled_from(["scripted", "llama_cpp", "openai", "tensorrt_llm", "bogus"])},
    optional={k: VALUES for k in ENGINE_FIELDS[1:]},
)
ROUTER = st.fixed_dictionaries({}, optional={k: VALUES for k in ROUTER_FIELDS})
DOCUMENTS = st.one_of(
    st.fixed_dictionaries({}, optional={"small": ENGINE, "large": ENGINE, "router": ROUTER}),
    st.dictionaries(KEYS, VALUES, max_size=4),
    VALUES,
)


def load_or_config_error(**kwargs: Any) -> GlimpConfig | None:
    """The contract under test: a GlimpConfig, or ConfigurationError (returned as None)."""
    try:
        cfg = GlimpConfig.load(**kwargs)
    except ConfigurationError as exc:
        message = str(exc)
        assert message.strip(), "an empty error message helps nobody"
        return None
    assert isinstance(cfg, GlimpConfig)
    GlimpConfig.validated(cfg.model_dump())  # what loaded round-trips
    return cfg


@FUZZ
@given(document=DOCUMENTS)
def test_keyword_data_gives_config_or_configuration_error(document: Any) -> None:
    if isinstance(document, dict):
        load_or_config_error(env={}, **{str(k): v for k, v in document.items()})
    else:
        with pytest.raises(ConfigurationError):  # non-mapping data cannot be a config...
            GlimpConfig.validated(document)  # type: ignore[arg-type]


def _write(directory: Path, suffix: str, text: str) -> Path:
    path = directory / f"glimp{suffix}"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


@FUZZ
@given(document=DOCUMENTS, suffix=st.sampled_from([".yaml", ".json", ".toml"]))
def test_serialised_files_give_config_or_configuration_error(document: Any, suffix: str) -> None:
    if suffix == ".yaml":
        text = yaml.safe_dump(document, allow_unicode=True)
    elif suffix == ".json":
        text = json.dumps(document)  # NaN/Infinity are written as such: not strict JSON
    else:
        text = "\n".join(f"{k} = {json.dumps(v)}" for k, v in document.items()) if isinstance(document, dict) else ""
    with tempfile.TemporaryDirectory() as d:
        load_or_config_error(path=_write(Path(d), suffix, text), env={})


@FUZZ
@given(
    text=st.one_of(
        st.text(max_size=200),
        st.text(alphabet=":-[]{}\n #'\"=.,&*!|>%@`\t0123456789abcrouthesld", max_size=200),
    ),
    suffix=st.sampled_from([".yaml", ".yml", ".json", ".toml"]),
)
def test_raw_text_files_give_config_or_configuration_error(text: str, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        load_or_config_error(path=_write(Path(d), suffix, text), env={})


ENV_NAMES = st.one_of(
    st.sampled_from(
        [f"GLIMP_ROUTER__{f.upper()}" for f in ROUTER_FIELDS]
        + [f"GLIMP_{r}__{f.upper()}" for r in ("SMALL", "LARGE") for f in ENGINE_FIELDS]
        + ["GLIMP_ROUTER__SAMPLING__TEMPERATURE", "GLIMP_ROUTER", "GLIMP_SMALL", "GLIMP__", "GLIMP_ROUTER____X"]
    ),
    st.text(string.ascii_uppercase + "_", min_size=1, max_size=20).map(lambda s: "GLIMP_" + s),
)
ENV_VALUES = st.one_of(
    st.text(max_size=20),
    VALUES.map(json.dumps),
    st.sampled_from(["NaN", "Infinity", "-1", "0", "1e999", "true", "null", "[]", "{}", '{"kind": "onnx"}']),
)


@FUZZ
@given(env=st.dictionaries(ENV_NAMES, ENV_VALUES, max_size=5))
def test_environment_gives_config_or_configuration_error(env: dict[str, str]) -> None:
    load_or_config_error(env=env)


def test_the_fuzzer_reaches_both_outcomes() -> None:
    """The strategies above are not vacuous: they produce valid configs and invalid ones."""
    assert load_or_config_error(env={"GLIMP_ROUTER__THRESHOLD": "0.7"}) is not None
    assert load_or_config_error(env={"GLIMP_ROUTER__THRESHOLD": "NaN"}) is None
    assert load_or_config_error(env={}, small={"kind": "scripted", "response": "a"}, large={"kind": "bogus"}) is None
