#!/usr/bin/env bash
# The README's memory table: `clipo-update --plan` for Qwen2.5-{0.5,1.5,3,7}B-Instruct (their
# config.json values from the Hugging Face hub, written below), bf16 on CUDA, one sequence per
# micro-batch, with and without gradient checkpointing and optimizer offload.
# Usage: bench/plan_table.sh [BIN_DIR]   (default target/release)
set -euo pipefail
BIN=${1:-target/release}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cfg() { # name hidden intermediate heads kv layers vocab tied
  mkdir -p "$dir/$1"
  printf '{"architectures":["Qwen2ForCausalLM"],"hidden_size":%s,"intermediate_size":%s,"num_attention_heads":%s,"num_key_value_heads":%s,"num_hidden_layers":%s,"vocab_size":%s,"tie_word_embeddings":%s,"rms_norm_eps":1e-6,"rope_theta":1000000.0,"max_position_embeddings":32768,"torch_dtype":"bfloat16"}\n' \
    "$2" "$3" "$4" "$5" "$6" "$7" "$8" > "$dir/$1/config.json"
}
cfg Qwen2.5-0.5B-Instruct 896 4864 14 2 24 151936 true
cfg Qwen2.5-1.5B-Instruct 1536 8960 12 2 28 151936 true
cfg Qwen2.5-3B-Instruct 2048 11008 16 2 36 151936 true
cfg Qwen2.5-7B-Instruct 3584 18944 28 4 28 152064 false
echo "| model (parameters) | tokens | settings | device GB | host GB | fits 80 GB | fits 141 GB |"
echo "|---|---|---|---|---|---|---|"
for m in Qwen2.5-0.5B-Instruct Qwen2.5-1.5B-Instruct Qwen2.5-3B-Instruct Qwen2.5-7B-Instruct; do
  lens=2048
  [ "$m" = Qwen2.5-7B-Instruct ] && lens="2048 4096"
  for len in $lens; do
    for flags in "" "--grad-checkpoint" "--grad-checkpoint --offload-optimizer"; do
      "$BIN/clipo-update" --plan --policy "$dir/$m" --plan-device cuda --dtype bf16 \
        --plan-seq-len "$len" --max-tokens-per-micro-batch "$len" $flags |
      python3 -c '
import json, sys
p = json.load(sys.stdin)
m, n, flags = sys.argv[1:4]
gb = lambda x: x / 1e9
dev, host = gb(p["device_bytes"]), gb(p["host_bytes"])
yes = lambda limit: "yes" if dev < limit else "no"
params = p["parameters"] / 1e9
print("| %s (%.2fB) | %s | %s | %.1f | %.1f | %s | %s |" % (m, params, n, flags or "plain", dev, host, yes(80), yes(141)))
' "$m" "$len" "$flags"
    done
  done
done
