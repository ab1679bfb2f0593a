#!/usr/bin/env bash
# A real model trained on GSM8K on this CPU: SmolLM2-135M-Instruct, GRPO + CLIPO, on the paper's
# GSM8K training set (../shared/data/clipo/train/gsm8k.parquet), 30 steps, evaluated greedily on
# the first 200 prompts of GSM8K test, GSM-P1 and GSM-P2 at steps 0 and 30: accuracy and the
# fraction of answers in a \boxed{} (recipes/smollm2-gsm8k.mk holds every setting and why).
# Fetches and imports the model when models/smollm2-135m-instruct is missing
# (scripts/fetch_smollm2.sh). One line per step and a closing summary; rerun after a kill and it
# continues.
#   scripts/smollm2_gsm8k.sh                     # or: make smollm2-gsm8k
#   DATA=/path/to/clipo-data scripts/smollm2_gsm8k.sh
#   RUN=runs/smollm2-gsm8k-lr2e-5 scripts/smollm2_gsm8k.sh UPDATE_ARGS="--lr 2e-5"   # loop.mk variables
# Measured: README "SmolLM2 on GSM8K" (about an hour here).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
RUN=${RUN:-runs/smollm2-gsm8k}
SEED=${SEED:-0}
DATA=${DATA:-../shared/data/clipo}
MODEL=models/smollm2-135m-instruct

for f in train/gsm8k test/gsm8k test/gsm_p1 test/gsm_p2; do
  if [ ! -f "$DATA/$f.parquet" ]; then
    echo "smollm2-gsm8k: $DATA/$f.parquet does not exist: DATA= names the directory that holds the paper's train/ and test/ sets (verl parquet)" >&2
    exit 2
  fi
done
if [ ! -f "$MODEL/config.json" ]; then
  scripts/fetch_smollm2.sh
fi
echo "smollm2-gsm8k: $MODEL, recipes/smollm2-gsm8k.mk, data $DATA, into $RUN"
start=$(date +%s)
make --no-print-directory -s -f scripts/loop.mk RECIPE=recipes/smollm2-gsm8k.mk BIN="$BIN" RUN="$RUN" SEED="$SEED" DATA="$DATA" "$@" all
secs=$(( $(date +%s) - start ))
echo "smollm2-gsm8k: $((secs / 60)) min $((secs % 60)) s"
