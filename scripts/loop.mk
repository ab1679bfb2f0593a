# The experiment driver: N RL steps of rollout -> verify -> embed -> update, one directory per
# step, every file a make target built from the previous step's files. `make` after a crash or a
# kill continues from the first missing file; deleting a file recomputes only what depends on it.
#
#   make -f scripts/loop.mk RUN=runs/x POLICY=models/p PROMPTS=data/train.parquet STEPS=20 all
#
# Layout: $(RUN)/step-000003/{trajectories,rewards,embeddings}.parquet, head.safetensors(.json),
# policy/ (model, optimizer, advantages.parquet, metrics.json), eval/<set>.json (clipo-verify
# summaries of greedy rollouts), and the stages' JSON lines (rollout.json, verify.json,
# embed.json, update.json); each stage's messages are in its .log beside them (verify.log holds
# clipo-verify's table: accuracy, scores and reasons per data source), shown when it fails.
# $(RUN)/metrics.jsonl collects one line per step (`clipo-report RUN --collect`).
#
# Output: one line per step (`clipo-report RUN --line --step N`: reward, accuracy, boxed
# fraction, length, tokens/s, seconds, a no-op update, evaluations); an evaluation shows the
# rollout's progress bar (on a terminal) and its one line; `all` ends with a short summary and
# writes the per-step table to $(RUN)/table.txt. VERBOSE=1 echoes every command.
#
# Your own reward: VERIFY_ARGS goes to every clipo-verify (training steps and evaluation), e.g.
#   make -f scripts/loop.mk ... VERIFY_ARGS="--scorer 'python3 scripts/verl_scorer.py my_reward.py'"

# A recipe (recipes/track1-gsm8k.mk, recipes/track2-math.mk) sets the paper's values of the
# variables below; the command line still wins.
RECIPE ?=
ifneq ($(RECIPE),)
include $(RECIPE)
endif

BIN ?= target/release
RUN ?= runs/default
# The policy of step 0 and the frozen KL reference.
POLICY ?= $(RUN)/init
REF ?= $(POLICY)
PROMPTS ?= $(RUN)/data/train.parquet
STEPS ?= 10
# clipo (GRPO + contrastive reward) or grpo (plain RLVR).
ALGO ?= clipo
SEED ?= 0
# Rollout: prompts per step x responses per prompt.
PER_STEP ?= 16
N ?= 8
MAX_NEW ?= 64
TEMPERATURE ?= 1.0
ROLLOUT_ARGS ?=
# Training rollouts through inference servers (clipo-rollout --engine): ENGINE = their base
# URLs (http://HOST:PORT, space-separated); ENGINE_ARGS e.g. --engine-reload (SGLang loads each
# step's policy directory before its rollout) or --concurrency 256. Evaluations stay built-in
# unless EVAL_ARGS names an engine.
ENGINE ?=
ENGINE_ARGS ?=
engine_flags := $(foreach u,$(ENGINE),--engine $(u)) $(if $(ENGINE),$(ENGINE_ARGS))
# clipo-verify's flags: --scorer, --scorer-for, --scorer-workers, --scorer-timeout (schemas/scorer.md).
# Exported, so that scripts/dynamic_sampling.sh reads it with its quotes intact.
VERIFY_ARGS ?=
export VERIFY_ARGS
EMBED_ARGS ?=
UPDATE_ARGS ?=
# Evaluation: greedy rollouts of each set every EVAL_EVERY steps (and at step 0).
EVAL_DIR ?= $(RUN)/data
EVAL_SETS ?= test
EVAL_EVERY ?= 5
EVAL_ARGS ?=
# DAPO dynamic sampling with refill (verl's filter_groups): 1 keeps only groups whose verifier
# metric DS_METRIC (correct or score) varies and samples up to MAX_ROUNDS rounds of further
# prompts until PER_STEP such groups are kept (scripts/dynamic_sampling.sh, clipo-filter).
DYNAMIC_SAMPLING ?= 0
MAX_ROUNDS ?= 3
DS_METRIC ?= correct
# Optimizer states to keep: `last` (the newest step's only: 8 bytes a parameter, 25 GB a step
# at 3B) or `all`.
KEEP_OPTIMIZER ?= last
# 1: echo each command as make runs it.
VERBOSE ?= 0
Q := $(if $(filter 1,$(VERBOSE)),,@)

