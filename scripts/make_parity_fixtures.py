#!/usr/bin/env python3
"""Writes the Hugging Face parity fixtures for clipo's model module (tests/model_parity.rs).

Run once, by hand, in a virtualenv with torch and transformers (CPU is enough):

    python3 -m venv /work/venv-torch
    /work/venv-torch/bin/pip install torch transformers safetensors numpy
    /work/venv-torch/bin/python scripts/make_parity_fixtures.py   # from the repo root

(Measured 2026-11-27: torch 2.15.0 / transformers 5.24.0 from PyPI; the torch wheel is the CUDA
build, ~5.6 GB with its nvidia-* dependencies, and imports fine on a CPU-only machine. The
script itself runs in a few seconds.)

For each tiny random model it writes tests/fixtures/<name>/:
  config.json, generation_config.json, model.safetensors (or shards + index)
  expected.safetensors:
    prompt_<i>         (L_i,) int64      the prompts, of different lengths
    logits_<i>         (L_i, V) f32      unbatched forward
    hidden_<i>         (L_i, d) f32      last entry of output_hidden_states (after final norm)
    batch_ids          (B, T) int64      the prompts left-padded with 0
    batch_mask         (B, T) int64      attention mask
    batch_logits       (B, T, V) f32     batched forward, position_ids = cumsum(mask) - 1
    batch_hidden       (B, T, d) f32
    greedy_<i>         (N,) int64        greedy continuation (generate, do_sample=False, no EOS)
    greedy_logprobs_<i>(N,) f32          log_softmax of generate's scores at the chosen tokens
    greedy_min_gap     ()  f32           smallest top1-top2 logit gap met along the greedy paths

Models (all GQA: 4 query heads, 2 kv heads, head_dim 16, hidden 64, 2 layers, vocab 256):
  tiny-llama       LlamaForCausalLM, tied embeddings, no biases (like SmolLM2)
  tiny-llama-bias  LlamaForCausalLM, untied, attention_bias and mlp_bias
  tiny-qwen2       Qwen2ForCausalLM, untied, q/k/v biases, saved in two shards
  tiny-qwen3       Qwen3ForCausalLM, untied, q_norm/k_norm, explicit head_dim 32 (hidden / heads
                   is 16), no biases (like every released Qwen3)
  tiny-qwen3-tied  Qwen3ForCausalLM, tied embeddings, attention_bias (q, k, v and o)
  tiny-llama3-rope LlamaForCausalLM with llama3 rope scaling (factor 8, low/high frequency
                   factors 0.5/2, original_max_position_embeddings 16): wavelengths below 8 are
                   kept, above 32 divided by 8, in between smoothed (one frequency in each regime at
                   theta 1e4), and the greedy runs reach position 31
  tiny-mistral     MistralForCausalLM, sliding_window 8: the 12-token prompt and every greedy run
                   (up to 32 tokens) attend through the window

rope_inv_freq.json (beside the fixture directories): transformers' inv_freq for real and toy rope
configurations (llama3 as in Llama 3.1 and 3.2, linear, dynamic within max_position_embeddings),
which clipo must reproduce bit for bit in f32.

The first three fixtures were made 2026-11-27 (torch 2.15.0 / transformers 5.24.0); the others were
added 2026-12 with torch 2.15.0 / transformers 5.25.0 (the same install: `pip install torch
transformers safetensors numpy`). Re-running the script rewrites only the fixtures named on the
command line (all when none is named), so the first three stay byte-identical.
Weights are drawn with a larger spread than transformers' init (std 0.02 gives near-uniform
logits, whose near-ties would make greedy parity depend on rounding).
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
GREEDY_TOKENS = 20
PROMPT_LENS = [5, 12, 1, 9]

COMMON = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)


def randomize(model, gen):
    """Weights ~ N(0, 1/fan_in) (scaled), norms ~ 1 + N(0, 0.1), biases ~ N(0, 0.1)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * (1.5 / p.shape[1] ** 0.5))


def make(name, model, gen, shard=None):
    out = os.path.join(ROOT, name)
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):
        os.remove(os.path.join(out, f))
    randomize(model, gen)
    model.eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(out, **kw)

    V = model.config.vocab_size
    prompts = [torch.randint(3, V, (n,), generator=gen) for n in PROMPT_LENS]
    exp = {}
    min_gap = float("inf")
    with torch.no_grad():
        for i, p in enumerate(prompts):
            o = model(input_ids=p[None], output_hidden_states=True)
            exp[f"prompt_{i}"] = p.clone()
            exp[f"logits_{i}"] = o.logits[0].float().contiguous()
            exp[f"hidden_{i}"] = o.hidden_states[-1][0].float().contiguous()
            g = model.generate(
                input_ids=p[None],
                attention_mask=torch.ones_like(p[None]),
                do_sample=False,
                max_new_tokens=GREEDY_TOKENS,
                min_new_tokens=GREEDY_TOKENS,
                eos_token_id=None,
                pad_token_id=0,
                output_scores=True,
                return_dict_in_generate=True,
            )
            toks = g.sequences[0, len(p):]
            assert len(toks) == GREEDY_TOKENS, toks
            scores = torch.stack(g.scores, 0)[:, 0, :]  # (N, V)
            lp = torch.log_softmax(scores.float(), -1).gather(1, toks[:, None])[:, 0]
            top2 = scores.topk(2, -1).values
            min_gap = min(min_gap, float((top2[:, 0] - top2[:, 1]).min()))
            exp[f"greedy_{i}"] = toks.clone()
            exp[f"greedy_logprobs_{i}"] = lp.contiguous()

        T = max(PROMPT_LENS)
        ids = torch.zeros(len(prompts), T, dtype=torch.long)
        mask = torch.zeros(len(prompts), T, dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, T - len(p):] = p
            mask[i, T - len(p):] = 1
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        o = model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True)
        exp["batch_ids"] = ids
        exp["batch_mask"] = mask
        exp["batch_logits"] = o.logits.float().contiguous()
        exp["batch_hidden"] = o.hidden_states[-1].float().contiguous()
    exp["greedy_min_gap"] = torch.tensor(min_gap, dtype=torch.float32)
    save_file(exp, os.path.join(out, "expected.safetensors"),
              metadata={"torch": torch.__version__, "transformers": transformers.__version__})
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"{name}: {sorted(os.listdir(out))}, {size / 1024:.0f} KiB, greedy min top1-top2 gap {min_gap:.4f}",
          file=sys.stderr)


