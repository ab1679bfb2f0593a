#!/usr/bin/env bash
# The paper's Track I recipe at full size (REFERENCE.md §7), for one machine with an NVIDIA GPU
# and a clipo built with `cargo build --release --features cuda` (see ../shared/CUDA.md).
# NOT run in CI, and not yet run end to end by us: the figures below are the paper's settings,
# not measurements.
#
# Needs: Qwen2.5-3B-Instruct as a Hugging Face directory in $POLICY (config.json,
# model.safetensors[.index.json], tokenizer.json, tokenizer_config.json with the chat template);
# the verl-format GSM8K training set and the evaluation sets in $DATA (train/gsm8k.parquet,
# test/*.parquet: the files of ../shared/data/clipo/).
#
# Settings (REFERENCE.md §1-7): 512 prompts x 16 responses per step, temperature 1.0, 512 prompt
# tokens, 2048 response tokens, GRPO (std, eps 1e-6), PPO clip 0.2/0.2, dual clip 3, low_var_kl
# 0.001 in the loss, token-mean, AdamW lr 1e-6 wd 0.01, grad clip 1.0, 2 optimiser steps per RL
# step, 6 epochs of 7,473 prompts = 84 steps; CLIPO head linear D = 512, InfoNCE, tau 0.05,
# lambda 0.2, head lr 1e-3, actor warm-up 14 steps. Evaluation: greedy pass@1 on GSM8K,
# GSM-Symbolic, GSM-P1, GSM-P2, TheoremQA, MMLU (2k), TruthfulQA, CommonsenseQA.
set -euo pipefail
cd "$(dirname "$0")/.."
POLICY=${POLICY:?set POLICY to the Qwen2.5-3B-Instruct directory}
DATA=${DATA:-../shared/data/clipo}
RUN=${RUN:-runs/track1}
DEVICE=${DEVICE:-cuda:0}
STEPS=${STEPS:-84}

make -f scripts/loop.mk RUN="$RUN" POLICY="$POLICY" PROMPTS="$DATA/train/gsm8k.parquet" STEPS="$STEPS" ALGO="${ALGO:-clipo}" \
  PER_STEP=512 N=16 MAX_NEW=2048 TEMPERATURE=1.0 \
  ROLLOUT_ARGS="--max-prompt-tokens 512 --batch-size 32 --device $DEVICE" \
  EMBED_ARGS="--dim 512 --loss infonce --temperature 0.05 --lambda 0.2 --lr 1e-3" \
  UPDATE_ARGS="--lr 1e-6 --kl low_var_kl --kl-coef 0.001 --mini-batches 2 --micro-batch 4 --actor-warmup 14 --save-dtype bf16 --device $DEVICE" \
  EVAL_DIR="$DATA/test" EVAL_SETS="gsm8k gsm_symbolic gsm_p1 gsm_p2 theoremqa mmlu2k truthfulqa commonsense_qa" EVAL_EVERY=14 \
  EVAL_ARGS="--max-prompt-tokens 1024 --batch-size 64 --device $DEVICE" \
  all
