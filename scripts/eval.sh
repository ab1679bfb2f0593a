#!/usr/bin/env bash
# Evaluate a policy on every shared test set with the paper's protocols and print the paper's
# table layout (REFERENCE.md §7): one column per benchmark, the average last.
#   scripts/eval.sh POLICY [OUT_DIR]         # TRACK=gsm8k (default): greedy, pass@1
#   TRACK=math scripts/eval.sh POLICY        # temperature 0.6, top_p 0.95, mean@16
# Env: DATA (../shared/data/clipo/test), MAX_NEW (2048 gsm8k / 4096 math), LIMIT (the first
# LIMIT prompts of each set; empty: all, the paper's protocol), SETS (the sets to run; default
# the track's), DEVICE (cpu), BIN (target/release), VERIFY_ARGS (clipo-verify's flags,
# shell-quoted, e.g. "--scorer 'python3 scripts/verl_scorer.py my_reward.py'"; the paper's
# verifier by default). OUT_DIR defaults to runs/eval/<the policy's path, / as _>, never inside
# the policy directory. Each set is a clipo-rollout then a clipo-verify --summary; reruns reuse
# what is already there (a changed LIMIT or MAX_NEW recomputes). The table, with the prompts
# evaluated and the share of responses cut at MAX_NEW under it, is also in OUT_DIR/table.md.
#
# Cost on this project's 2-core CPU, SmolLM2-135M: `make eval` (LIMIT=32, MAX_NEW=256: 8 x 32
# prompts) took 5 min 52 s on 2026-12-06 (README "A look by hand, and make eval"); the full
# protocol (20,168 prompts of the eight sets at up to 2048 tokens) would take days.
set -euo pipefail
cd "$(dirname "$0")/.."
POLICY=${1:?usage: scripts/eval.sh POLICY [OUT_DIR]}
POLICY=${POLICY%/}
OUT=${2:-runs/eval/$(printf '%s' "${POLICY#./}" | sed 's#^/##; s#/#_#g')}
BIN=${BIN:-target/release}
DATA=${DATA:-../shared/data/clipo/test}
TRACK=${TRACK:-gsm8k}
DEVICE=${DEVICE:-cpu}
LIMIT=${LIMIT:-}
LIMIT_ARGS=${LIMIT:+--limit $LIMIT}
eval "verify_args=(${VERIFY_ARGS:-})"
if [ ! -f "$POLICY/config.json" ]; then
  echo "eval: $POLICY is not a model directory (no config.json); e.g. make eval POLICY=models/smollm2-135m-instruct (make smollm2 fetches it)" >&2
  exit 2
fi
if [ "$TRACK" = math ]; then
  SETS=${SETS:-math aime aime2025 amc math_perturb_simple math_perturb_hard}
  SAMPLING="--temperature 0.6 --top-p 0.95 --n 16 --batch-size 1"
  PAPER_MAX_NEW=4096
else
  SETS=${SETS:-gsm8k gsm_symbolic gsm_p1 gsm_p2 theoremqa mmlu2k truthfulqa commonsense_qa}
  SAMPLING="--greedy --batch-size 16"
  PAPER_MAX_NEW=2048
fi
MAX_NEW=${MAX_NEW:-$PAPER_MAX_NEW}
for s in $SETS; do
  if [ ! -f "$DATA/$s.parquet" ]; then
    echo "eval: SETS: $DATA/$s.parquet does not exist (DATA=$DATA)" >&2
    exit 2
  fi
done
mkdir -p "$OUT"
header="policy"; row="$(basename "$POLICY")"; prompts_row="prompts (LIMIT=${LIMIT:-all})"; cut_row="cut at MAX_NEW=$MAX_NEW tokens"
sum=0; count=0; total=$(echo $SETS | wc -w); start=$(date +%s)
for s in $SETS; do
  count=$((count + 1))
  echo "eval $count/$total: $s (${LIMIT:-all} prompts, at most $MAX_NEW new tokens) -> $OUT/$s.json" >&2
  "$BIN/clipo-rollout" --policy "$POLICY" --prompts "$DATA/$s.parquet" $SAMPLING --max-new-tokens "$MAX_NEW" \
    --max-prompt-tokens 1024 --hidden none --device "$DEVICE" $LIMIT_ARGS --out "$OUT/$s.trajectories.parquet" > "$OUT/$s.rollout.json"
  if ! "$BIN/clipo-verify" --input "$OUT/$s.trajectories.parquet" --output "$OUT/$s.rewards.parquet" --summary \
      "${verify_args[@]}" > "$OUT/$s.json" 2> "$OUT/$s.verify.log"; then
    cat "$OUT/$s.verify.log" >&2
    exit 2
  fi
  acc=$(sed -n 's/.*"overall":{[^}]*"accuracy":\([0-9.eE+-]*\).*/\1/p' "$OUT/$s.json")
  n=$(sed -n 's/.*"overall":{"prompts":\([0-9]*\).*/\1/p' "$OUT/$s.json")
  cut=$(sed -n 's/.*"truncated_fraction":\([0-9.eE+-]*\).*/\1/p' "$OUT/$s.rollout.json")
  pct=$(awk -v a="$acc" 'BEGIN { printf "%.2f", 100 * a }')
  header="$header | $s"; row="$row | $pct"; prompts_row="$prompts_row | $n"
  cut_row="$cut_row | $(awk -v c="${cut:-0}" 'BEGIN { printf "%.0f%%", 100 * c }')"
  sum=$(awk -v s="$sum" -v p="$pct" 'BEGIN { print s + p }')
done
avg=$(awk -v s="$sum" -v n="$count" 'BEGIN { printf "%.2f", s / n }')
{
  echo "| $header | avg |"
  echo "|$(echo "$header | avg" | sed 's/[^|]*/---/g')|"
  echo "| $row | $avg |"
  echo "| $prompts_row | |"
  echo "| $cut_row | |"
} > "$OUT/table.md"
cat "$OUT/table.md"
if [ -n "$LIMIT" ] || [ "$MAX_NEW" -lt "$PAPER_MAX_NEW" ]; then
  echo "eval: accuracy in % of the prompts evaluated; LIMIT and MAX_NEW make this a quick look, not the paper's protocol (LIMIT= MAX_NEW=$PAPER_MAX_NEW: every prompt, $PAPER_MAX_NEW tokens)" >&2
fi
echo "eval: $count sets in $(( $(date +%s) - start )) s; table in $OUT/table.md, per set $OUT/<set>.json (clipo-verify --summary)" >&2
