#!/usr/bin/env python3
"""The transformers side of bench/rollout_bench.sh: batched generate() on SmolLM2-135M-Instruct (f32,
CPU), left padding, KV cache, stop at <|im_end|>, and the exact prompt token ids both sides use.

  python bench/rollout_torch.py --model-dir models/smollm2-135m-instruct \
      --data ../shared/data/clipo/test/gsm8k.parquet --inputs-out bench/results/rollout_inputs.json

Phases (one timed run each after one short warm-up; prints one JSON line):
  greedy   the first GREEDY_PROMPTS (64) GSM8K test questions, chat template applied, one
           generate() call, greedy, MAX_NEW (256) new tokens.
  sampled  the first SAMPLED_PROMPTS (16) questions x G (16) samples (num_return_sequences), one
           generate() call of 256 rows, temperature 1, top-p 1, top-k off, MAX_NEW new tokens.
Real tokens = generated tokens up to and including <|im_end|> (a row's padding after it does not
count); tokens/s = real tokens / wall seconds.
"""
import argparse
import json
import os
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--inputs-out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--greedy-prompts", type=int, default=64)
    ap.add_argument("--sampled-prompts", type=int, default=16)
    ap.add_argument("--g", type=int, default=16)
    ap.add_argument("--max-new", type=int, default=256)
    ap.add_argument("--phases", default="greedy,sampled")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    import torch
    import pyarrow.parquet as pq
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(a.model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, torch_dtype=torch.float32).eval()
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos

    n = max(a.greedy_prompts, a.sampled_prompts)
    rows = pq.read_table(a.data, columns=["prompt"]).slice(0, n).to_pylist()
    texts = [tok.apply_chat_template([{"role": "user", "content": r["prompt"][0]["content"]}], tokenize=False,
                                     add_generation_prompt=True) for r in rows]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    os.makedirs(os.path.dirname(a.inputs_out) or ".", exist_ok=True)
    with open(a.inputs_out, "w") as f:
        json.dump({"prompts": ids, "eos": eos, "max_new": a.max_new, "greedy_prompts": a.greedy_prompts,
                   "sampled_prompts": a.sampled_prompts, "g": a.g}, f)

    def generate(prompts, sample, reps):
        enc = tok.pad({"input_ids": prompts}, return_tensors="pt", padding=True)
        kw = dict(max_new_tokens=a.max_new, eos_token_id=eos, pad_token_id=pad, use_cache=True)
        if sample:
            kw.update(do_sample=True, temperature=1.0, top_p=1.0, top_k=0, num_return_sequences=reps)
        else:
            kw.update(do_sample=False)
        torch.manual_seed(a.seed)
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**enc, **kw)
        wall = time.perf_counter() - t
        lens = []
        for row in out[:, enc["input_ids"].shape[1]:].tolist():
            lens.append(row.index(eos) + 1 if eos in row else len(row))
        return wall, lens

    res = {"torch": torch.__version__, "threads": a.threads}
    phases = a.phases.split(",")
    generate(ids[:2], False, 1)  # warm-up
    if "greedy" in phases:
        wall, lens = generate(ids[:a.greedy_prompts], False, 1)
        res["greedy"] = {"wall_s": round(wall, 3), "tokens": sum(lens), "tok_s": round(sum(lens) / wall, 2), "lens": lens}
        print(f"[torch greedy b{a.greedy_prompts}] {wall:.1f}s {sum(lens)} tokens {sum(lens) / wall:.1f} tok/s", flush=True,
              file=__import__("sys").stderr)
    if "sampled" in phases:
        wall, lens = generate(ids[:a.sampled_prompts], True, a.g)
        res["sampled"] = {"wall_s": round(wall, 3), "tokens": sum(lens), "tok_s": round(sum(lens) / wall, 2), "lens": lens}
        print(f"[torch sampled {a.sampled_prompts}x{a.g}] {wall:.1f}s {sum(lens)} tokens {sum(lens) / wall:.1f} tok/s",
              flush=True, file=__import__("sys").stderr)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
