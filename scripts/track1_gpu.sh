#!/usr/bin/env bash
# The paper's Track I (Qwen2.5-3B-Instruct, GSM8K, 84 steps): recipes/track1-gsm8k.mk through
# scripts/train_gpu.sh (see there for what it needs).
exec "$(dirname "$0")/train_gpu.sh" recipes/track1-gsm8k.mk
