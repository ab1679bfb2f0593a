#!/usr/bin/env bash
# The engine path end to end on this CPU (issue 20): llama.cpp's own server (llama-server, built
# by scripts/install_llama_server.sh) serving the SmolLM2-135M-Instruct GGUF on a free loopback
# port; clipo-rollout --engine on 16 GSM8K test prompts x 4 samples; then clipo-verify,
# clipo-embed and clipo-update on the result (the update's rollout_corr/* metrics are the
# mismatch between the server's log-probs on the Q4_1 weights and clipo's recomputation on the
# dequantised ones); the same rollout through clipo's built-in sampler, and through the server
# without hidden states, for the speeds side by side and the teacher-forced hidden-state pass's
# share. The server is stopped whatever happens. Writes engine_check.json into $OUT.
#
#   scripts/engine_check.sh            # OUT=runs/engine_check, N_PROMPTS=16, N=4, MAX_NEW=96
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/engine_check}
N_PROMPTS=${N_PROMPTS:-16}
N=${N:-4}
MAX_NEW=${MAX_NEW:-96}
BIN=${BIN:-target/release}
DATA=${DATA:-../shared/data/clipo}
PROMPTS=$DATA/test/gsm8k.parquet
[ -f "$PROMPTS" ] || { echo "error: $PROMPTS is absent (set DATA to the clipo data sets)" >&2; exit 2; }
[ -x "$BIN/clipo-rollout" ] || cargo build --release
SERVER=$(scripts/install_llama_server.sh)
POLICY=models/smollm2-135m-instruct
GGUF=models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$POLICY/config.json" ] && [ -f "$GGUF" ] || bash scripts/fetch_smollm2.sh >&2
rm -rf "$OUT" && mkdir -p "$OUT"

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
"$SERVER" -m "$GGUF" --host 127.0.0.1 --port "$PORT" -t "$(nproc)" -c 8192 -np 4 --poll 0 --no-webui > "$OUT/llama-server.log" 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null; wait $SERVER_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do
  python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/health", timeout=1)' "$URL" 2>/dev/null && break
  kill -0 $SERVER_PID 2>/dev/null || { echo "error: llama-server exited (see $OUT/llama-server.log)" >&2; exit 1; }
  sleep 0.5
done
echo "engine_check: llama-server on $URL ($SERVER)" >&2

common=(--policy "$POLICY" --prompts "$PROMPTS" --limit "$N_PROMPTS" --n "$N" --max-new-tokens "$MAX_NEW" --seed 0 --step 1)
"$BIN/clipo-rollout" "${common[@]}" --engine "$URL" --concurrency 4 --hidden official --out "$OUT/engine.parquet" > "$OUT/rollout_engine.json"
"$BIN/clipo-rollout" "${common[@]}" --engine "$URL" --concurrency 4 --hidden none --out "$OUT/engine_nohidden.parquet" > "$OUT/rollout_engine_nohidden.json"
"$BIN/clipo-rollout" "${common[@]}" --batch-size "$N_PROMPTS" --hidden official --out "$OUT/builtin.parquet" > "$OUT/rollout_builtin.json"
"$BIN/clipo-verify" --input "$OUT/engine.parquet" --output "$OUT/rewards.parquet" > "$OUT/verify.json"
"$BIN/clipo-embed" --trajectories "$OUT/engine.parquet" --rewards "$OUT/rewards.parquet" --step 1 --init-head \
  --head-out "$OUT/head.safetensors" --out "$OUT/embeddings.parquet" > "$OUT/embed.json"
"$BIN/clipo-update" --policy "$POLICY" --ref "$POLICY" --trajectories "$OUT/engine.parquet" --rewards "$OUT/rewards.parquet" \
  --embeddings "$OUT/embeddings.parquet" --step 1 --micro-batch 8 --out "$OUT/policy" > "$OUT/update.json"

python3 - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
load = lambda name: json.loads(open(f"{out}/{name}").read().strip().splitlines()[-1])
eng, nohid, builtin, upd = load("rollout_engine.json"), load("rollout_engine_nohidden.json"), load("rollout_builtin.json"), load("update.json")
summary = {
    "responses": eng["responses"],
    "generated_tokens": {"engine": eng["generated_tokens"], "builtin": builtin["generated_tokens"]},
    "rollout_seconds": {"engine": eng["seconds"], "engine_no_hidden": nohid["seconds"], "builtin": builtin["seconds"]},
    "tokens_per_second": {"engine": eng["generated_tokens"] / eng["seconds"], "builtin": builtin["generated_tokens"] / builtin["seconds"]},
    # The teacher-forced hidden-state pass, timed inside the engine rollout (the run without
    # hidden states is not a fair baseline: the server's prompt cache is warm by then).
    "teacher_forced_seconds": eng.get("teacher_forced_seconds"),
    "hidden_state_pass_share": eng.get("teacher_forced_seconds", 0.0) / eng["seconds"],
    "update": {k: v for k, v in upd.items() if k.startswith("rollout_corr/") or k in ("actor/updated", "actor/grad_norm", "critic/score/mean")},
}
json.dump(summary, open(f"{out}/engine_check.json", "w"), indent=1)
print(json.dumps(summary, indent=1))
assert upd["actor/updated"] is True or upd.get("critic/score/mean", 0) == 0, "the update did not run"
EOF
echo "engine_check: passed; $OUT/engine_check.json" >&2
