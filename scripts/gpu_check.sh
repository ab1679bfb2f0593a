#!/usr/bin/env bash
# The prepared GPU check (issue 16), for the day a GPU is lent: on a machine with an NVIDIA GPU,
# no network and no Rust, with the binaries of scripts/build_cuda.sh in target-cuda/release (or
# BIN=...). It makes the tiny policy and the arithmetic task there (no weights travel), then:
#   1. f32 on CUDA against f32 on the CPU, 3 SFT steps at lr 1e-3: the weights agree (max |diff|);
#   2. bf16 on CUDA (f32 masters) against f32 on the CPU, 3 SFT steps at the paper's lr 1e-6:
#      at least 90% of the weights move, at least 80% in the CPU's direction;
#   3. sampling throughput on CUDA, f32 and bf16 (64 prompts x 8 samples x 64 tokens);
#   4. peak GPU memory of each run (nvidia-smi, sampled every 100 ms; the CUDA context included),
#      beside `clipo-update --plan` for the SFT runs (which counts the step, not the context);
#   5. the bf16 SFT again with --grad-checkpoint --logit-chunk 7 (the segmented backward on
#      CUDA): the same weights as the plain bf16 run to 1e-5.
# Writes gpu_check.json (OUT, default $OUT/gpu_check.json when the device tool sets OUT) and
# exits non-zero if a check fails. About 2 minutes on an H100; NOT yet run (no GPU has been lent).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target-cuda/release}
OUT_JSON=${GPU_CHECK_OUT:-${OUT:-.}/gpu_check.json}
W=$(mktemp -d)
trap 'kill "${SMI_PID:-0}" 2>/dev/null || true; rm -rf "$W"' EXIT
for b in clipo-model clipo-data clipo-update clipo-rollout; do
  [ -x "$BIN/$b" ] || { echo "gpu_check: no $BIN/$b: build with scripts/build_cuda.sh and carry target-cuda/release" >&2; exit 2; }
done
command -v nvidia-smi >/dev/null || { echo "gpu_check: no nvidia-smi: not a GPU machine" >&2; exit 2; }
if [ -z "${LD_LIBRARY_PATH:-}" ]; then
  # PyTorch's CUDA 13 wheels carry the libraries the binaries link.
  LIB=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null)/nvidia/cu13/lib
  [ -d "$LIB" ] && export LD_LIBRARY_PATH="$LIB"
fi

peak() { # peak() NAME CMD...: runs CMD while sampling GPU memory; prints the peak MiB.
  local name=$1; shift
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$W/$name.smi" &
  SMI_PID=$!
  "$@" > "$W/$name.out" 2> "$W/$name.err" || { kill $SMI_PID; cat "$W/$name.err" >&2; echo "gpu_check: $name failed" >&2; exit 1; }
  kill $SMI_PID; wait $SMI_PID 2>/dev/null || true
  sort -n "$W/$name.smi" | tail -1
}

"$BIN/clipo-data" arith --out "$W/data" --train 512 --test 64 --seed 0 2>/dev/null
"$BIN/clipo-model" init --preset tiny --seed 0 "$W/tiny" 2>/dev/null
sft() { # sft OUT LR DEVICE DTYPE [FLAGS...]
  local out=$1 lr=$2 device=$3 dtype=$4; shift 4
  "$BIN/clipo-update" --objective sft --policy "$W/tiny" --prompts "$W/data/train.parquet" --steps 3 --batch-size 64 \
    --micro-batch 64 --lr "$lr" --seed 0 --device "$device" --dtype "$dtype" --save-dtype f32 --out "$out" "$@"
}
sft "$W/cpu-f32-1e-3" 1e-3 cpu f32 2>/dev/null
sft "$W/cpu-f32-1e-6" 1e-6 cpu f32 2>/dev/null
m_f32=$(peak sft-f32 sft "$W/cuda-f32-1e-3" 1e-3 cuda:0 f32)
m_bf16=$(peak sft-bf16 sft "$W/cuda-bf16-1e-6" 1e-6 cuda:0 bf16)
m_ckpt=$(peak sft-bf16-ckpt sft "$W/cuda-bf16-1e-6-ckpt" 1e-6 cuda:0 bf16 --grad-checkpoint --logit-chunk 7)
plan() { "$BIN/clipo-update" --plan --policy "$W/tiny" --plan-device cuda --dtype "$1" --micro-batch 64 --plan-seq-len 96 "${@:2}"; }
plan_f32=$(plan f32); plan_bf16=$(plan bf16); plan_ckpt=$(plan bf16 --grad-checkpoint --logit-chunk 7)
ckpt=$("$BIN/clipo-model" compare "$W/tiny" "$W/cuda-bf16-1e-6" "$W/cuda-bf16-1e-6-ckpt")
f32=$("$BIN/clipo-model" compare "$W/tiny" "$W/cpu-f32-1e-3" "$W/cuda-f32-1e-3")
bf16=$("$BIN/clipo-model" compare "$W/tiny" "$W/cpu-f32-1e-6" "$W/cuda-bf16-1e-6")
rollout() { # rollout NAME DTYPE
  "$BIN/clipo-rollout" --policy "$W/cpu-f32-1e-3" --prompts "$W/data/train.parquet" --limit 64 --n 8 --max-new-tokens 64 \
    --batch-size 64 --device cuda:0 --dtype "$2" --out "$W/$1.parquet"
}
m_r32=$(peak rollout-f32 rollout r32 f32)
m_r16=$(peak rollout-bf16 rollout r16 bf16)
cat > "$OUT_JSON" <<JSON
{"date": "$(date -u +%FT%TZ)", "gpu": "$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)",
 "sft_f32_cuda_vs_cpu": $f32, "sft_bf16_cuda_vs_f32_cpu_lr_1e-6": $bf16, "sft_bf16_ckpt_vs_plain": $ckpt,
 "peak_mib": {"sft_f32": $m_f32, "sft_bf16": $m_bf16, "sft_bf16_ckpt": $m_ckpt, "rollout_f32": $m_r32, "rollout_bf16": $m_r16},
 "plan": {"sft_f32": $plan_f32, "sft_bf16": $plan_bf16, "sft_bf16_ckpt": $plan_ckpt},
 "rollout_f32": $(cat "$W/rollout-f32.out"), "rollout_bf16": $(cat "$W/rollout-bf16.out")}
JSON
cat "$OUT_JSON"
# The checks: f32 CUDA within 1e-4 of the CPU; bf16 moves >= 90%, >= 80% in the CPU's direction.
python3 - "$OUT_JSON" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
f32, bf16 = r["sft_f32_cuda_vs_cpu"], r["sft_bf16_cuda_vs_f32_cpu_lr_1e-6"]
ckpt = r["sft_bf16_ckpt_vs_plain"]
ok = f32["max_abs_diff"] < 1e-4 and bf16["moved_b"] >= 0.9 and bf16["same_direction"] >= 0.8 and ckpt["max_abs_diff"] < 1e-5
print("gpu_check:", "PASS" if ok else "FAIL", f"f32 max diff {f32['max_abs_diff']:.2e}, bf16 moved {bf16['moved_b']:.3f}, same direction {bf16['same_direction']:.3f}, checkpointed vs plain bf16 {ckpt['max_abs_diff']:.2e}")
sys.exit(0 if ok else 1)
PY
