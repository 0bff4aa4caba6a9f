#!/usr/bin/env bash
# The GPU checks of issue 22 in one lease (run from the repository root with .whl carried; OUT: where results go):
# the device-only correctness checks, then the side-by-side training benchmark at the small preset with GPT-2's
# vocabulary, its most telling cells first so a cut-off run still has them.
OUT=${OUT:-outputs/gpu}
mkdir -p "$OUT"
source benchmarks/gpu_env.sh > "$OUT/env.txt" 2>&1 || exit 3  # not in a pipe: its exports must stay here
cat "$OUT/env.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
timeout "${CHECKS_TIMEOUT:-170}" python3 benchmarks/gpu_checks.py > "$OUT/checks.jsonl" 2> "$OUT/checks.err"
echo "gpu_checks exit $?"; cat "$OUT/checks.jsonl"; tail -5 "$OUT/checks.err"
CELLS=${CELLS:-tinyllm-loop:torch_varlen:on,llama-trainer:sdpa:off,llama-trainer:sdpa:on,tinyllm-loop:sdpa:on,nanogpt-raw:nanogpt-sdpa:on,tinyllm-trainer:sdpa:on,tinyllm-loop:sdpa:off,tinyllm-loop:flex_attention:on}
timeout "${BENCH_TIMEOUT:-330}" python3 benchmarks/bench_gpu_train.py --tinyllm_overrides '{"vocab_size": 50304}' \
    --cells "$CELLS" --output_json "$OUT/gpu.json" > "$OUT/bench.log" 2>&1
echo "bench exit $?"; grep -v -i "warn" "$OUT/bench.log" | tail -40