# Settings take effect or are refused: the settings that make a run what it is are recorded in
# $(RUN)/settings.txt by its first invocation; a later one with any of them changed stops before
# anything runs, naming each, instead of reporting the old run as if it were the new one. A new
# experiment takes a new RUN=runs/NAME. STEPS may grow (a run is extended), and EVAL_*,
# ENGINE and BIN may change (where and how often, not what, is computed).
define nl


endef
# A recipe's flags are recorded expanded (RECIPE_*_ARGS), so that an edited recipe file is a
# changed setting too; a run recorded before they were (no RECIPE_ROLLOUT_ARGS line) is taken as
# made with the recipe as it is now.
settings_keys := RECIPE ALGO SEED POLICY REF PROMPTS PER_STEP N MAX_NEW TEMPERATURE ROLLOUT_ARGS VERIFY_ARGS EMBED_ARGS UPDATE_ARGS DYNAMIC_SAMPLING MAX_ROUNDS DS_METRIC \
  RECIPE_ROLLOUT_ARGS RECIPE_EMBED_ARGS RECIPE_UPDATE_ARGS
settings_text := $(foreach k,$(settings_keys),$(k)=$(strip $($(k))) $(nl))
ifneq ($(RUN),)
$(shell mkdir -p $(RUN))
$(file > $(RUN)/.settings.now,$(settings_text))
settings_changed := $(shell if [ -f $(RUN)/settings.txt ]; then \
    grep -q '^ *RECIPE_ROLLOUT_ARGS=' $(RUN)/settings.txt || grep -E '^ *RECIPE_(ROLLOUT|EMBED|UPDATE)_ARGS=' $(RUN)/.settings.now >> $(RUN)/settings.txt; \
    diff $(RUN)/settings.txt $(RUN)/.settings.now | sed -n 's/^> *//p' | tr '\n' ';'; \
  else cp $(RUN)/.settings.now $(RUN)/settings.txt; fi)
ifneq ($(strip $(settings_changed)),)
$(error $(RUN) was made with other settings ($(RUN)/settings.txt); changed now: $(settings_changed) Start a new run with RUN=runs/NAME, or remove $(RUN) to redo this one)
endif
endif
# `make -f scripts/loop.mk settings`: the check alone (scripts/demo.sh runs it first).
.PHONY: settings
settings: ; @:

# A stage that finds its output up to date leaves the file as it is; the rules touch their
# target after each stage so that make sees it newer than what it was made from.

# Step numbers and their zero-padded names, computed once per invocation: make expands every
# step's rules each time, so per-step $(shell) calls would cost seconds at a few hundred steps.
numbers := $(shell seq 0 $(STEPS))
padded := $(shell seq 0 $(STEPS) | awk '{ printf "%d:%06d ", $$1, $$1 }')
pad = $(patsubst $(1):%,%,$(filter $(1):%,$(padded)))
step_dir = $(RUN)/step-$(call pad,$(1))
policy_dir = $(if $(filter 0,$(1)),$(POLICY),$(call step_dir,$(1))/policy)
# The file that stands for a policy in the rules: the starting policy's config.json (its weights
# may be model.safetensors or shards under model.safetensors.index.json), a step's
# clipo_state.json (clipo-update writes it last).
policy_file = $(if $(filter 0,$(1)),$(POLICY)/config.json,$(call step_dir,$(1))/policy/clipo_state.json)
# A stage's JSON line (stages print it again when they find their output up to date), written
# whole or not at all.
to_json = > $(1).tmp && mv $(1).tmp $(1)
prev = $(word $(1),$(numbers))
steps := $(wordlist 2,$(words $(numbers)),$(numbers))
eval_steps := 0 $(shell seq $(EVAL_EVERY) $(EVAL_EVERY) $(STEPS)) $(if $(filter 0,$(shell echo $$(( $(STEPS) % $(EVAL_EVERY) )))),,$(STEPS))

