"""Agreement harness: the Rust verifier (lib/verify) against the Python reference.

Steps (REFERENCE.md section 5):
  gen      read every ground truth of every test parquet, write responses shaped
           like model output (right answers in many surface forms, near misses,
           formatting accidents) with the reference's score, as JSONL;
  fixture  sample a modest subset (< 1 MB) to tests/fixtures/verify_cases.jsonl;
  stress   like gen, but answers are random mutations of the math ground truths
           (fragments such as `\\frac`, `{`, `^`, `\\sqrt`, `i`, `.` inserted,
           deleted or swapped): not model-like, a fuzz of the grader's corners;
  check    run the Rust agreement test on the JSONL: a table per data set and
           the disagreements;
  all      gen, then check (the default).

Setup (once):
    python3 -m venv /work/venv-verify
    /work/venv-verify/bin/pip install sympy pylatexenc pyarrow
Run:
    /work/venv-verify/bin/python scripts/verify_agreement.py all
Options: --data DIR (parquets), --cases FILE (JSONL), --crate DIR (Cargo.toml that
declares the `verify_agreement` test), --jobs N (reference worker processes).
"""

import argparse
import glob
import json
import multiprocessing
import os
import random
import re
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_verifier as ref  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_DATA = os.path.join(os.path.dirname(REPO), "shared", "data", "clipo", "test")
DEFAULT_CASES = "/tmp/verify_cases_full.jsonl"
FIXTURE = os.path.join(REPO, "tests", "fixtures", "verify_cases.jsonl")
# Fixture size: about 150 bytes a case keeps it well under 1 MB.
FIXTURE_CASES = 5000
# Stress (fuzz) cases added to the fixture by `fixture --stress-cases FILE`.
FIXTURE_STRESS_CASES = 1000

PREAMBLES = [
    "",
    "Let's think step by step. ",
    "First we compute the pieces, then combine them.\n\n",
    "<think>\nLet me work it out... maybe \\boxed{0}? No.\n</think>\n\n",
    "<think>scratch</think>",
]


def read_ground_truths(data_dir):
    import pyarrow.parquet as pq

    pairs = {}
    for path in sorted(glob.glob(os.path.join(data_dir, "*.parquet"))):
        table = pq.read_table(path, columns=["data_source", "reward_model"])
        for row in table.to_pylist():
            key = (row["data_source"], row["reward_model"]["ground_truth"])
            pairs[key] = pairs.get(key, 0) + 1
    return sorted(pairs)


# ------------------------------------------------------------------ variants


def wrap(rng, answer, think=True):
    pre = rng.choice(PREAMBLES if think else PREAMBLES[:3])
    post = rng.choice(["", ".", " $.", "\n\nSo that is the answer."])
    return f"{pre}The final answer is $\\boxed{{{answer}}}${post}"


def bump_digit(s, rng):
    """A near miss: change one digit."""
    idx = [i for i, c in enumerate(s) if c.isdigit()]
    if not idx:
        return s + "1"
    i = rng.choice(idx)
    d = (int(s[i]) + rng.choice([1, 2, 9])) % 10
    return s[:i] + str(d) + s[i + 1 :]


def choice_variants(gt, rng):
    letters = "ABCDEFGHIJ"
    other = rng.choice([c for c in letters[:5] if c != gt] or ["A"])
    text = rng.choice(["Paris", "the mitochondria", "none of the above", "42"])
    forms = [
        wrap(rng, gt),
        wrap(rng, f"{gt}. {text}"),
        wrap(rng, f"{gt}) {text}"),
        wrap(rng, f"({gt})"),
        wrap(rng, f"\\text{{{gt}}}"),
        wrap(rng, f"\\textbf{{{gt}}}"),
        wrap(rng, gt.lower()),
        wrap(rng, f" {gt} "),
        wrap(rng, other),
        f"\\boxed{{{gt}}} hmm, actually \\boxed{{{other}}}",
        f"\\boxed{{{other}}} hmm, actually \\boxed{{{gt}}}",
        f"<think>\\boxed{{{other}}}</think>\n\\boxed{{{gt}}}",
        f"<think>\\boxed{{{gt}}}</think>\nThe answer is ({gt}).",
        f"The answer is ({gt}).",
        f"\\fbox{{{gt}}}",
        f"\\boxed{{{gt}",
        f"\\boxed {{{gt}}}",
        f"\\boxed{{{gt}.}}",
        f"\\boxed{{{{{gt}}}}}",
    ]
    return forms


