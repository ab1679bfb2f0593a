# Track I of the paper (REFERENCE.md §7 line 117): Qwen2.5-3B-Instruct on GSM8K, as a set of
# scripts/loop.mk variables. Read by `make -f scripts/loop.mk RECIPE=recipes/track1-gsm8k.mk`
# and by scripts/track1_gpu.sh; anything given on the command line wins, and a flag repeated in
# ROLLOUT_ARGS / EMBED_ARGS / UPDATE_ARGS / EVAL_ARGS overrides the recipe's (the stages take
# the last value of a repeated flag). Each value cites the REFERENCE.md line it comes from.

DATA ?= ../shared/data/clipo
# GSM8K train, 7,473 prompts (line 117).
PROMPTS = $(DATA)/train/gsm8k.parquet
# 512 prompts x 16 responses a step (lines 12, 110).
PER_STEP = 512
N = 16
# 6 epochs (line 118) of floor(7473 / 512) = 14 steps (verl's drop_last) = 84 steps.
STEPS = 84
# 2048 response tokens, temperature 1.0, top_p 1.0, top_k off (lines 12-13, 117).
MAX_NEW = 2048
TEMPERATURE = 1.0
# 512 prompt tokens (line 117).
RECIPE_ROLLOUT_ARGS = --max-prompt-tokens 512 --top-p 1.0 --top-k 0
# Linear head, D = 512 (line 34), InfoNCE, tau 0.05 (line 46), lambda 0.2, c 0, floor -0.5 (line 69).
RECIPE_EMBED_ARGS = --head-type linear --dim 512 --loss infonce --temperature 0.05 --lambda 0.2 --constant 0 --floor -0.5
# GRPO with std (line 100); PPO clip 0.2/0.2, dual clip 3 (lines 103-104); low_var_kl 0.001 in
# the loss (lines 105-106); token-mean (line 107); entropy 0, AdamW lr 1e-6, wd 0.01, constant
# lr, grad clip 1.0, 2 optimiser steps a step (lines 109-111); actor warm-up W = 14 (line 73).
RECIPE_UPDATE_ARGS = --adv grpo --loss ppo --clip-low 0.2 --clip-high 0.2 --dual-clip 3 --kl low_var_kl --kl-coef 0.001 \
  --agg token-mean --entropy-coef 0 --lr 1e-6 --weight-decay 0.01 --lr-style constant --max-grad-norm 1.0 \
  --mini-batches 2 --actor-warmup 14
# Greedy pass@1 on eight sets (lines 118-119), every epoch.
EVAL_DIR = $(DATA)/test
EVAL_SETS = gsm8k gsm_symbolic gsm_p1 gsm_p2 theoremqa mmlu2k truthfulqa commonsense_qa
EVAL_EVERY = 14
RECIPE_EVAL_ARGS = --max-prompt-tokens 1024