# One RL step: $(1) = step, $(2) = previous step. Each stage's rule makes its table and its JSON
# line together (grouped targets, `&:`): a kill between the two leaves the line missing, and the
# rerun reprints it from the up-to-date stage. The rules touch their targets after each stage,
# so that make sees a target an up-to-date stage left as it was newer than its inputs.
define STEP
ifeq ($(DYNAMIC_SAMPLING),1)
$(call step_dir,$(1))/trajectories.parquet $(call step_dir,$(1))/rollout.json $(call step_dir,$(1))/rewards.parquet $(call step_dir,$(1))/verify.json &: $(call policy_file,$(2)) $(PROMPTS)
	@mkdir -p $(call step_dir,$(1))
	$(Q)BIN=$(BIN) POLICY_DIR=$(call policy_dir,$(2)) PROMPTS=$(PROMPTS) STEP=$(1) STEP_DIR=$(call step_dir,$(1)) PER_STEP=$(PER_STEP) N=$(N) \
	  MAX_NEW=$(MAX_NEW) TEMPERATURE=$(TEMPERATURE) SEED=$(SEED) ROLLOUT_ARGS="$(RECIPE_ROLLOUT_ARGS) $(ROLLOUT_ARGS) $(engine_flags)" \
	  MAX_ROUNDS=$(MAX_ROUNDS) METRIC=$(DS_METRIC) scripts/dynamic_sampling.sh
	@touch $(foreach f,trajectories.parquet rollout.json rewards.parquet verify.json,$(call step_dir,$(1))/$(f))
else
$(call step_dir,$(1))/trajectories.parquet $(call step_dir,$(1))/rollout.json &: $(call policy_file,$(2)) $(PROMPTS)
	@mkdir -p $(call step_dir,$(1))
	$(Q)$(BIN)/clipo-rollout --policy $(call policy_dir,$(2)) --prompts $(PROMPTS) --per-step $(PER_STEP) --step $(1) --n $(N) \
	  --max-new-tokens $(MAX_NEW) --temperature $(TEMPERATURE) --seed $(SEED) --hidden official $(RECIPE_ROLLOUT_ARGS) $(ROLLOUT_ARGS) $(engine_flags) \
	  --out $(call step_dir,$(1))/trajectories.parquet 2> $(call step_dir,$(1))/rollout.log $(call to_json,$(call step_dir,$(1))/rollout.json) \
	  || { cat $(call step_dir,$(1))/rollout.log >&2; exit 2; }
	@touch $(call step_dir,$(1))/trajectories.parquet $(call step_dir,$(1))/rollout.json

$(call step_dir,$(1))/rewards.parquet $(call step_dir,$(1))/verify.json &: $(call step_dir,$(1))/trajectories.parquet
	$(Q)$(BIN)/clipo-verify --input $(call step_dir,$(1))/trajectories.parquet --output $(call step_dir,$(1))/rewards.parquet --summary $(VERIFY_ARGS) \
	  2> $(call step_dir,$(1))/verify.log $(call to_json,$(call step_dir,$(1))/verify.json) || { cat $(call step_dir,$(1))/verify.log >&2; exit 2; }
	@touch $(call step_dir,$(1))/rewards.parquet $(call step_dir,$(1))/verify.json

endif

$(call step_dir,$(1))/embeddings.parquet $(call step_dir,$(1))/embed.json &: $(call step_dir,$(1))/trajectories.parquet $(call step_dir,$(1))/rewards.parquet $(if $(filter 1,$(1)),,$(call step_dir,$(2))/embeddings.parquet)
	$(Q)$(BIN)/clipo-embed --trajectories $(call step_dir,$(1))/trajectories.parquet --rewards $(call step_dir,$(1))/rewards.parquet --step $(1) --seed $(SEED) \
	  $(if $(filter 1,$(1)),--init-head,--head $(call step_dir,$(2))/head.safetensors) --head-out $(call step_dir,$(1))/head.safetensors \
	  $(RECIPE_EMBED_ARGS) $(EMBED_ARGS) --out $(call step_dir,$(1))/embeddings.parquet 2> $(call step_dir,$(1))/embed.log $(call to_json,$(call step_dir,$(1))/embed.json) \
	  || { cat $(call step_dir,$(1))/embed.log >&2; exit 2; }
	@touch $(call step_dir,$(1))/embeddings.parquet $(call step_dir,$(1))/embed.json

