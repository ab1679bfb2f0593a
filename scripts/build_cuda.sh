#!/usr/bin/env bash
# Builds the binaries with `--features cuda` on a machine without a GPU or a CUDA install
# (../shared/CUDA.md): nvcc 13.0 from PyPI in a virtualenv, stub shared objects for the CUDA
# libraries candle links (libcuda, libcublas, libcublasLt, libcurand, libnvrtc; the binary linked
# against them is the one the real libraries would give), then a release build into its own
# target directory so the CPU build is left alone.
#
#   scripts/build_cuda.sh                 # -> target-cuda/release/clipo-*
#   CUDA_COMPUTE_CAP=80 scripts/build_cuda.sh
#
# Environment: CUDA_VENV (default .cuda-venv), CUDA_COMPUTE_CAP (90: H100/H200, sm_90a),
# CARGO_TARGET_DIR (default target-cuda). A cold build takes about 15 minutes on 2 cores, most of
# it in candle-kernels' build script. On the GPU machine run the binaries with
# LD_LIBRARY_PATH=<site-packages>/nvidia/cu13/lib (PyTorch's CUDA 13 wheels provide the real
# libraries) and `--device cuda:0`.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
VENV="${CUDA_VENV:-$ROOT/.cuda-venv}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target-cuda}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"

# nvcc 13.0 (cudarc 0.19.10 accepts up to 13.4; a 580 driver accepts 13.0's PTX).
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
C="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13"
if [ ! -x "$C/bin/nvcc" ]; then
  "$VENV/bin/pip" install -q --no-deps nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 \
      nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
fi
[ -e "$C/lib/libcudart.so" ] || ln -s libcudart.so.13 "$C/lib/libcudart.so"
export CUDA_HOME="$C" CUDA_PATH="$C" PATH="$C/bin:$PATH"

# Stubs: one `int f(void)` per function cudarc declares for each library, with the real soname.
cargo fetch --quiet
CUDARC="$(cargo metadata --format-version 1 --features cuda 2>/dev/null \
  | python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "cudarc").rsplit("/", 1)[0])')"
STUBS="$C/lib/stubs"
mkdir -p "$STUBS"
while read -r module lib soname; do
  [ -f "$STUBS/lib$lib.so" ] && continue
  tmp="$(mktemp -d)"
  grep -ohE 'pub unsafe fn [A-Za-z_][A-Za-z0-9_]*' "$CUDARC/src/$module/sys/mod.rs" | awk '{ print $4 }' | sort -u \
    | awk '{ printf "int %s(void) { return 999; }\n", $1 }' > "$tmp/stub.c"
  echo "$soname { global: *; };" > "$tmp/version.map"
  gcc -shared -fPIC -o "$STUBS/lib$lib.so" "$tmp/stub.c" -Wl,-soname,"$soname" -Wl,--version-script,"$tmp/version.map"
  rm -rf "$tmp"
  echo "build_cuda: stub lib$lib.so ($soname, $(nm -D --defined-only "$STUBS/lib$lib.so" | grep -c ' T ') functions)"
done <<'EOF'
driver cuda libcuda.so.1
cublas cublas libcublas.so.13
cublaslt cublasLt libcublasLt.so.13
curand curand libcurand.so.10
nvrtc nvrtc libnvrtc.so.13
EOF

export RUSTFLAGS="${RUSTFLAGS:-} -L native=$STUBS -L native=$C/lib"
cargo build --release --features cuda --bins
echo "build_cuda: binaries in $CARGO_TARGET_DIR/release (compute capability $CUDA_COMPUTE_CAP)"
