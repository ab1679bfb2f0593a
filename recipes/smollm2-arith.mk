# A real model that learns on a CPU: SmolLM2-135M-Instruct, GRPO + CLIPO on the embedded task at
# its easiest, as a set of scripts/loop.mk variables. Run by `make smollm2-learn`
# (scripts/smollm2_learn.sh: it fetches the model and makes the task first); anything on the
# command line wins, as with the paper's recipes. Measured run: README "A real model on this CPU".
#
# Measured on 2026-12-06 (this project's 2-core VM, partly shared): 20 min 48 s for
# `make smollm2-learn` with the model imported; held-out greedy accuracy 11.5% -> 57.0% -> 79.5%
# at steps 0, 6, 12, boxed answers 65% -> 100%; 7.1 GB of disk, 8.1 GB peak memory.
#
# What departs from the paper's Track I (REFERENCE.md §7, recipes/track1-gsm8k.mk), and why:
# - the task: one addition or subtraction, no distractor (clipo-data arith --steps 1
#   --distractor-prob 0), where a 135M model answers some problems right at step 0; it answers
#   almost no GSM8K problem;
# - a system prompt with one worked example, so that most answers are boxed from the start;
# - the reward: conrl-format, the paper's verifier plus 0.1 for a wrong answer in a non-empty
#   \boxed{} (schemas/scorer.md), so that groups with no right answer still teach the format;
# - sampling at temperature 0.5 (at 1.0 SmolLM2-135M writes nonsense: 0 of 64 right) and a stop
#   at "}.", the end of "The answer is \boxed{N}." (else it repeats that sentence to the limit);
# - a large learning rate (2e-5 instead of 1e-6), KL off, the sampler's log-probs as the old
#   ones: few, cheap steps;
# - 8 prompts x 8 responses a step, 64 new tokens, a head of D = 64.

POLICY = models/smollm2-135m-instruct
PROMPTS = $(RUN)/data/train.parquet
STEPS = 12
PER_STEP = 8
N = 8
MAX_NEW = 64
TEMPERATURE = 0.5
SYSTEM_PROMPT = Solve the problem in one short sentence and end with the answer in the form \boxed{N}. Example: Tom has 3 apples. He buys 2 more apples. How many apples does Tom have now? Answer: 3 + 2 = 5. The answer is \boxed{5}.
RECIPE_ROLLOUT_ARGS = --system-prompt '$(SYSTEM_PROMPT)' --stop '}.' --batch-size 8
RECIPE_EMBED_ARGS = --dim 64
RECIPE_UPDATE_ARGS = --lr 2e-5 --kl off --micro-batch 16 --old-logprobs rollout
VERIFY_ARGS = --scorer conrl-format
# Greedy evaluation of the 200 held-out problems (the task's test split) at steps 0, 6 and 12.
EVAL_DIR = $(RUN)/data
EVAL_SETS = test
EVAL_EVERY = 6
RECIPE_EVAL_ARGS = --system-prompt '$(SYSTEM_PROMPT)' --stop '}.'