# KEEP_OPTIMIZER=last: the previous step's optimizer state goes once this step's update is
# complete and before its line is written, so a kill anywhere leaves at most one extra state
# and the rerun (up to date) removes it.
$(call step_dir,$(1))/policy/clipo_state.json $(call step_dir,$(1))/update.json &: $(call policy_file,$(2)) $(call step_dir,$(1))/trajectories.parquet $(call step_dir,$(1))/rewards.parquet $(if $(filter clipo,$(ALGO)),$(call step_dir,$(1))/embeddings.parquet)
	$(Q)$(BIN)/clipo-update --policy $(call policy_dir,$(2)) --ref $(REF) --trajectories $(call step_dir,$(1))/trajectories.parquet \
	  --rewards $(call step_dir,$(1))/rewards.parquet $(if $(filter clipo,$(ALGO)),--embeddings $(call step_dir,$(1))/embeddings.parquet) \
	  --step $(1) --total-steps $(STEPS) $(RECIPE_UPDATE_ARGS) $(UPDATE_ARGS) --out $(call step_dir,$(1))/policy > $(call step_dir,$(1))/update.json.tmp \
	  2> $(call step_dir,$(1))/update.log || { cat $(call step_dir,$(1))/update.log >&2; exit 2; }
	$(Q)$(if $(and $(filter last,$(KEEP_OPTIMIZER)),$(filter-out 0,$(2))),rm -f $(call policy_dir,$(2))/optimizer.safetensors)
	@mv $(call step_dir,$(1))/update.json.tmp $(call step_dir,$(1))/update.json
	@touch $(call step_dir,$(1))/policy/clipo_state.json $(call step_dir,$(1))/update.json

# Every file of the step is a target of its own (none is intermediate): delete one and `make`
# remakes it and everything after it.
step-$(1): $(foreach f,trajectories.parquet rollout.json rewards.parquet verify.json policy/clipo_state.json update.json,$(call step_dir,$(1))/$(f)) \
  $(if $(filter clipo,$(ALGO)),$(call step_dir,$(1))/embeddings.parquet $(call step_dir,$(1))/embed.json) \
  $(if $(filter $(1),$(eval_steps)),$(foreach e,$(EVAL_SETS),$(call step_dir,$(1))/eval/$(e).json))
	@$(BIN)/clipo-report $(RUN) --line --step $(1)
.PHONY: step-$(1)
endef

# Evaluation of the policy after step $(1) on set $(2).
define EVAL
$(call step_dir,$(1))/eval/$(2).json: $(call policy_file,$(1)) $(EVAL_DIR)/$(2).parquet
	@mkdir -p $$(@D)
	$(Q)$(BIN)/clipo-rollout --policy $(call policy_dir,$(1)) --prompts $(EVAL_DIR)/$(2).parquet --greedy --hidden none \
	  --max-new-tokens $(MAX_NEW) --batch-size 64 $(RECIPE_EVAL_ARGS) $(EVAL_ARGS) --out $$(@D)/$(2).trajectories.parquet > /dev/null
	$(Q)$(BIN)/clipo-verify --input $$(@D)/$(2).trajectories.parquet --output $$(@D)/$(2).rewards.parquet --summary $(VERIFY_ARGS) \
	  > $$@.tmp 2> $$(@D)/$(2).verify.log || { cat $$(@D)/$(2).verify.log >&2; exit 2; }
	@mv $$@.tmp $$@
endef

$(foreach s,$(steps),$(eval $(call STEP,$(s),$(call prev,$(s)))))
$(foreach s,$(eval_steps),$(foreach e,$(EVAL_SETS),$(eval $(call EVAL,$(s),$(e)))))

step-0: $(foreach e,$(EVAL_SETS),$(call step_dir,0)/eval/$(e).json)
	@$(if $(EVAL_SETS),$(BIN)/clipo-report $(RUN) --line --step 0)
.PHONY: step-0 all collect

all: step-0 $(foreach s,$(steps),step-$(s)) collect

# The closing summary (clipo-report's, on stderr) and where the rest went.
collect:
ifeq ($(steps),)
	@echo "no RL step (STEPS=0): the starting policy's evaluations are in $(RUN)/step-000000/eval/" >&2
else
	$(Q)$(BIN)/clipo-report $(RUN) --collect --algo $(ALGO) > $(RUN)/table.txt
	@echo "per-step table $(RUN)/table.txt, metrics $(RUN)/metrics.jsonl, summary $(RUN)/summary.json, report $(RUN)/report.html" >&2
endif

# No `.SECONDARY:`: it would make every file intermediate, and make would leave a deleted
# intermediate file missing. Every file here is an explicit target and is never deleted by make.