def check_window_greedy(model, exp):
    """The greedy tokens are the argmax of a plain forward over prompt + continuation: what the
    cached generate did agrees with the sliding-window mask of a single pass."""
    with torch.no_grad():
        for i in range(len(PROMPT_LENS)):
            seq = torch.cat([exp[f"prompt_{i}"], exp[f"greedy_{i}"]])
            logits = model(input_ids=seq[None]).logits[0]
            n = len(exp[f"prompt_{i}"])
            assert torch.equal(logits[n - 1:-1].argmax(-1), exp[f"greedy_{i}"]), i


def rope_inv_freq():
    """transformers' inv_freq (f32) for rope configurations clipo implements."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    cases = {
        # Llama-3.1-8B and Llama-3.2-1B (head_dim 128 and 64)
        "llama3.1-8b": LlamaConfig(hidden_size=4096, num_attention_heads=32, max_position_embeddings=131072,
                                   rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                                    "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                    "original_max_position_embeddings": 8192}),
        "llama3.2-1b": LlamaConfig(hidden_size=2048, num_attention_heads=32, head_dim=64,
                                   max_position_embeddings=131072,
                                   rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                                    "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                    "original_max_position_embeddings": 8192}),
        "linear": LlamaConfig(hidden_size=64, num_attention_heads=4, max_position_embeddings=256,
                              rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 3.0}),
        "dynamic": LlamaConfig(hidden_size=64, num_attention_heads=4, max_position_embeddings=256,
                               rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}),
    }
    out = {}
    for name, cfg in cases.items():
        inv, scale = ROPE_INIT_FUNCTIONS[cfg.rope_parameters["rope_type"]](cfg, "cpu")
        assert scale == 1.0
        out[name] = {"config": cfg.to_dict(), "inv_freq": [float(x) for x in inv.float()]}
    path = os.path.join(ROOT, "rope_inv_freq.json")
    with open(path, "w") as f:
        json.dump({"torch": torch.__version__, "transformers": transformers.__version__, "cases": out}, f, indent=1)
    print(f"rope_inv_freq.json: {len(out)} cases", file=sys.stderr)


def main():
    only = set(sys.argv[1:])
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)
    kw = dict(attn_implementation="eager", dtype=torch.float32)
    # Each fixture draws from the shared generator in turn: the first three are made (or their
    # draws replayed) first, whichever are written.
    def want(name):
        return not only or name in only

    def build(name, model, **extra):
        if want(name):
            make(name, model, gen, **extra)
        else:  # replay the draws of make() so that later fixtures stay the same
            randomize(model, gen)
            for n in PROMPT_LENS:
                torch.randint(3, model.config.vocab_size, (n,), generator=gen)
        return model

    cfg = LlamaConfig(**COMMON, tie_word_embeddings=True, rope_theta=10000.0)
    build("tiny-llama", LlamaForCausalLM._from_config(cfg, **kw))

    cfg = LlamaConfig(**COMMON, tie_word_embeddings=False, rope_theta=500.0,
                      attention_bias=True, mlp_bias=True)
    build("tiny-llama-bias", LlamaForCausalLM._from_config(cfg, **kw))

    cfg = Qwen2Config(**COMMON, tie_word_embeddings=False, rope_theta=1000000.0,
                      use_sliding_window=False)
    build("tiny-qwen2", Qwen2ForCausalLM._from_config(cfg, **kw), shard="200KB")

    # Issue 21: the families trained today. A generator of their own, so that they do not
    # depend on the draws above.
    gen = torch.Generator().manual_seed(2121)

    cfg = Qwen3Config(**COMMON, head_dim=32, tie_word_embeddings=False, rope_theta=1000000.0,
                      attention_bias=False, use_sliding_window=False)
    build("tiny-qwen3", Qwen3ForCausalLM._from_config(cfg, **kw))

    cfg = Qwen3Config(**COMMON, head_dim=16, tie_word_embeddings=True, rope_theta=10000.0,
                      attention_bias=True, use_sliding_window=False)
    build("tiny-qwen3-tied", Qwen3ForCausalLM._from_config(cfg, **kw))

    cfg = LlamaConfig(**COMMON, tie_word_embeddings=False,
                      rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                                       "low_freq_factor": 0.5, "high_freq_factor": 2.0,
                                       "original_max_position_embeddings": 16})
    build("tiny-llama3-rope", LlamaForCausalLM._from_config(cfg, **kw))

    cfg = MistralConfig(**COMMON, tie_word_embeddings=False, rope_theta=10000.0, sliding_window=8)
    m = build("tiny-mistral", MistralForCausalLM._from_config(cfg, **kw))
    if want("tiny-mistral"):
        from safetensors.torch import load_file
        check_window_greedy(m, load_file(os.path.join(ROOT, "tiny-mistral", "expected.safetensors")))

    if want("rope_inv_freq"):
        rope_inv_freq()


if __name__ == "__main__":
    main()