INT_RE = re.compile(r"^-?\d+(\.0+)?$")
DEC_RE = re.compile(r"^-?\d*\.\d+$")
FRAC_RE = re.compile(r"^(-?)\\[dt]?frac\{(-?\d+)\}\{(\d+)\}$")


def with_commas(n):
    return f"{n:,}"


def number_variants(gt, rng):
    forms = []
    if INT_RE.match(gt):
        n = int(float(gt))
        s = str(n)
        forms += [s, f"{s}.0", f"{s}.00", f"\\${s}", f"{s}\\%", f"{s}^\\circ", f"{s}^{{\\circ}}",
                  f"{s} \\text{{ dollars}}", f"{s}\\text{{ cm}}", f"{s} \\mbox{{ meters}}", f"x = {s}",
                  f"\\text{{{s}}}", f"{{{s}}}", f"{s} \\text{{ apples}}", f"{s} \\text{{ hours}}", f"{s} hours",
                  f"\\frac{{{2 * n}}}{{2}}", f"{s} + 0", f"{s}.000001", f"{s}.00000001",
                  str(n + 1), str(n - 1), str(-n) if n else "1", str(n * 10), f"{s}.5",
                  f"\\frac{{{s}}}{{1}}", f"{s}/1", f"0{s}", f"{s}\\,", f"({s})", f"{s}!"]
        if abs(n) >= 1000:
            forms += [with_commas(n), with_commas(n).replace(",", ",\\!"), with_commas(n).replace(",", "{,}"),
                      with_commas(n).replace(",", "\\,"), f"{n / 1000:g} \\times 10^3", f"{n:.3e}"]
        if 0 < n <= 12:
            forms += [f"\\sqrt{{{n * n}}}", f"{n}^1", f"2^{n}" if n < 10 else "2"]
        if gt != s:
            forms.append(gt)
    elif DEC_RE.match(gt):
        v = float(gt)
        forms += [gt, gt + "0", gt.lstrip("0") if gt.startswith("0.") else gt, f"{gt}\\%", f"\\${gt}",
                  f"{v:.1f}", f"{v:.2f}", f"{v:.3f}", f"{v:g}", f"{gt} \\text{{ m}}", f"x={gt}",
                  bump_digit(gt, rng), str(-v), f"{v * 100:g}\\%", f"{v:.6g}"]
        from fractions import Fraction

        fr = Fraction(gt).limit_denominator(10000)
        if float(fr) == v or abs(float(fr) - v) < 1e-12:
            forms += [f"\\frac{{{fr.numerator}}}{{{fr.denominator}}}", f"{fr.numerator}/{fr.denominator}",
                      f"\\dfrac{{{fr.numerator * 2}}}{{{fr.denominator * 2}}}"]
    return forms


def frac_variants(gt, rng):
    m = FRAC_RE.match(gt.replace(" ", ""))
    if not m:
        return []
    sign, a, b = m.group(1), int(m.group(2)), int(m.group(3))
    if sign:
        a = -a
    forms = [f"\\frac{{{a}}}{{{b}}}", f"\\dfrac{{{a}}}{{{b}}}", f"\\tfrac{{{a}}}{{{b}}}", f"{a}/{b}",
             f"\\frac{{{2 * a}}}{{{2 * b}}}", f"{2 * a}/{2 * b}", f"\\frac{{{-a}}}{{{b}}}",
             f"-\\frac{{{abs(a)}}}{{{b}}}", f"\\left(\\frac{{{a}}}{{{b}}}\\right)", f"{a / b:.4f}",
             f"{a / b:.10f}", f"{a / b}", f"\\frac{{{a + 1}}}{{{b}}}", f"{a}:{b}", f"\\frac{{{a}}}{{{b}}}\\%"]
    if 0 <= a < 10 and 0 < b < 10:
        forms += [f"\\frac{a}{b}", f"\\frac {a}{b}", f"\\dfrac{a}{b}"]
    if abs(a) > b:
        q, r = divmod(abs(a), b)
        forms += [f"{'-' if a < 0 else ''}{q}\\frac{{{r}}}{{{b}}}", f"{q} {r}/{b}"]
    return forms


