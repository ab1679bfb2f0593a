#!/usr/bin/env python3
"""Writes the small fixtures of tests/model_io.rs into tests/fixtures/model_io/ (run once, by hand).

  python3 -m venv /tmp/fx-venv && /tmp/fx-venv/bin/pip install gguf==0.19.0 tokenizers jinja2 safetensors
  /tmp/fx-venv/bin/python scripts/make_model_io_fixtures.py [--smollm2-gguf models/SmolLM2-135M-Instruct.Q4_1.gguf]

- tiny-llama.gguf: a 2-layer llama (hidden 32, 2 heads of 16, 1 KV head, MLP 64, untied
  lm_head) written with the `gguf` package the way llama.cpp's convert_hf_to_gguf.py writes one:
  Q and K rows permuted by `LlamaModel.permute`, matrices Q4_1, embeddings and lm_head Q8_0,
  norms F32; a byte-level vocabulary of 3 control tokens, 256 byte characters and 6 merges,
  `tokenizer.ggml.pre = smollm`, SmolLM2's chat template.
- tiny-llama-expected.safetensors: the HF tensors transformers' GGUF loader makes from it
  (`gguf.dequantize`, then `LlamaTensorProcessor._reverse_permute_weights`, copied below), f32.
- tiny-llama-expected.json: token ids of a few texts under the tokenizer transformers builds from
  that vocabulary (GPT2Tokenizer: BPE + ByteLevel, control tokens added as special tokens).
- chat_cases.json: SmolLM2's and Qwen2.5's chat templates and, for a few conversations, the text
  transformers' apply_chat_template renders (its Jinja2 environment, rebuilt below).
- smollm2-prompts.json: the PyTorch baseline's 8 GSM8K chat prompts and the token ids its
  tokenizer (transformers, from the GGUF) gave them.
- with --smollm2-gguf: smollm2-weight-checksums.json, per tensor of the real model a few values
  and sums of the HF tensor transformers' loader makes, to check the un-permutation at full size.
  Checked on 2026-11-27: equal, to the last bit, to the same sums over the model.safetensors that
  ../shared/bench/torch/convert_gguf_to_hf.py wrote (torch 2.15.0, transformers 5.24.0).
"""
import argparse
import json
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "model_io")

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def llama_cpp_permute(weights, n_head, n_head_kv=None):
    # convert_hf_to_gguf.py, LlamaModel.permute
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def reverse_permute(weights, n_head, num_kv_heads=None):
    # transformers/modeling_gguf_pytorch_utils.py, LlamaTensorProcessor._reverse_permute_weights
    if num_kv_heads is not None and n_head != num_kv_heads:
        n_head = num_kv_heads
    dim = weights.shape[0] // n_head // 2
    w = weights.reshape(n_head, dim, 2, *weights.shape[1:])
    return w.swapaxes(2, 1).reshape(weights.shape)


HF_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
LAYER_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}


def hf_name(name):
    if name in HF_NAMES:
        return HF_NAMES[name]
    _, layer, part, kind = name.split(".")
    return f"model.layers.{layer}.{LAYER_NAMES[part]}.{kind}"


def hf_tensors_like_transformers(path):
    """What transformers' legacy GGUF loader does: dequantize, reverse-permute Q and K."""
    reader = gguf.GGUFReader(path)
    heads = int(reader.fields["llama.attention.head_count"].contents())
    kv = int(reader.fields["llama.attention.head_count_kv"].contents())
    out = {}
    for t in reader.tensors:
        w = gguf.dequantize(t.data, t.tensor_type).astype(np.float32)
        w = w.reshape([int(d) for d in reversed(t.shape)])
        if ".attn_q." in t.name:
            w = reverse_permute(w, heads, heads)
        elif ".attn_k." in t.name:
            w = reverse_permute(w, heads, kv)
        out[hf_name(t.name)] = np.ascontiguousarray(w)
    return out


