#!/usr/bin/env bash
# Side-by-side CPU benchmark on SmolLM2-135M-Instruct (f32): PyTorch + transformers
# (../shared/bench/torch/torch_baseline.py) and clipo (cargo bench --bench model_bench), one after
# the other in this invocation, on the same inputs; then bench/README.md's results section.
#
#   bench/run_side_by_side.sh            # RUNS=3 WARMUP=1 by default
#   RUNS=2 PHASES=gen,logprob,train bench/run_side_by_side.sh
#   SCALE=1 bench/run_side_by_side.sh    # adds the batch / sequence-length scaling table (both)
#
# Environment: TORCH_VENV (a virtualenv with torch, transformers, pyarrow; default
# /work/venv-torch), WAIT_IDLE (seconds the torch script waits for an idle machine; default 60),
# RETRIES (repeats of a disturbed torch run; default 1), TORCH_ARGS (more torch_baseline.py
# options), SCALE_GRID (the scaling sizes, batch:sequence pairs; default 1:256 2:256 4:256 8:256
# 8:512 8:1024). Raw results go to bench/results/.
set -euo pipefail
source "$(dirname "$0")/env.sh"   # VENV MODEL DATA OUT, checked
RUNS=${RUNS:-3}
WARMUP=${WARMUP:-1}
PHASES=${PHASES:-gen,logprob,train}

cargo build --release --bench model_bench >&2

echo "== PyTorch ($(date -u +%H:%M:%S)), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$VENV/bin/python" ../shared/bench/torch/torch_baseline.py --model-dir "$MODEL" --data "$DATA" \
    --threads 2 --runs "$RUNS" --warmup "$WARMUP" --phases "$PHASES" \
    --wait-idle "${WAIT_IDLE:-60}" --retries "${RETRIES:-1}" ${TORCH_ARGS:-} >"$OUT/torch.json" 2>"$OUT/torch.log"

# The scaling grid (batch:sequence pairs), run by both: one torch process per size, one timed run
# after WARMUP warm-ups, each result one JSON line of torch_scale.jsonl; model_bench gets the same
# grid. Sequence 128 does not fit: the GSM8K chat prompts pad to 158 tokens.
GRID=${SCALE_GRID:-1:256 2:256 4:256 8:256 8:512 8:1024}
if [ -n "${SCALE:-}" ]; then
  : >"$OUT/torch_scale.jsonl"
  for bt in $GRID; do
    echo "== PyTorch scale batch ${bt%:*} seq ${bt#*:} ($(date -u +%H:%M:%S))" >&2
    "$VENV/bin/python" ../shared/bench/torch/torch_baseline.py --model-dir "$MODEL" --data "$DATA" \
        --threads 2 --runs 1 --warmup "$WARMUP" --phases logprob,train --batch "${bt%:*}" --seq-len "${bt#*:}" \
        --wait-idle "${WAIT_IDLE:-60}" --retries "${RETRIES:-1}" 2>>"$OUT/torch.log" | grep '^{' | tail -n 1 >>"$OUT/torch_scale.jsonl"
  done
fi

echo "== clipo ($(date -u +%H:%M:%S)), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
CLIPO_PHASES="$PHASES,floor"
[ -n "${SCALE:-}" ] && CLIPO_PHASES="$CLIPO_PHASES,scale"
MODEL_BENCH_RUNS=$RUNS MODEL_BENCH_WARMUP=$WARMUP MODEL_BENCH_PHASES=$CLIPO_PHASES MODEL_BENCH_SCALE_GRID="$GRID" \
    cargo bench --bench model_bench >"$OUT/clipo.json" 2>"$OUT/clipo.log"

echo "== table ($(date -u +%H:%M:%S))" >&2
python3 bench/side_by_side_table.py "$OUT/torch.json" "$OUT/clipo.json" bench/README.md ${SCALE:+"$OUT/torch_scale.jsonl"}