def _alarm(signum, frame):
    raise TimeoutError()


def sympy_variants(gt, rng):
    """Equivalent and near-miss forms printed by sympy (run in a worker)."""
    import sympy

    out = []
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(3)
    try:
        norm = ref._normalize(gt)
        elems = ref.split_tuple(norm)
        if len(elems) != 1:
            return out
        e = ref._sympy_parse(elems[0])
        if not isinstance(e, sympy.Expr) or len(e.free_symbols) > 2:
            return out
        out += [str(e), sympy.latex(e), sympy.latex(sympy.expand(e)), str(sympy.expand(e)),
                sympy.latex(sympy.factor(e)), sympy.latex(e + 1), str(-e), sympy.latex(2 * e),
                str(sympy.radsimp(e)), sympy.latex(sympy.together(e))]
        if not e.free_symbols:
            v = complex(sympy.N(e, 30))
            if v.imag == 0:
                out += [f"{v.real:.4f}", f"{v.real:.12g}", repr(v.real), f"{v.real:.2f}"]
        s = str(e)
        out.append(s.replace("**", "^").replace("*", ""))
        out.append(s.replace("*", " "))
    except Exception:
        pass
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return [x for x in out if x and len(x) < 200]


def latex_variants(gt, rng):
    forms = [gt, gt.replace(" ", ""), gt.replace("\\frac", "\\dfrac"), gt.replace("\\left", "").replace("\\right", ""),
             f"\\text{{{gt}}}", f"{gt} \\text{{ units}}", f"x = {gt}", bump_digit(gt, rng),
             gt.replace("\\sqrt{", "\\sqrt {"), gt.replace("\\pi", "\\pi "), gt.replace("\\cdot", "\\times"),
             gt.replace("^\\circ", "^{\\circ}"), gt.replace(",", ", ")]
    if gt.startswith("-"):
        forms.append(gt[1:])
    else:
        forms.append("-" + gt)
    inner = gt.strip()
    for lo, hi in (("(", ")"), ("[", "]"), ("\\left(", "\\right)"), ("\\left[", "\\right]")):
        if inner.startswith(lo) and inner.endswith(hi):
            body = inner[len(lo) : -len(hi)]
            parts = [p.strip() for p in body.split(",")]
            if len(parts) == 2:
                forms += [f"{lo}{parts[1]}, {parts[0]}{hi}", f"({parts[0]}, {parts[1]}]", f"{parts[0]}, {parts[1]}",
                          f"[{parts[0]}, {parts[1]}]"]
    if "," in gt and not any(c in gt for c in "()[]"):
        parts = [p.strip() for p in gt.split(",")]
        forms += [", ".join(reversed(parts)), " and ".join(parts), " or ".join(parts)]
    if "\\text{" in gt:
        m = re.match(r"^\\text\{(.*)\}$", gt)
        if m:
            forms += [m.group(1), m.group(1).lower(), m.group(1).upper(), f"\\textbf{{{m.group(1)}}}"]
    return forms


