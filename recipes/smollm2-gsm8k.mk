# SmolLM2-135M-Instruct trained with the stages on the paper's GSM8K training set on a CPU, and
# evaluated greedily on the first 200 prompts of GSM8K test, GSM-P1 and GSM-P2 before and after
# (issue 23, item 3). Run by scripts/smollm2_gsm8k.sh (`make smollm2-gsm8k`): it fetches the
# model first; anything on the command line wins. Measured run: README "SmolLM2 on GSM8K".
#
# Chosen to fit about 90 minutes on this project's 2-core VM; it took about an hour (measured
# 2026-12-06: the first steps 110-126 s, later ones 60-75 s and 15-25 s when no-ops,
# two thirds of it the update over 32 sequences of about 450 tokens, the rest sampling them at
# about 175 tokens/s; an evaluation of the three sets 7-15 minutes, 200 x 3 greedy answers of
# up to 256 tokens at about 150 tokens/s). What departs from the paper's Track I (REFERENCE.md §7,
# recipes/track1-gsm8k.mk), and why:
# - a system prompt with one worked example ending in "The answer is \boxed{N}.", and a stop at
#   "}.": SmolLM2-135M answers no GSM8K problem in a \boxed{} without it (make eval: 0.00);
# - the reward: conrl-format, the paper's verifier plus 0.1 for a wrong answer in a non-empty
#   \boxed{} (schemas/scorer.md): at a few percent accuracy most groups have no right answer,
#   and without it they would teach nothing;
# - temperature 0.5 (SmolLM2-135M at 1.0 writes nonsense), 4 prompts x 8 responses a step,
#   256 new tokens (the paper: 512 x 16, 2048), KL off, lr 2e-5 as in recipes/smollm2-arith.mk
#   (the paper: 1e-6, for 7B models over 300 steps; 30 steps of a 135M model move nothing at
#   1e-6), a head of D = 64.

DATA = ../shared/data/clipo
POLICY = models/smollm2-135m-instruct
PROMPTS = $(DATA)/train/gsm8k.parquet
STEPS = 30
PER_STEP = 4
N = 8
MAX_NEW = 256
TEMPERATURE = 0.5
SYSTEM_PROMPT = Solve the problem step by step, one short sentence per step, and end with the answer in the form \boxed{N}. Example: Tom has 3 boxes of 4 apples. He eats 2 apples. How many apples are left? Answer: Tom has 3 * 4 = 12 apples. After eating 2 he has 12 - 2 = 10. The answer is \boxed{10}.
RECIPE_ROLLOUT_ARGS = --system-prompt '$(SYSTEM_PROMPT)' --stop '}.' --batch-size 4
RECIPE_EMBED_ARGS = --dim 64
RECIPE_UPDATE_ARGS = --lr 2e-5 --kl off --micro-batch 8 --old-logprobs rollout
VERIFY_ARGS = --scorer conrl-format
# Greedy evaluation of the first 200 prompts of each set at steps 0 and 30 (the curve between
# them is the training reward, accuracy and boxed fraction of every step).
EVAL_DIR = $(DATA)/test
EVAL_SETS = gsm8k gsm_p1 gsm_p2
EVAL_EVERY = 30
RECIPE_EVAL_ARGS = --system-prompt '$(SYSTEM_PROMPT)' --stop '}.' --limit 200