def tiny_vocab():
    table = bytes_to_unicode()
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    types = [3, 3, 3]
    tokens += [table[b] for b in range(256)]
    types += [1] * 256
    merges = ["Ġ t", "h e", "Ġt he", "Ġ a", "i n", "Ċ Ġ"]
    for m in merges:
        tokens.append(m.replace(" ", ""))
        types.append(1)
    return tokens, types, merges


def write_tiny_gguf(path):
    rng = np.random.default_rng(20261127)
    hidden, heads, kv, hd, ffn, layers = 32, 2, 1, 16, 64, 2
    tokens, types, merges = tiny_vocab()
    vocab = len(tokens)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tiny-llama")
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(100000.0)
    w.add_rope_dimension_count(hd)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(SMOLLM2_TEMPLATE)

    def mat(rows, cols):
        return rng.standard_normal((rows, cols)).astype(np.float32) * 0.5

    def add(name, hf, qtype):
        data = gguf.quantize(hf, qtype) if qtype != Q.F32 else hf
        w.add_tensor(name, data, raw_dtype=qtype)

    originals = {}
    add("token_embd.weight", mat(vocab, hidden), Q.Q8_0)
    for l in range(layers):
        q, k = mat(heads * hd, hidden), mat(kv * hd, hidden)
        originals[f"model.layers.{l}.self_attn.q_proj.weight"] = q
        originals[f"model.layers.{l}.self_attn.k_proj.weight"] = k
        add(f"blk.{l}.attn_norm.weight", 1 + 0.1 * rng.standard_normal(hidden).astype(np.float32), Q.F32)
        add(f"blk.{l}.attn_q.weight", llama_cpp_permute(q, heads, heads), Q.Q4_1)
        add(f"blk.{l}.attn_k.weight", llama_cpp_permute(k, heads, kv), Q.Q4_1)
        add(f"blk.{l}.attn_v.weight", mat(kv * hd, hidden), Q.Q4_1)
        add(f"blk.{l}.attn_output.weight", mat(hidden, heads * hd), Q.Q4_1)
        add(f"blk.{l}.ffn_norm.weight", 1 + 0.1 * rng.standard_normal(hidden).astype(np.float32), Q.F32)
        add(f"blk.{l}.ffn_gate.weight", mat(ffn, hidden), Q.Q4_1)
        add(f"blk.{l}.ffn_up.weight", mat(ffn, hidden), Q.Q4_1)
        add(f"blk.{l}.ffn_down.weight", mat(hidden, ffn), Q.Q4_1)
    add("output_norm.weight", np.ones(hidden, dtype=np.float32), Q.F32)
    add("output.weight", mat(vocab, hidden), Q.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return originals


def tiny_tokenizer_ids(texts):
    """The tokenizer transformers' GGUF converter builds for this vocabulary (GPT2Tokenizer)."""
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE

    tokens, types, merges = tiny_vocab()
    tok = Tokenizer(BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=[tuple(m.split(" ")) for m in merges],
                        dropout=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t, ty in zip(tokens, types) if ty == 3])
    return [tok.encode(t, add_special_tokens=False).ids for t in texts]


def transformers_jinja_env():
    """transformers' chat_template_utils._cached_compile_jinja_template, less the generation tracker."""
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


def chat_cases(qwen_template):
    import jinja2

    env = transformers_jinja_env()
    templates = {
        "smollm2": (SMOLLM2_TEMPLATE, {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
                                       "pad_token": "<|im_end|>", "unk_token": "<|endoftext|>"}),
        "qwen2.5": (qwen_template, {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}),
    }
    conversations = [
        ([{"role": "user", "content": "What is 2 + 3?"}], True),
        ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], True),
        ([{"role": "user", "content": "Janet’s ducks lay 16 eggs.\n\nHow many?  "},
          {"role": "assistant", "content": "16 🦆"}, {"role": "user", "content": "Sure?"}], False),
        ([{"role": "user", "content": "  spaces {{ not jinja }} \\boxed{}\t"}], True),
        ([], True),
    ]
    cases = []
    for name, (source, special) in templates.items():
        for messages, gen in conversations:
            try:  # rendered: null where transformers fails (Qwen2.5 reads messages[0])
                rendered = env.from_string(source).render(messages=messages, tools=None, documents=None,
                                                          add_generation_prompt=gen, **special)
            except jinja2.exceptions.TemplateError:
                rendered = None
            cases.append({"template": name, "messages": messages, "add_generation_prompt": gen,
                          "rendered": rendered})
    return {"templates": {n: {"source": s, "special_tokens": sp} for n, (s, sp) in templates.items()},
            "cases": cases}


