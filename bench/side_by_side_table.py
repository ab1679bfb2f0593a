#!/usr/bin/env python3
"""Writes the results section of bench/README.md from torch_baseline.py's and model_bench's JSON.

usage: side_by_side_table.py TORCH.json CLIPO.json README.md [TORCH_SCALE.jsonl]
The section between `<!-- results -->` and `<!-- /results -->` is replaced (appended if absent).
"""
import datetime
import json
import sys


def last_json(path):
    with open(path) as f:
        lines = [l for l in f.read().splitlines() if l.startswith("{")]
    return json.loads(lines[-1])


def main():
    tp, cp, readme = sys.argv[1:4]
    torch_scale = {}
    if len(sys.argv) > 4:
        with open(sys.argv[4]) as f:
            for line in f:
                if line.startswith("{"):
                    r = json.loads(line)
                    torch_scale[(r["train_batch"]["B"], r["train_batch"]["seq_len"])] = r
    t, c = last_json(tp), last_json(cp)
    n = c["counts"]
    fl = c.get("floor", {})
    gf = fl.get("gemm_gflops") or float("nan")
    bw = fl.get("read_bw_gbs") or float("nan")
    lin, head, wbytes = n["linear_params"], n["lm_head_params"], n["weight_bytes"]
    L, H, hd = n["layers"], n["heads"], n["head_dim"]
    tb = t.get("train_batch", {"B": 8, "seq_len": 256, "prompt_len_padded": 158, "response_len": 98})
    B, T, R = tb["B"], tb["seq_len"], tb["response_len"]
    P = t.get("prompt_padded_len", tb["prompt_len_padded"])

    def attn(b, tq, tk):  # QK^T and PV, causal half
        return 2 * 2 * L * b * H * tq * tk * hd / 2

    fwd_flops = 2 * lin * B * T + attn(B, T, T) + 2 * head * B * R
    lp_floor = fwd_flops / (gf * 1e9)
    train_floor = 3 * fwd_flops / (gf * 1e9)

    def gen_floor(b, steps=128):
        prefill = (2 * lin * b * P + attn(b, P, P) + 2 * head * b) / (gf * 1e9)
        step = max(b * 2 * (lin + head) / (gf * 1e9), wbytes / (bw * 1e9))
        return b * steps / (prefill + steps * step)

    rows = []

    def row(name, tv, cv, unit, higher_better, floor=None):
        if tv is None or cv is None:
            return
        ratio = (cv / tv) if higher_better else (tv / cv)
        fs = ""
        if floor is not None:
            gap = (floor / cv) if higher_better else (cv / floor)
            fs = f"{floor:.3g} {unit} | {gap:.1f}x"
        else:
            fs = " | "
        rows.append(f"| {name} | {tv:.3g} {unit} | {cv:.3g} {unit} | **{ratio:.2f}x** | {fs} |")

    g = lambda d, *ks: (lambda v: v)(_get(d, ks))
    for k, b in (("gen_b8", 8), ("gen_b8_fixed", 8), ("gen_b1", 1), ("gen_b1_fixed", 1)):
        row(f"sampling `{k}` (tok/s)", _get(t, (k, "tokens_per_s_median")), _get(c, (k, "tokens_per_s_median")),
            "tok/s", True, gen_floor(b))
    row("no-grad log-prob pass, 8 x 256 (s)", _get(t, ("logprob", "s_median")), _get(c, ("logprob", "s_median")), "s", False, lp_floor)
    row("train step, 8 x 256 (s)", _get(t, ("train", "s_per_step_median")), _get(c, ("train", "s_per_step_median")), "s", False, train_floor)
    row("- forward + loss (s)", _get(t, ("train", "fwd_loss_s_median")), _get(c, ("train", "fwd_loss_s_median")), "s", False, fwd_flops / (gf * 1e9))
    row("- backward (s)", _get(t, ("train", "bwd_s_median")), _get(c, ("train", "bwd_s_median")), "s", False, 2 * fwd_flops / (gf * 1e9))
    row("- AdamW (s)", _get(t, ("train", "adamw_s_median")), _get(c, ("train", "adamw_s_median")), "s", False)
    # clipo's scaling phase runs in the same process after the train step: its peak is not this row's.
    tr, cr = t.get("rss_peak_mib"), c.get("rss_peak_after_train_mib") or c.get("rss_peak_mib")
    if tr and cr:
        rows.append(f"| peak RSS (VmHWM / ru_maxrss) | {tr / 1024:.2f} GiB | {cr / 1024:.2f} GiB | **{tr / cr:.2f}x** less | | |")

    foreign_t = t.get("foreign_cpu_max_during_runs")
    fc = [x for k in ("gen_b8", "gen_b1", "gen_b8_fixed", "gen_b1_fixed", "logprob", "train")
          for x in (_get(c, (k, "foreign_cpu_runs")) or [])]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "<!-- results -->",
        f"### Results ({now}, {t.get('cpu', '?')}, {t.get('nproc', '?')} cores, f32, {t.get('threads', '?')} threads, "
        f"median of {c.get('runs')} runs after {c.get('warmup')} warm-up)",
        "",
        "Same invocation, PyTorch first, then clipo. Speed-up > 1 means clipo is faster. "
        "Floor: FLOPs / the measured `gemm` rate "
        f"({gf:.0f} GFLOP/s on a 2048x576x1536 product, 2 threads), and for each decode step at least "
        f"the f32 weight bytes ({wbytes / 1e6:.0f} MB) / the measured read bandwidth ({bw:.1f} GB/s); "
        "'vs floor' is how far the clipo figure is from it.",
        "",
        "| measurement | PyTorch 2.15 + transformers | clipo | clipo speed-up | floor | clipo vs floor |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Machine load: load average at start {t.get('loadavg_at_start')} (torch) / {c.get('loadavg_at_start')} (clipo); "
        f"share of the CPU taken by other processes during timed runs: torch max {foreign_t}, clipo max "
        f"{max(fc) if fc else None}. The torch script discards and repeats disturbed runs "
        "(`--retries`), clipo records them only.",
        "",
    ]
    sc = c.get("scale")
    if sc:
        out += ["#### Scaling (one timed run per size after the warm-up; torch_baseline.py's layout at "
                "`--batch B --seq-len T`: the first B GSM8K prompts left-padded, then random response tokens)", "",
                "| batch x seq | log-prob pass: PyTorch | clipo | speed-up | train step: PyTorch | clipo | speed-up "
                "| clipo fwd / bwd / AdamW | train floor | clipo vs floor |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        secs = lambda x: f"{x:.2f} s" if x is not None else "-"
        speedup = lambda torch_s, clipo_s: f"**{torch_s / clipo_s:.2f}x**" if torch_s else "-"
        for r in sc:
            b, T = r["batch"], r["seq_len"]
            tr = torch_scale.get((b, T), {})
            tl, tt = _get(tr, ("logprob", "s_median")), _get(tr, ("train", "s_per_step_median"))
            Pb = _get(tr, ("train_batch", "prompt_len_padded"))
            resp = (T - Pb) if Pb else T * 98 // 256
            fl = 3 * (2 * lin * b * T + attn(b, T, T) + 2 * head * b * resp) / (gf * 1e9)
            out.append(f"| {b} x {T} | {secs(tl)} | {secs(r['logprob_s'])} | {speedup(tl, r['logprob_s'])} | {secs(tt)} "
                       f"| {secs(r['train_s'])} | {speedup(tt, r['train_s'])} | {r['fwd_s']:.2f} / {r['bwd_s']:.2f} / {r['adamw_s']:.2f} | {fl:.2f} s "
                       f"| {r['train_s'] / fl:.1f}x |")
        out.append("")
    out.append("<!-- /results -->")
    section = "\n".join(out)
    try:
        text = open(readme).read()
    except FileNotFoundError:
        text = "# Benchmarks\n\n"
    if "<!-- results -->" in text and "<!-- /results -->" in text:
        a = text.index("<!-- results -->")
        b = text.index("<!-- /results -->") + len("<!-- /results -->")
        text = text[:a] + section + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(readme, "w") as f:
        f.write(text)
    print(section)


def _get(d, ks):
    for k in ks:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


if __name__ == "__main__":
    main()
