#!/usr/bin/env bash
# DAPO dynamic sampling for one RL step (verl's algorithm.filter_groups), as scripts/loop.mk runs
# it with DYNAMIC_SAMPLING=1: sample round 0 (the step's prompts), verify, keep the groups whose
# verifier metric varies (clipo-filter); while fewer than PER_STEP groups are kept and rounds
# remain (MAX_ROUNDS, verl's max_num_gen_batches), sample a further round of PER_STEP other
# prompts (clipo-rollout --round r) and filter again over all rounds. Writes STEP_DIR/
# {trajectories,rewards}.parquet (merged, with a `round` column), rollout.json and verify.json
# (round 0's lines) and filter.json (rounds, groups, informative, kept, enough); each round's
# files stay under STEP_DIR/rounds/. Every stage is resumable, so a killed step reruns cheaply.
#
# Environment: BIN POLICY_DIR PROMPTS STEP STEP_DIR PER_STEP N MAX_NEW TEMPERATURE SEED
# ROLLOUT_ARGS VERIFY_ARGS (clipo-verify's flags, shell-quoted: "--scorer 'python3 s.py'")
# MAX_ROUNDS (default 3) METRIC (correct|score, default correct).
set -euo pipefail
: "${BIN:?}" "${POLICY_DIR:?}" "${PROMPTS:?}" "${STEP:?}" "${STEP_DIR:?}" "${PER_STEP:?}" "${N:?}" "${MAX_NEW:?}"
MAX_ROUNDS=${MAX_ROUNDS:-3}
METRIC=${METRIC:-correct}
case "$MAX_ROUNDS" in ''|*[!0-9]*|0) echo "dynamic_sampling: MAX_ROUNDS=$MAX_ROUNDS: expected a whole number >= 1" >&2; exit 2 ;; esac
case "$METRIC" in correct|acc|score) ;; *) echo "dynamic_sampling: METRIC=$METRIC: expected correct or score" >&2; exit 2 ;; esac
# VERIFY_ARGS as the shell would split it (quotes kept together).
eval "verify_args=(${VERIFY_ARGS:-})"
R="$STEP_DIR/rounds"
mkdir -p "$R"
filter_args=()
for ((r = 0; r < MAX_ROUNDS; r++)); do
  t="$R/trajectories-$r.parquet"
  w="$R/rewards-$r.parquet"
  # shellcheck disable=SC2086 # ROLLOUT_ARGS is a list of flags
  if ! "$BIN/clipo-rollout" --policy "$POLICY_DIR" --prompts "$PROMPTS" --per-step "$PER_STEP" --step "$STEP" --round "$r" \
      --n "$N" --max-new-tokens "$MAX_NEW" --temperature "${TEMPERATURE:-1.0}" --seed "${SEED:-0}" --hidden official \
      ${ROLLOUT_ARGS:-} --out "$t" > "$R/rollout-$r.json" 2> "$R/rollout-$r.err"; then
    if [ "$r" -gt 0 ] && grep -q "takes no prompt" "$R/rollout-$r.err"; then
      echo "dynamic_sampling: step $STEP: no prompt left for round $r" >&2
      break
    fi
    cat "$R/rollout-$r.err" >&2
    exit 2
  fi
  if ! "$BIN/clipo-verify" --input "$t" --output "$w" --summary "${verify_args[@]}" > "$R/verify-$r.json" 2> "$R/verify-$r.log"; then
    cat "$R/verify-$r.log" >&2
    exit 2
  fi
  filter_args+=(--trajectories "$t" --rewards "$w")
  "$BIN/clipo-filter" "${filter_args[@]}" --keep "$PER_STEP" --metric "$METRIC" \
    --out-trajectories "$STEP_DIR/trajectories.parquet" --out-rewards "$STEP_DIR/rewards.parquet" > "$STEP_DIR/filter.json.tmp"
  if grep -q '"enough":true' "$STEP_DIR/filter.json.tmp"; then
    break
  fi
done
grep -q '"kept":0,' "$STEP_DIR/filter.json.tmp" && {
  echo "dynamic_sampling: step $STEP: no group with a varying $METRIC in $MAX_ROUNDS rounds (the prompts are all solved or all failed): raise MAX_ROUNDS or check the rewards" >&2
  exit 2
}
cp "$R/rollout-0.json" "$STEP_DIR/rollout.json.tmp" && mv "$STEP_DIR/rollout.json.tmp" "$STEP_DIR/rollout.json"
cp "$R/verify-0.log" "$STEP_DIR/verify.log"
cp "$R/verify-0.json" "$STEP_DIR/verify.json.tmp" && mv "$STEP_DIR/verify.json.tmp" "$STEP_DIR/verify.json"
mv "$STEP_DIR/filter.json.tmp" "$STEP_DIR/filter.json"
