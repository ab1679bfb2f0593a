#!/usr/bin/env bash
# Evaluate a policy on every shared test set with the paper's protocols and print the paper's
# table layout (REFERENCE.md §7): one column per benchmark, the average last.
#   scripts/eval.sh POLICY [OUT_DIR]         # TRACK=gsm8k (default): greedy, pass@1
#   TRACK=math scripts/eval.sh POLICY        # temperature 0.6, top_p 0.95, mean@16
# Env: DATA (../shared/data/clipo/test), MAX_NEW (2048 gsm8k / 4096 math), LIMIT (prompts per
# set, for a quick look), DEVICE (cpu), BIN (target/release), VERIFY_ARGS (clipo-verify's flags,
# shell-quoted, e.g. "--scorer 'python3 scripts/verl_scorer.py my_reward.py'"; the paper's
# verifier by default). Each set is a clipo-rollout then a clipo-verify --summary; reruns reuse
# what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
POLICY=${1:?usage: scripts/eval.sh POLICY [OUT_DIR]}
OUT=${2:-$POLICY/eval}
BIN=${BIN:-target/release}
DATA=${DATA:-../shared/data/clipo/test}
TRACK=${TRACK:-gsm8k}
DEVICE=${DEVICE:-cpu}
LIMIT_ARGS=${LIMIT:+--limit $LIMIT}
eval "verify_args=(${VERIFY_ARGS:-})"
if [ "$TRACK" = math ]; then
  SETS="math aime aime2025 amc math_perturb_simple math_perturb_hard"
  SAMPLING="--temperature 0.6 --top-p 0.95 --n 16 --batch-size 1"
  MAX_NEW=${MAX_NEW:-4096}
else
  SETS="gsm8k gsm_symbolic gsm_p1 gsm_p2 theoremqa mmlu2k truthfulqa commonsense_qa"
  SAMPLING="--greedy --batch-size 16"
  MAX_NEW=${MAX_NEW:-2048}
fi
mkdir -p "$OUT"
header="policy"; row="$(basename "$POLICY")"; sum=0; count=0
for s in $SETS; do
  "$BIN/clipo-rollout" --policy "$POLICY" --prompts "$DATA/$s.parquet" $SAMPLING --max-new-tokens "$MAX_NEW" \
    --max-prompt-tokens 1024 --hidden none --device "$DEVICE" $LIMIT_ARGS --out "$OUT/$s.trajectories.parquet" > /dev/null
  if ! "$BIN/clipo-verify" --input "$OUT/$s.trajectories.parquet" --output "$OUT/$s.rewards.parquet" --summary \
      "${verify_args[@]}" > "$OUT/$s.json" 2> "$OUT/$s.verify.log"; then
    cat "$OUT/$s.verify.log" >&2
    exit 2
  fi
  acc=$(sed -n 's/.*"overall":{[^}]*"accuracy":\([0-9.eE+-]*\).*/\1/p' "$OUT/$s.json")
  pct=$(awk -v a="$acc" 'BEGIN { printf "%.2f", 100 * a }')
  header="$header | $s"; row="$row | $pct"
  sum=$(awk -v s="$sum" -v p="$pct" 'BEGIN { print s + p }'); count=$((count + 1))
done
avg=$(awk -v s="$sum" -v n="$count" 'BEGIN { printf "%.2f", s / n }')
echo "| $header | avg |"
echo "|$(echo "$header | avg" | sed 's/[^|]*/---/g')|"
echo "| $row | $avg |"
