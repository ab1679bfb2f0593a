#!/usr/bin/env bash
# The paper's Track II (Qwen2.5-7B-Instruct, MATH, 580 steps): recipes/track2-math.mk through
# scripts/train_gpu.sh (see there for what it needs). 7B fits one 80 GB card with gradient
# checkpointing and its f32 masters, moments and gradient sums in host memory (clipo-update
# --plan at 1024 + 4096 tokens: 60.5 GB on the device, 121.8 GB on the host: a host with 128 GB
# is just enough; bench/plan_table.sh).
MEMORY_ARGS=${MEMORY_ARGS:-"--grad-checkpoint --max-tokens-per-micro-batch 5120 --offload-optimizer"} \
  exec "$(dirname "$0")/train_gpu.sh" recipes/track2-math.mk
