#!/usr/bin/env bash
# `make compare`: does CLIPO help on the embedded task? For each seed of SEEDS, GRPO, GRPO + CLIPO
# and CLIPO with a fixed, untrained head (the paper's "CLIPO-fixed" ablation) run the demo's
# loop (scripts/demo.sh, every knob of it: STEPS, EVAL_EVERY, PER_STEP, N, MAX_NEW, LR, ...) on
# one warm start (BASE, made once from BASE_SEED); the three runs of a seed share its prompt
# order, its sampling seeds and the head's initial weights (SEED is the loop's seed). Then
# `clipo-report COMPARE --compare` prints, per evaluation split, the accuracy and the step
# checker's lucky fraction: mean and standard deviation over seeds and the paired differences
# CLIPO - GRPO, CLIPO-fixed - GRPO and CLIPO - CLIPO-fixed with 95% bootstrap intervals, at the
# end and at every evaluation, into COMPARE/summary.json and COMPARE/report.md.
#
#   make compare                                  # 5 seeds x 3 algorithms x 300 steps
#   make compare SEEDS="0 1" STEPS=10 EVAL_EVERY=5 COMPARE=runs/compare-small
#   make compare JOBS=2                           # two runs at a time, one thread each
#
# Runs go to COMPARE/<algo>/seed-<n>/ (default runs/compare). A rerun reuses finished runs and
# finishes unfinished ones (STEPS may grow); every run's settings are checked before any runs,
# and one made with other settings stops the comparison, naming it: a new comparison takes a
# new COMPARE=runs/compare-NAME.
#
# Time: one demo-length run (300 steps, 7 evaluations) took 490-603 s of loop on this project's
# 2-core VMs (README "Measured"), so the default 15 runs take about 2.5 hours one at a time;
# with JOBS=2 they took 6,840 s (1 h 54 min) on 2026-12-06. Plus about 2 minutes for the warm
# start when BASE does not exist yet.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release}
COMPARE=${COMPARE:-runs/compare}
SEEDS=${SEEDS:-0 1 2 3 4}
ALGOS=${ALGOS:-grpo clipo clipo-fixed}
export BIN BASE=${BASE:-runs/base} BASE_SEED=${BASE_SEED:-0}

for algo in $ALGOS; do
  case "$algo" in
    grpo | clipo | clipo-fixed) ;;
    *) echo "compare: ALGOS: unknown algorithm '$algo' (grpo, clipo, clipo-fixed)" >&2; exit 2 ;;
  esac
done
JOBS=${JOBS:-1}
case "$JOBS" in
  '' | *[!0-9]* | 0*) echo "compare: JOBS: '$JOBS' is not a positive integer" >&2; exit 2 ;;
esac
for seed in $SEEDS; do
  case "$seed" in
    '' | *[!0-9]*) echo "compare: SEEDS: '$seed' is not a non-negative integer" >&2; exit 2 ;;
  esac
done

# Every run's settings first, so that a changed setting stops the comparison before hours of
# runs rather than in the middle.
for seed in $SEEDS; do
  for algo in $ALGOS; do
    if ! ALGO=$algo SEED=$seed RUN="$COMPARE/$algo/seed-$seed" SETTINGS_ONLY=1 scripts/demo.sh; then
      echo "compare: $COMPARE/$algo/seed-$seed cannot be reused with these settings: start a new comparison with COMPARE=runs/compare-NAME" >&2
      exit 2
    fi
  done
done

# The warm start once, before runs that may start together.
ALGO=grpo SEED="${SEEDS%% *}" RUN="$COMPARE/grpo/seed-${SEEDS%% *}" BASE_ONLY=1 scripts/demo.sh

# JOBS runs at a time, each on nproc/JOBS threads (RAYON_NUM_THREADS, unless set): a run's
# numbers do not depend on its thread count, only its speed does.
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-$(( $(nproc) / JOBS > 0 ? $(nproc) / JOBS : 1 ))}

one() {
  local algo=$1 seed=$2 run="$COMPARE/$1/seed-$2"
  echo "compare: $algo, seed $seed ($run)"
  ALGO=$algo SEED=$seed RUN="$run" scripts/demo.sh 2>&1 | sed -u "s|^|[$algo seed $seed] |"
}

# Waits for one of the running runs to end; counts it when it failed.
reap() {
  wait -n || failed=$((failed + 1))
  running=$((running - 1))
}

start=$(date +%s)
failed=0
running=0
for seed in $SEEDS; do
  for algo in $ALGOS; do
    [ "$running" -lt "$JOBS" ] || reap
    one "$algo" "$seed" &
    running=$((running + 1))
  done
done
while [ "$running" -gt 0 ]; do reap; done
echo "compare: $(( $(date +%s) - start )) s for the runs ($JOBS at a time, $RAYON_NUM_THREADS threads each)"
if [ "$failed" -gt 0 ]; then
  echo "compare: $failed run(s) failed (their lines above say why); run make compare again to finish them" >&2
  exit 1
fi
"$BIN/clipo-report" "$COMPARE" --compare
