#!/usr/bin/env bash
# A real model learns on this CPU: SmolLM2-135M-Instruct, GRPO + CLIPO, one-step arithmetic word
# problems (recipes/smollm2-arith.mk holds every setting and why). Fetches and imports the model
# when models/smollm2-135m-instruct is missing (scripts/fetch_smollm2.sh), makes the task in
# RUN/data, then runs scripts/loop.mk: one line per step, a greedy evaluation of the 200 held-out
# problems at steps 0, 6 and 12, and a closing summary. Rerun after a kill: it continues.
#   scripts/smollm2_learn.sh              # or: make smollm2-learn
#   RUN=runs/smollm2-lr1e-5 scripts/smollm2_learn.sh UPDATE_ARGS="--lr 1e-5"   # loop.mk variables
# Measured: README "A real model on this CPU".
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
RUN=${RUN:-runs/smollm2}
SEED=${SEED:-0}
MODEL=models/smollm2-135m-instruct

if [ ! -f "$MODEL/config.json" ]; then
  scripts/fetch_smollm2.sh
fi
if [ ! -f "$RUN/data/test.parquet" ]; then
  mkdir -p "$RUN"
  "$BIN/clipo-data" arith --out "$RUN/data" --steps 1 --distractor-prob 0 --train 5000 --test 200 --seed "$SEED" 2> "$RUN/data.log" \
    || { cat "$RUN/data.log" >&2; exit 2; }
fi
echo "smollm2-learn: $MODEL, recipes/smollm2-arith.mk, into $RUN"
start=$(date +%s)
make --no-print-directory -s -f scripts/loop.mk RECIPE=recipes/smollm2-arith.mk BIN="$BIN" RUN="$RUN" SEED="$SEED" "$@" all
secs=$(( $(date +%s) - start ))
echo "smollm2-learn: $((secs / 60)) min $((secs % 60)) s"
