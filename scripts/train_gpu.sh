#!/usr/bin/env bash
# A paper track at full size on one machine with an NVIDIA GPU: the recipe's settings
# (recipes/track1-gsm8k.mk or recipes/track2-math.mk, every value with its REFERENCE.md line)
# through scripts/loop.mk, with the CUDA binaries of scripts/build_cuda.sh. NOT run in CI and not
# yet run end to end by us (no GPU has been lent to the project for it).
#
#   POLICY=/models/Qwen2.5-3B-Instruct scripts/train_gpu.sh recipes/track1-gsm8k.mk
#
# Needs: the policy as a Hugging Face directory (config.json, model.safetensors or shards with
# model.safetensors.index.json, tokenizer.json, the chat template); the verl parquet files of
# ../shared/data/clipo in $DATA; target-cuda/release/clipo-* (scripts/build_cuda.sh) and the CUDA
# 13 libraries on LD_LIBRARY_PATH. Environment: RUN, DATA, DEVICE (cuda:0), STEPS (the recipe's),
# MICRO_BATCH (4 sequences a forward/backward pass), DTYPE (bf16 compute; the f32 masters are
# always kept and saved), EXTRA_UPDATE_ARGS (e.g. --offload-optimizer once it exists).
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE=${1:?usage: scripts/train_gpu.sh recipes/track1-gsm8k.mk|recipes/track2-math.mk}
[ -f "$RECIPE" ] || { echo "error: no recipe $RECIPE" >&2; exit 2; }
POLICY=${POLICY:?set POLICY to the model directory (Qwen2.5-3B-Instruct for Track I, 7B for Track II)}
BIN=${BIN:-target-cuda/release}
if [ ! -x "$BIN/clipo-update" ]; then
  echo "error: no CUDA binaries in $BIN: build them with scripts/build_cuda.sh (the CPU build in target/release refuses --device cuda)" >&2
  exit 2
fi
echo "train_gpu: $RECIPE with the binaries in $BIN on ${DEVICE:-cuda:0}"
DATA=${DATA:-../shared/data/clipo}
RUN=${RUN:-runs/$(basename "$RECIPE" .mk)}
DEVICE=${DEVICE:-cuda:0}
DTYPE=${DTYPE:-bf16}
MICRO_BATCH=${MICRO_BATCH:-4}
exec make -f scripts/loop.mk RECIPE="$RECIPE" BIN="$BIN" RUN="$RUN" POLICY="$POLICY" DATA="$DATA" ALGO="${ALGO:-clipo}" \
  ${STEPS:+STEPS=$STEPS} \
  ROLLOUT_ARGS="--batch-size 32 --device $DEVICE --dtype $DTYPE" \
  UPDATE_ARGS="--micro-batch $MICRO_BATCH --device $DEVICE --dtype $DTYPE --save-dtype f32 ${EXTRA_UPDATE_ARGS:-}" \
  EVAL_ARGS="--batch-size 64 --device $DEVICE --dtype $DTYPE" \
  all
