#!/usr/bin/env bash
# The embedded default, end to end on a CPU: build a tiny policy and its task, warm it up on
# reference solutions, then run the RL loop (rollout -> verify -> embed -> update) with
# GRPO + CLIPO (ALGO=clipo, default), plain GRPO (ALGO=grpo) or CLIPO with a fixed, untrained
# head (ALGO=clipo-fixed, the paper's ablation: clipo-embed --fixed-head) on the same seeds,
# evaluating the held-out and perturbed splits every EVAL_EVERY steps. Prints one line per step
# and a short summary; writes runs/demo[-ALGO]/{metrics.jsonl,summary.json,report.html,table.txt}. Every stage is a make target
# (scripts/loop.mk): run it again after a kill and it continues where it stopped.
#
# The warm start (BASE: task, tiny policy, SFT) is made once from BASE_SEED (default SEED) and
# shared by every run that names it; BASE/settings.txt records what it was made with, and a
# run with other warm-start settings stops before anything runs, naming BASE (as scripts/loop.mk
# does for RUN). SETTINGS_ONLY=1 runs these checks and stops (scripts/compare.sh checks every
# run first); BASE_ONLY=1 also makes the warm start, then stops (compare.sh makes it once before
# runs that may start together).
set -euo pipefail
cd "$(dirname "$0")/.."

ALGO=${ALGO:-clipo}
case "$ALGO" in
  clipo | grpo) LOOP_ALGO=$ALGO; HEAD_ARGS="" ;;
  clipo-fixed) LOOP_ALGO=clipo; HEAD_ARGS="--fixed-head" ;;
  *) echo "demo: ALGO=$ALGO: expected clipo, grpo or clipo-fixed" >&2; exit 2 ;;
esac
BIN=${BIN:-target/release}
BASE=${BASE:-runs/base}
RUN=${RUN:-runs/demo$([ "$ALGO" = clipo ] || echo "-$ALGO")}
SEED=${SEED:-0}
BASE_SEED=${BASE_SEED:-$SEED}
# Task and warm start.
TRAIN=${TRAIN:-20000}
TEST=${TEST:-400}
SFT_STEPS=${SFT_STEPS:-260}
SFT_LR=${SFT_LR:-2e-3}
# RL loop.
STEPS=${STEPS:-300}
PER_STEP=${PER_STEP:-16}
N=${N:-8}
MAX_NEW=${MAX_NEW:-40}
LR=${LR:-1e-4}
TEMPERATURE=${TEMPERATURE:-1.0}
EVAL_EVERY=${EVAL_EVERY:-50}
EVAL_SETS=${EVAL_SETS:-test test_p1 test_p2}

# The warm start's settings: recorded by the first run that uses BASE (a BASE made before they
# were recorded is taken as made with these), refused when they differ.
mkdir -p "$BASE"
base_settings="BASE_SEED=$BASE_SEED TRAIN=$TRAIN TEST=$TEST SFT_STEPS=$SFT_STEPS SFT_LR=$SFT_LR"
if [ ! -f "$BASE/settings.txt" ]; then
  echo "$base_settings" > "$BASE/settings.txt"
elif [ "$(cat "$BASE/settings.txt")" != "$base_settings" ]; then
  echo "demo: $BASE was made with other settings ($BASE/settings.txt: $(cat "$BASE/settings.txt")); now: $base_settings." \
    "Make a new warm start with BASE=runs/NAME, or remove $BASE to redo this one" >&2
  exit 2
fi

loop() {
  make --no-print-directory -s -f scripts/loop.mk BIN="$BIN" RUN="$RUN" POLICY="$BASE/warm" PROMPTS="$BASE/data/train.parquet" \
    EVAL_DIR="$BASE/data" EVAL_SETS="$EVAL_SETS" EVAL_EVERY="$EVAL_EVERY" STEPS="$STEPS" TEMPERATURE="$TEMPERATURE" ALGO="$LOOP_ALGO" SEED="$SEED" \
    PER_STEP="$PER_STEP" N="$N" MAX_NEW="$MAX_NEW" EMBED_ARGS="--dim 64 $HEAD_ARGS" \
    ROLLOUT_ARGS="--batch-size $PER_STEP" EVAL_ARGS="" \
    UPDATE_ARGS="--lr $LR --kl off --micro-batch 128 --old-logprobs rollout" "$@"
}

# Settings that differ from the run's recorded ones stop here, naming each (scripts/loop.mk):
# a finished demo is never re-reported as a run with new settings.
mkdir -p "$RUN"
loop settings
if [ "${SETTINGS_ONLY:-0}" = 1 ]; then exit 0; fi

if [ ! -f "$BASE/data/test_p2.parquet" ]; then
  "$BIN/clipo-data" arith --out "$BASE/data" --train "$TRAIN" --test "$TEST" --seed "$BASE_SEED"
fi
if [ ! -f "$BASE/tiny/model.safetensors" ]; then
  "$BIN/clipo-model" init --preset tiny --seed "$BASE_SEED" "$BASE/tiny"
fi
if [ ! -f "$BASE/warm/clipo_state.json" ]; then
  echo "demo: supervised warm start, $SFT_STEPS steps x 64 reference solutions"
  "$BIN/clipo-update" --objective sft --policy "$BASE/tiny" --prompts "$BASE/data/train.parquet" \
    --steps "$SFT_STEPS" --batch-size 64 --micro-batch 64 --lr "$SFT_LR" --seed "$BASE_SEED" --out "$BASE/warm"
fi
if [ "${BASE_ONLY:-0}" = 1 ]; then exit 0; fi

echo "demo: $ALGO, $STEPS steps of $PER_STEP prompts x $N samples, evaluation every $EVAL_EVERY steps ($RUN)"
for step in $(seq 0 "$STEPS"); do
  dir=$(printf '%s/step-%06d' "$RUN" "$step")
  if [ -f "$dir/wall.json" ]; then continue; fi
  start=$(date +%s.%N)
  loop "step-$step" > /dev/null
  end=$(date +%s.%N)
  mkdir -p "$dir"
  awk -v a="$start" -v b="$end" 'BEGIN { printf "{\"seconds\": %.3f}\n", b - a }' > "$dir/wall.json"
  "$BIN/clipo-report" "$RUN" --collect --algo "$ALGO" --line
done
# The closing summary (accuracy at the first and last evaluation, the training reward early and
# late); the per-step table goes to $RUN/table.txt, the rest to the files it names.
loop collect
