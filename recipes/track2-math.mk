# Track II of the paper (REFERENCE.md §7 line 120): Qwen2.5-7B-Instruct on MATH, as a set of
# scripts/loop.mk variables (see recipes/track1-gsm8k.mk for how they are read). Each value cites
# the REFERENCE.md line it comes from.

DATA ?= ../shared/data/clipo
# MATH train, 7,500 prompts (line 120).
PROMPTS = $(DATA)/train/math75.parquet
# 128 prompts x 16 responses a step (lines 12, 111).
PER_STEP = 128
N = 16
# 10 epochs (line 120) of floor(7500 / 128) = 58 steps (verl's drop_last) = 580 steps.
STEPS = 580
# 4096 response tokens, temperature 1.0 in training (lines 12, 120).
MAX_NEW = 4096
TEMPERATURE = 1.0
RECIPE_ROLLOUT_ARGS = --max-prompt-tokens 1024 --top-p 1.0 --top-k 0
# Linear head, D = 2048 (line 35), InfoNCE, tau 0.05 (line 46), lambda 0.2, c 0, floor -0.5 (line 69).
RECIPE_EMBED_ARGS = --head-type linear --dim 2048 --loss infonce --temperature 0.05 --lambda 0.2 --constant 0 --floor -0.5
# As Track I but 1 optimiser step a step (line 111) and actor warm-up W = 58 (line 73).
RECIPE_UPDATE_ARGS = --adv grpo --loss ppo --clip-low 0.2 --clip-high 0.2 --dual-clip 3 --kl low_var_kl --kl-coef 0.001 \
  --agg token-mean --entropy-coef 0 --lr 1e-6 --weight-decay 0.01 --lr-style constant --max-grad-norm 1.0 \
  --mini-batches 1 --actor-warmup 58
# mean@16 at temperature 0.6, top_p 0.95 (line 121), every epoch; the loop's evaluation is
# greedy, so these sets are evaluated by scripts/eval.sh TRACK=math after the run.
EVAL_DIR = $(DATA)/test
EVAL_SETS = math
EVAL_EVERY = 58
RECIPE_EVAL_ARGS = --max-prompt-tokens 1024
