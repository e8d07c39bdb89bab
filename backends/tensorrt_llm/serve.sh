#!/usr/bin/env bash
# Launch trtllm-serve for the small and the large model, wait until both answer /health, stop both on exit.
#
#   backends/tensorrt_llm/serve.sh SMALL_MODEL LARGE_MODEL            # engine dirs or HF checkpoints
#   backends/tensorrt_llm/serve.sh --dry-run SMALL_MODEL LARGE_MODEL  # print the commands only
#
# Environment (defaults in brackets):
#   SMALL_PORT [8001]  LARGE_PORT [8002]  HOST [127.0.0.1]
#   SMALL_GPUS [0]     LARGE_GPUS [0]      CUDA_VISIBLE_DEVICES of each server ("1,2" for a TP-2 large model)
#   LARGE_TP [1]       LARGE_PP [1]        tensor / pipeline parallelism of the large model
#   SMALL_TOKENIZER    LARGE_TOKENIZER     HF tokenizer directories (needed for engine dirs without tokenizer files)
#   MAX_BATCH_SIZE [64]  MAX_NUM_TOKENS [8192]  LOG_DIR [./logs]
# The backend is chosen per model: an engine directory (config.json with build_config) runs on --backend tensorrt
# (tensorrt-llm 1.0 - 1.2.x), anything else on the default PyTorch backend. The per-model LLM API options
# (generation logits, KV block reuse, memory fraction) are in small.yaml / large.yaml next to this script.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
dry_run=0
if [ "${1:-}" = "--dry-run" ]; then dry_run=1; shift; fi
if [ $# -ne 2 ]; then
    echo "usage: $0 [--dry-run] SMALL_MODEL LARGE_MODEL" >&2
    exit 2
fi
small_model="$1"
large_model="$2"
HOST="${HOST:-127.0.0.1}"
LOG_DIR="${LOG_DIR:-./logs}"

backend_of() {
    if [ -f "$1/config.json" ] && grep -q '"build_config"' "$1/config.json"; then echo tensorrt; else echo pytorch; fi
}

command_for() {  # role model port tp pp tokenizer
    local role="$1" model="$2" port="$3" tp="$4" pp="$5" tokenizer="$6"
    local cmd=(trtllm-serve "$model" --backend "$(backend_of "$model")" --host "$HOST" --port "$port"
               --tp_size "$tp" --pp_size "$pp" --max_batch_size "${MAX_BATCH_SIZE:-64}"
               --max_num_tokens "${MAX_NUM_TOKENS:-8192}" --extra_llm_api_options "$here/$role.yaml")
    if [ -n "$tokenizer" ]; then cmd+=(--tokenizer "$tokenizer"); fi
    printf '%q ' "${cmd[@]}"
}

small_cmd="$(command_for small "$small_model" "${SMALL_PORT:-8001}" 1 1 "${SMALL_TOKENIZER:-}")"
large_cmd="$(command_for large "$large_model" "${LARGE_PORT:-8002}" "${LARGE_TP:-1}" "${LARGE_PP:-1}" "${LARGE_TOKENIZER:-}")"

if [ "$dry_run" = 1 ]; then
    echo "CUDA_VISIBLE_DEVICES=${SMALL_GPUS:-0} $small_cmd"
    echo "CUDA_VISIBLE_DEVICES=${LARGE_GPUS:-0} $large_cmd"
    exit 0
fi
command -v trtllm-serve >/dev/null || { echo "trtllm-serve not found: install tensorrt-llm (docs/deploy-nvidia.md)" >&2; exit 1; }
mkdir -p "$LOG_DIR"

pids=()
stop() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait || true; }
trap stop EXIT INT TERM

wait_healthy() {  # role port pid
    local deadline=$((SECONDS + ${STARTUP_TIMEOUT:-1800}))
    until curl -fsS "http://$HOST:$2/health" >/dev/null 2>&1; do
        if ! kill -0 "$3" 2>/dev/null; then echo "$1 server exited; see $LOG_DIR/$1.log" >&2; exit 1; fi
        if [ $SECONDS -ge $deadline ]; then echo "$1 server not healthy in time; see $LOG_DIR/$1.log" >&2; exit 1; fi
        sleep 5
    done
    echo "$1 server ready on http://$HOST:$2/v1"
}

# The small server starts (and allocates its KV cache) first: memory fractions are shares of what is free.
eval "CUDA_VISIBLE_DEVICES=${SMALL_GPUS:-0} $small_cmd" >"$LOG_DIR/small.log" 2>&1 &
pids+=($!)
wait_healthy small "${SMALL_PORT:-8001}" "${pids[0]}"
eval "CUDA_VISIBLE_DEVICES=${LARGE_GPUS:-0} $large_cmd" >"$LOG_DIR/large.log" 2>&1 &
pids+=($!)
wait_healthy large "${LARGE_PORT:-8002}" "${pids[1]}"
echo "both servers up; Ctrl-C stops them. Use backends/tensorrt_llm/glimp-openai.yaml (kind: openai)."
wait
