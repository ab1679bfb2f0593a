#!/usr/bin/env bash
# A dress rehearsal of the paper's Track I schedule on this machine: recipes/track1-gsm8k.mk
# as it is (GSM8K train, 7,473 prompts, 512 a step, drop_last epochs of 14 steps, actor warm-up
# 14, 2 mini-batches, KL 0.001, the CLIPO head D = 512, evaluation every 14 steps on the eight
# sets) with only these reduced so it runs in about 15 minutes on 2 cores: the model (the tiny
# preset stands in for Qwen2.5-3B-Instruct), the samples per prompt (N=2, not 16), the response
# length (MAX_NEW=16, not 2048) and the evaluation (the first EVAL_LIMIT=64 prompts of each set).
# STEPS=16 crosses the first epoch boundary (steps 1-14 are epoch 0). Exits non-zero if any
# step fails or a prompt repeats within an epoch; its last lines are the per-epoch audit and the
# last step's metrics.
#
#   scripts/rehearse.sh            # RUN=runs/rehearsal
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/clipo}
[ -f "$DATA/train/gsm8k.parquet" ] || { echo "rehearse: $DATA/train/gsm8k.parquet is absent (the shared data sets)" >&2; exit 2; }
RUN=${RUN:-runs/rehearsal}
STEPS=${STEPS:-16}
BIN=${BIN:-target/release}
cargo build --release --quiet
mkdir -p "$RUN"
[ -f "$RUN/tiny/config.json" ] || "$BIN/clipo-model" init --preset tiny --seed 0 "$RUN/tiny"
start=$(date +%s)
make --no-print-directory -s -f scripts/loop.mk RECIPE=recipes/track1-gsm8k.mk DATA="$DATA" BIN="$BIN" RUN="$RUN" \
  POLICY="$RUN/tiny" STEPS="$STEPS" N="${N:-2}" MAX_NEW="${MAX_NEW:-16}" \
  ROLLOUT_ARGS="--batch-size 64" EVAL_ARGS="--limit ${EVAL_LIMIT:-64}" UPDATE_ARGS="--micro-batch 64" all
end=$(date +%s)
echo "rehearse: $STEPS steps of recipes/track1-gsm8k.mk in $((end - start)) s ($RUN)"
"$BIN/clipo-report" "$RUN" --epochs
echo "last step:"
tail -n 1 "$RUN/metrics.jsonl"