def smollm2_checksums(path):
    """Per tensor: shape, sum, sum of squares, a position-weighted sum and two rows' first values."""
    out = {}
    for name, w in sorted(hf_tensors_like_transformers(path).items()):
        flat = w.reshape(-1).astype(np.float64)
        pos = (np.arange(flat.size) % 101 - 50).astype(np.float64)
        rows = w.reshape(w.shape[0], -1)
        out[name] = {"shape": list(w.shape), "sum": float(flat.sum()), "sum_sq": float((flat ** 2).sum()),
                     "weighted_sum": float((flat * pos).sum()),
                     "row0": [float(x) for x in rows[0, :4]], "row1": [float(x) for x in rows[min(1, rows.shape[0] - 1), :4]]}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smollm2-gguf")
    ap.add_argument("--torch-inputs", default=os.path.join(HERE, "..", "..", "shared", "bench", "torch",
                                                           "torch_baseline_inputs.json"),
                    help="the PyTorch baseline's inputs: its prompt texts and their token ids")
    ap.add_argument("--qwen-template-json",
                    help="a tokenizer_config.json holding Qwen2.5-Instruct's chat_template "
                         "(default: the one already in chat_cases.json)")
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    from safetensors.numpy import save_file

    gguf_path = os.path.join(OUT, "tiny-llama.gguf")
    originals = write_tiny_gguf(gguf_path)
    expected = hf_tensors_like_transformers(gguf_path)
    # The un-permuted Q and K must be the originals up to Q4_1 rounding: this checks the
    # direction of the reverse permutation independently of transformers' code.
    for name, orig in originals.items():
        err = np.abs(expected[name] - orig).max()
        wrong = np.abs(llama_cpp_permute(expected[name], 2, 2 if "q_proj" in name else 1) - orig).max()
        assert err < 0.25 < wrong, (name, err, wrong)
    save_file(expected, os.path.join(OUT, "tiny-llama-expected.safetensors"), metadata={"format": "pt"})
    texts = ["<|im_start|>user\nthe cat in the hat<|im_end|>\n", "at 12:30, 2 + 3 = 5 \n  the", "Janet’s ducks 🦆"]
    json.dump({"texts": texts, "ids": tiny_tokenizer_ids(texts)},
              open(os.path.join(OUT, "tiny-llama-expected.json"), "w"), indent=1, ensure_ascii=False)

    if a.qwen_template_json:
        qwen = json.load(open(a.qwen_template_json))["chat_template"]
    else:
        qwen = json.load(open(os.path.join(OUT, "chat_cases.json")))["templates"]["qwen2.5"]["source"]
    json.dump(chat_cases(qwen), open(os.path.join(OUT, "chat_cases.json"), "w"), indent=1, ensure_ascii=False)

    # The benchmark prompts as the baseline tokenized them (left padding removed).
    inputs = json.load(open(a.torch_inputs))
    prompts = [{"text": text, "ids": [i for i, m in zip(ids, mask) if m]}
               for text, ids, mask in zip(inputs["prompt_texts"], inputs["prompt_input_ids_left_padded"],
                                          inputs["prompt_attention_mask"])]
    json.dump({"source": "../shared/bench/torch/torch_baseline_inputs.json", "prompts": prompts},
              open(os.path.join(OUT, "smollm2-prompts.json"), "w"), indent=0, ensure_ascii=False)

    if a.smollm2_gguf:
        json.dump(smollm2_checksums(a.smollm2_gguf), open(os.path.join(OUT, "smollm2-weight-checksums.json"), "w"),
                  indent=0)
    for f in sorted(os.listdir(OUT)):
        print(f, os.path.getsize(os.path.join(OUT, f)))


if __name__ == "__main__":
    main()