def accident_variants(gt, rng):
    wrong = bump_digit(gt, rng)
    return [
        f"So the answer is {gt}.",
        f"\\boxed{{{gt}",
        f"\\fbox{{{gt}}}",
        f"\\boxed {{{gt}}}",
        f"\\boxed{{{{{gt}}}}}",
        f"\\boxed{{\\boxed{{{gt}}}}}",
        f"\\boxed{{{wrong}}} wait, recheck: \\boxed{{{gt}}}",
        f"\\boxed{{{gt}}} wait, recheck: \\boxed{{{wrong}}}",
        f"<think>\\boxed{{{wrong}}}</think>\\boxed{{{gt}}}",
        f"<think>\\boxed{{{gt}}}</think>so {gt}",
        f"\\boxed{{}}",
        f"$\\boxed{{{gt}}}$ and also $\\boxed{{{gt}}}$",
        f"\\boxed{{\\text{{The answer is }} {gt}}}",
        f"\\boxed{{{gt}}}}}",
    ]


def make_cases(pairs, seed=0):
    rng = random.Random(seed)
    cases = []
    for ds, gt in pairs:
        if ref.is_multiple_choice(ds):
            responses = choice_variants(gt, rng)
        else:
            answers = number_variants(gt, rng) + frac_variants(gt, rng)
            if not INT_RE.match(gt) and not DEC_RE.match(gt):
                answers += latex_variants(gt, rng)
            responses = [wrap(rng, a) for a in dict.fromkeys(answers)]
            responses += accident_variants(gt, rng)
        for r in dict.fromkeys(responses):
            cases.append({"data_source": ds, "response": r, "ground_truth": gt})
    return cases


FRAGMENTS = [" ", "\\", "{", "}", "\\frac", "\\dfrac", "\\sqrt", "^", "_", "(", ")", "[", "]", ",", "x",
             "y", "2", "3", "0", ".", "-", "+", "*", "/", "!", "=", "i", "e", "\\pi", "\\left(", "\\right)",
             "\\text{ }", "\\text{", "\\!", "\\,", "$", "\\%", "\\$", "^\\circ", "\\cdot", "\\times",
             "sqrt", "pi", " or ", " and ", "\\infty", "\\cup", "10^", "1,000", "\n", "\\mbox{ cm}", "\\in",
             "\\le", "\\pm", "|", "~", "--", "\\begin{pmatrix}", "\\end{pmatrix}", "&", "\\\\", "\\(", "\\)",
             "\\mathbf{", "\\hat{", "ln", "0.5", "1e3", "05", "\\sqrt[3]", "sqrt2", "xy", " 3/4"]


def mutate(s, rng):
    for _ in range(rng.randint(1, 3)):
        op = rng.random()
        i = rng.randint(0, len(s))
        if op < 0.5:
            s = s[:i] + rng.choice(FRAGMENTS) + s[i:]
        elif op < 0.8 and s:
            j = min(len(s), i + rng.randint(1, 3))
            s = s[:i] + s[j:]
        elif s:
            j = rng.randint(0, len(s))
            a, b = sorted((i, j))
            s = s[:a] + s[b:] + s[a:b]
    return s


def cmd_stress(args):
    rng = random.Random(args.seed)
    pairs = [p for p in read_ground_truths(args.data)
             if not ref.is_multiple_choice(p[0]) and not p[0].startswith("conrl/gsm")]
    cases = []
    for ds, gt in pairs:
        for _ in range(args.per_gt):
            cases.append({"data_source": ds, "response": f"\\boxed{{{mutate(gt, rng)}}}", "ground_truth": gt})
            cases.append({"data_source": ds, "response": f"\\boxed{{{gt}}}", "ground_truth": mutate(gt, rng)})
    with multiprocessing.Pool(args.jobs) as pool:
        scored = pool.map(_score_job, cases, chunksize=64)
    with open(args.cases, "w") as f:
        for c in scored:
            f.write(json.dumps(c, ensure_ascii=False) + "\n")
    print(f"wrote {len(scored)} stress cases to {args.cases}", file=sys.stderr)


def _sympy_job(args):
    ds, gt, seed = args
    rng = random.Random(seed)
    return [{"data_source": ds, "response": wrap(rng, a), "ground_truth": gt}
            for a in dict.fromkeys(sympy_variants(gt, rng))]


