#!/usr/bin/env bash
# Rollout speed side by side (issue 19): transformers' batched generate (bench/rollout_torch.py)
# and clipo's sampler (cargo bench --bench rollout_bench) on SmolLM2-135M-Instruct f32, the same
# GSM8K prompt token ids, one after the other in this invocation; then the table.
#
#   bench/rollout_bench.sh                # TORCH_VENV=/work/venv-torch by default
#   PHASES=greedy_b16,greedy_b64 TORCH_PHASES=greedy bench/rollout_bench.sh
#
# Raw results: bench/results/rollout_{torch,clipo}.json; the table: bench/results/rollout.md.
set -euo pipefail
source "$(dirname "$0")/env.sh"   # VENV MODEL DATA OUT, checked
cargo build --release --bench rollout_bench >&2
echo "== transformers ($(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
"$VENV/bin/python" bench/rollout_torch.py --model-dir "$MODEL" --data "$DATA" --inputs-out "$OUT/rollout_inputs.json" \
    --phases "${TORCH_PHASES:-greedy,sampled}" >"$OUT/rollout_torch.json"
echo "== clipo ($(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
ROLLOUT_BENCH_PHASES=${PHASES:-greedy_b1,greedy_b16,greedy_b64,sampled_groups,sampled_drain64,sampled_cont64,sampled_all} \
    cargo bench --bench rollout_bench 2>&1 >"$OUT/rollout_clipo.json" | grep -v "^\s*\(Finished\|Running\|Compiling\)" >&2
python3 - "$OUT/rollout_torch.json" "$OUT/rollout_clipo.json" <<'PY' | tee "$OUT/rollout.md"
import json, sys
t, c = (json.load(open(p)) for p in sys.argv[1:3])
def row(name, r, base_today, base_torch):
    s = f"| {name} | {r['rows']} | {r['tokens']} | {r['wall_s']:.1f} | {r['tok_s']:.1f} |"
    s += f" {r['tok_s'] / base_today:.2f}x |" if base_today else " - |"
    s += f" {r['tok_s'] / base_torch:.2f}x |" if base_torch else " - |"
    return s
print("| phase | rows | tokens | seconds | tok/s | vs one prompt at a time | vs transformers |")
print("|---|---|---|---|---|---|---|")
tg = t.get("greedy", {}).get("tok_s"); ts = t.get("sampled", {}).get("tok_s")
if "greedy" in t:
    print(f"| transformers greedy, batch {len(t['greedy']['lens'])} | {len(t['greedy']['lens'])} | {t['greedy']['tokens']} | {t['greedy']['wall_s']:.1f} | {tg:.1f} | - | 1.00x |")
b1 = c.get("greedy_b1", {}).get("tok_s")
for k in ["greedy_b1", "greedy_b16", "greedy_b64"]:
    if k in c: print(row(k, c[k], b1, tg))
if "sampled" in t:
    print(f"| transformers sampled, batch {len(t['sampled']['lens'])} | {len(t['sampled']['lens'])} | {t['sampled']['tokens']} | {t['sampled']['wall_s']:.1f} | {ts:.1f} | - | 1.00x |")
gr = c.get("sampled_groups", {}).get("tok_s")
for k in ["sampled_groups", "sampled_drain64", "sampled_cont64", "sampled_all"]:
    if k in c: print(row(k, c[k], gr, ts))
PY
