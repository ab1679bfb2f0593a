#!/usr/bin/env python3
"""Writes tests/fixtures/model_io/tiny-spm.gguf and tiny-spm-expected.json: a 2-layer llama whose
vocabulary is a SentencePiece one (`tokenizer.ggml.model = llama`, as Llama 2, Mistral and
TinyLlama GGUFs carry), and the token ids transformers' GGUF tokenizer gives for 44 texts.

    /work/venv-torch/bin/pip install gguf==0.19.0 sentencepiece   # beside torch and transformers
    /work/venv-torch/bin/python scripts/make_spm_gguf_fixture.py   # from the repo root

(Made 2026-12 with gguf 0.19.0 and transformers 5.25.0.)

The vocabulary is laid out as a SentencePiece model's is: <unk> (type 2), <s> and </s> (control,
type 3), the 256 byte-fallback tokens <0x00>..<0xFF> (type 6), then pieces (type 1) with
scores, the space marker U+2581 standing for a space, plus two control tokens ([INST], [/INST])
and a user-defined one (<think>, type 4). Pieces carry SentencePiece-like scores (higher
first), with ties, so the merges transformers derives from them (`generate_merges`) are ordered
by score, then by the pieces' lengths, then by file order. No `tokenizer.ggml.merges` and no
`add_bos_token` key, as in Llama 2 GGUFs (transformers and llama.cpp then add a BOS).

The weights are random f32 (tied embeddings), Q and K permuted as llama.cpp's LlamaModel does;
tiny-spm-expected.json also holds transformers' HF tensors' sums (the import checks run on the
tiny-llama GGUF already; here the tokenizer is the point).
"""
import json
import os

import numpy as np
import gguf
import transformers
from transformers import AutoTokenizer

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "model_io")
SP = "\u2581"

PIECES = [
    # single characters first (SentencePiece keeps every character of the training text)
    SP, "e", "t", "a", "o", "n", "i", "h", "s", "r", "d", "l", "c", "u", "m", "w", "f", "g", "y", "p",
    "b", ",", ".", "k", "v", "T", "I", "J", "H", "W", "?", "!", ":", "'", "0", "1", "2", "3", "4", "5",
    "6", "7", "8", "9", "+", "=", "-", "(", ")", "\u00e9", "\u2019", "x", "q", "j", "z",
    # merged pieces
    SP + "t", "he", SP + "the", SP + "a", "in", SP + "c", "at", SP + "cat", SP + "in", "an", "nd",
    SP + "and", SP + "h", SP + "hat", "er", "re", "on", SP + "s", "is", SP + "is", "es", "ed",
    SP + "w", SP + "wh", "at" + "e", SP + "o", "ou", SP + "you", SP + "yo", "ll", "he" + "ll", "o" + SP,
    SP + SP, SP + SP + SP + SP, "12", SP + "1", SP + "2", SP + "=", SP + "+", "30", SP + "J", "an" + "et",
    SP + "Jan", SP + "Janet", "du", "ck", SP + "du", SP + "duck", "s" + SP, "\u2019s", SP + "T",
    SP + "H", "ow", SP + "How", SP + "m", "an" + "y", SP + "many", SP + "e", "gg", SP + "egg",
]

TEXTS = [
    "", " ", "  ", "hello", " hello", "hello ", "hello  world", "the cat in the hat",
    " the cat in the hat", "The cat", "THE CAT", "the\ncat", "the\n\ncat\n", "\tthe\tcat", "a  b   c",
    "12 + 30 = 42", "2+3=5", "1234567890", "x = (1 + 2) * 3", "Janet\u2019s ducks lay 16 eggs.",
    "How many eggs?", "caf\u00e9", "na\u00efve", "\U0001F986 duck", "\u65e5\u672c\u8a9e", "\u00a0nbsp",
    "what?!", "you'll", "hello, world.", "[INST] hi [/INST]", "[INST]hi[/INST]", "<s>the</s>",
    " <s> the", "<think>plan</think> answer", "the <think>", "<unk>", "\u2581the", "\u2581 the",
    "e", "ee", "eee eee", "Weather in Paris: 21\u00b0C", "tab\tand\nnewline", "trailing   ",
]


def vocab():
    tokens, types, scores = ["<unk>", "<s>", "</s>"], [2, 3, 3], [0.0, 0.0, 0.0]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(6)
        scores.append(0.0)
    for i, p in enumerate(dict.fromkeys(PIECES)):
        tokens.append(p)
        types.append(1)
        # a score per piece, best first, pairs tied (-0, -0, -1, -1, ...): ties exercise the
        # length and file-order tie-breaks
        scores.append(-float(i // 2))
    for t, ty in [("[INST]", 3), ("[/INST]", 3), ("<think>", 4), ("</think>", 4)]:
        tokens.append(t)
        types.append(ty)
        scores.append(0.0)
    assert len(tokens) == len(set(tokens))
    return tokens, types, scores


def llama_cpp_permute(weights, n_head):
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def write_gguf(path):
    rng = np.random.default_rng(20261206)
    hidden, heads, kv, hd, ffn, layers = 32, 2, 1, 16, 64, 2
    tokens, types, scores = vocab()
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tiny-spm")
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(hd)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_scores(scores)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    def mat(rows, cols):
        return rng.standard_normal((rows, cols)).astype(np.float32) * 0.5

    w.add_tensor("token_embd.weight", mat(len(tokens), hidden))
    for l in range(layers):
        w.add_tensor(f"blk.{l}.attn_norm.weight", np.ones(hidden, dtype=np.float32))
        w.add_tensor(f"blk.{l}.attn_q.weight", llama_cpp_permute(mat(heads * hd, hidden), heads))
        w.add_tensor(f"blk.{l}.attn_k.weight", llama_cpp_permute(mat(kv * hd, hidden), kv))
        w.add_tensor(f"blk.{l}.attn_v.weight", mat(kv * hd, hidden))
        w.add_tensor(f"blk.{l}.attn_output.weight", mat(hidden, heads * hd))
        w.add_tensor(f"blk.{l}.ffn_norm.weight", np.ones(hidden, dtype=np.float32))
        w.add_tensor(f"blk.{l}.ffn_gate.weight", mat(ffn, hidden))
        w.add_tensor(f"blk.{l}.ffn_up.weight", mat(ffn, hidden))
        w.add_tensor(f"blk.{l}.ffn_down.weight", mat(hidden, ffn))
    w.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    path = os.path.join(OUT, "tiny-spm.gguf")
    write_gguf(path)
    tok = AutoTokenizer.from_pretrained(OUT, gguf_file="tiny-spm.gguf")
    cases = []
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        cases.append({"text": text, "ids": ids, "ids_with_bos": tok.encode(text),
                      "decoded": tok.decode(ids), "pieces": tok.convert_ids_to_tokens(ids)})
    out = {"transformers": transformers.__version__, "gguf": "0.19.0", "vocab_size": len(tok),
           "tokenizer_json": json.loads(tok.backend_tokenizer.to_str()), "cases": cases}
    json.dump(out, open(os.path.join(OUT, "tiny-spm-expected.json"), "w"), indent=1, ensure_ascii=False)
    print(path, os.path.getsize(path), "bytes;", len(cases), "texts")


if __name__ == "__main__":
    main()