def _score_job(case):
    case = dict(case)
    case["expected"] = ref.compute_score(case["data_source"], case["response"], case["ground_truth"])
    return case


def cmd_gen(args):
    pairs = read_ground_truths(args.data)
    print(f"{len(pairs)} distinct (data_source, ground_truth) pairs from {args.data}", file=sys.stderr)
    cases = make_cases(pairs)
    math_pairs = [(ds, gt, i) for i, (ds, gt) in enumerate(pairs)
                  if not ref.is_multiple_choice(ds) and not INT_RE.match(gt) and not DEC_RE.match(gt)]
    with multiprocessing.Pool(args.jobs) as pool:
        for extra in pool.imap(_sympy_job, math_pairs, chunksize=8):
            cases.extend(extra)
        seen = set()
        uniq = []
        for c in cases:
            k = (c["data_source"], c["response"], c["ground_truth"])
            if k not in seen:
                seen.add(k)
                uniq.append(c)
        print(f"scoring {len(uniq)} cases with the Python reference ({args.jobs} jobs)", file=sys.stderr)
        scored = pool.map(_score_job, uniq, chunksize=64)
    with open(args.cases, "w") as f:
        for c in scored:
            f.write(json.dumps(c, ensure_ascii=False) + "\n")
    print(f"wrote {len(scored)} cases to {args.cases}", file=sys.stderr)


def cmd_fixture(args):
    rng = random.Random(1)
    with open(args.cases) as f:
        cases = [json.loads(line) for line in f]
    by_ds = {}
    for c in cases:
        by_ds.setdefault(c["data_source"], []).append(c)
    # Every data set, then math-heavy sets weighted up: they exercise the grader.
    per = max(1, FIXTURE_CASES // (2 * len(by_ds)))
    picked = []
    for ds in sorted(by_ds):
        rng.shuffle(by_ds[ds])
        picked += by_ds[ds][:per]
    rest = [c for ds in sorted(by_ds) for c in by_ds[ds][per:]
            if not ref.is_multiple_choice(ds) and not c["data_source"].startswith("conrl/gsm")]
    rng.shuffle(rest)
    picked += rest[: FIXTURE_CASES - len(picked)]
    if args.stress_cases:
        # a slice of the fuzz too, so the committed test also guards the corners
        with open(args.stress_cases) as f:
            stress = [json.loads(line) for line in f]
        rng.shuffle(stress)
        picked += stress[:FIXTURE_STRESS_CASES]
    os.makedirs(os.path.dirname(FIXTURE), exist_ok=True)
    with open(FIXTURE, "w") as f:
        for c in picked:
            f.write(json.dumps(c, ensure_ascii=False) + "\n")
    print(f"wrote {len(picked)} cases ({os.path.getsize(FIXTURE)} bytes) to {FIXTURE}", file=sys.stderr)


def cmd_check(args):
    env = dict(os.environ, VERIFY_CASES=os.path.abspath(args.cases))
    cmd = ["cargo", "test", "--release", "--manifest-path", os.path.join(args.crate, "Cargo.toml"),
           "--test", "verify_agreement", "--", "--nocapture"]
    print("+ " + " ".join(cmd), file=sys.stderr)
    return subprocess.call(cmd, env=env)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", nargs="?", default="all", choices=["gen", "stress", "fixture", "check", "all"])
    p.add_argument("--per-gt", type=int, default=10, help="stress: mutations per ground truth and side")
    p.add_argument("--seed", type=int, default=7, help="stress: random seed")
    p.add_argument("--stress-cases", help="fixture: also sample this stress JSONL")
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--cases", default=DEFAULT_CASES)
    p.add_argument("--crate", default=REPO)
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args()
    if args.step in ("gen", "all"):
        cmd_gen(args)
    if args.step == "stress":
        cmd_stress(args)
    if args.step == "fixture":
        cmd_fixture(args)
    if args.step in ("check", "all"):
        sys.exit(cmd_check(args))


if __name__ == "__main__":
    main()
