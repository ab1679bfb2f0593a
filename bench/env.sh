# Sourced by the side-by-side bench scripts (run_side_by_side.sh, rollout_bench.sh): the repo root
# as working directory, the torch virtualenv, the model and the prompts both sides read, and the
# results folder. TORCH_VENV (default /work/venv-torch) names a virtualenv with torch,
# transformers and pyarrow.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${TORCH_VENV:-/work/venv-torch}
MODEL=models/smollm2-135m-instruct
DATA=../shared/data/clipo/test/gsm8k.parquet
OUT=bench/results
[ -f "$MODEL/config.json" ] || { echo "missing $MODEL: run scripts/fetch_smollm2.sh" >&2; exit 1; }
[ -f "$DATA" ] || { echo "missing $DATA: the shared GSM8K test set (../shared/data/clipo) is needed" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || { echo "missing $VENV/bin/python: set TORCH_VENV to a virtualenv with torch, transformers, pyarrow" >&2; exit 1; }
mkdir -p "$OUT"
