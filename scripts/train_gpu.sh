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
# DTYPE (bf16 compute; the f32 masters are always kept and saved), MEMORY_ARGS (default
# --grad-checkpoint and one recipe-length sequence, prompt + response, per micro-batch; add
# --offload-optimizer for 7B on one card), EXTRA_UPDATE_ARGS. Before anything runs, the memory
# plan of an update step (clipo-update --plan) is printed and, where nvidia-smi reports the
# card's memory, a plan that does not fit stops the run (exit 2) with what to change.
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
# The recipe's longest sequence: --max-prompt-tokens of its rollout + MAX_NEW.
MAX_NEW=$(sed -n 's/^MAX_NEW *= *//p' "$RECIPE")
PROMPT=$(sed -n 's/^RECIPE_ROLLOUT_ARGS.*--max-prompt-tokens \([0-9]*\).*/\1/p' "$RECIPE")
SEQ=$(( ${PROMPT:-512} + ${MAX_NEW:-2048} ))
MEMORY_ARGS=${MEMORY_ARGS:---grad-checkpoint --max-tokens-per-micro-batch $SEQ}
plan=$("$BIN/clipo-update" --plan --policy "$POLICY" --plan-device cuda --dtype "$DTYPE" --plan-seq-len "$SEQ" $MEMORY_ARGS ${EXTRA_UPDATE_ARGS:-})
echo "train_gpu: memory plan of an update step ($SEQ-token sequences, $MEMORY_ARGS): $plan"
if command -v nvidia-smi >/dev/null; then
  card_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits -i "${DEVICE#cuda:}" 2>/dev/null | head -1 || true)
  need=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["device_bytes"] // (1 << 20))' "$plan")
  if [ -n "$card_mib" ] && [ "$need" -gt "$card_mib" ]; then
    echo "error: the plan needs $need MiB on the device, the card has $card_mib MiB: add --offload-optimizer to MEMORY_ARGS, or lower --max-tokens-per-micro-batch" >&2
    exit 2
  fi
fi
exec make -f scripts/loop.mk RECIPE="$RECIPE" BIN="$BIN" RUN="$RUN" POLICY="$POLICY" DATA="$DATA" ALGO="${ALGO:-clipo}" \
  ${STEPS:+STEPS=$STEPS} \
  ROLLOUT_ARGS="--batch-size 32 --device $DEVICE --dtype $DTYPE" \
  UPDATE_ARGS="$MEMORY_ARGS --device $DEVICE --dtype $DTYPE --save-dtype f32 ${EXTRA_UPDATE_ARGS:-}" \
  EVAL_ARGS="--batch-size 64 --device $DEVICE --dtype $DTYPE" \
  all
