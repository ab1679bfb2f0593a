"""Expected per-sample contrastive losses for the tests in loss_tests.rs.

An independent, literal transcription of REFERENCE.md section 4 over the full (B, B) matrix
with boolean masks (the way a torch implementation is written), in float64. Run:
    python3 lib/contrastive/testdata/expected_losses.py > /tmp/expected.rs
and paste the table into loss_tests.rs. Needs numpy only.
"""
import numpy as np

M64 = (1 << 64) - 1


def fnv1a(h, data):
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def splitmix64(x):
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def derive_seed(purpose, seed, step, prompt_id, sample_idx):
    h = fnv1a(0xCBF29CE484222325, purpose.encode() + b"\x00")
    for v in (seed, step):
        h = fnv1a(h, v.to_bytes(8, "little"))
    pid = prompt_id.encode()
    h = fnv1a(h, len(pid).to_bytes(8, "little") + pid)
    h = fnv1a(h, sample_idx.to_bytes(8, "little"))
    return splitmix64(h)


def uniform_index(u, n):
    return (u * n) >> 64


# 3 groups of 4 (rows 0-3, 4-7, 8-11); 2-d hidden states, identity head: z = h / ||h||.
H = np.array([
    [2, 0], [3, 1], [0, 1], [-1, 0.5],     # group 10: c c c i
    [1, 1], [1, 2], [-1, 1], [0, -2],      # group 20: c c c c   (trivial: no incorrect)
    [-2, 1], [-1, -1], [1, -3], [2, -1],   # group 30: c i i i   (one correct)
], dtype=np.float64)
CORRECT = np.array([1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0])
GROUP = np.array([10] * 4 + [20] * 4 + [30] * 4)
PROMPT = ["pA"] * 4 + ["pB"] * 4 + ["pC"] * 4
SAMPLE = [0, 1, 2, 3] * 3
SEED, STEP, TAU = 7, 3, 0.05


def losses(loss, level, masked_label, sim="cosine", skip_trivial=True, h=H, correct=CORRECT, group=GROUP):
    B = len(h)
    z = h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
    c = z @ z.T
    s = {"cosine": c, "-cosine": -c, "l2": 1 - np.sqrt(np.maximum(2 - 2 * c, 1e-8))}[sim]
    l = s / TAU
    l = l - l.max(axis=1, keepdims=True)          # row max over all j, self included
    eye = np.eye(B, dtype=bool)
    same = correct[:, None] == correct[None, :]
    allm = np.ones((B, B), dtype=bool)
    sg = group[:, None] == group[None, :]
    if level == "group":
        same, allm = same & sg, allm & sg
    elif level == "cross":
        same = same & sg
    P, A = same & ~eye, allm & ~eye
    N = A & ~P
    E = np.exp(l) * A
    LSE = np.log(E.sum(1) + 1e-8)
    SP = (E * P).sum(1)
    nP = P.sum(1)
    m = correct != masked_label
    t = (nP > 0) & (N.sum(1) > 0) if skip_trivial else np.ones(B, dtype=bool)
    a = m & t
    pos = [-1] * B
    L = np.zeros(B)
    for i in range(B):
        if loss == "infonce":
            if nP[i] == 0:
                a[i] = False                       # no positive to draw (documented choice)
                continue
            cand = np.nonzero(P[i])[0]             # P(i) in row order
            p = cand[uniform_index(derive_seed("infonce-positive", SEED, STEP, PROMPT[i], SAMPLE[i]), len(cand))]
            L[i] = -(l[i, p] - LSE[i])
            if a[i]:
                pos[i] = int(p)
        elif loss == "soft_nn":
            L[i] = -(np.log(SP[i] + 1e-8) - LSE[i])
        elif loss == "supcon_in":
            L[i] = -(np.log(SP[i] + 1e-8) - LSE[i] - np.log(nP[i] + 1e-8))
        elif loss == "supcon_out":
            L[i] = -(1 / (nP[i] + 1e-8)) * ((l[i] - LSE[i]) * P[i]).sum()
    L = L * a
    head = L.sum() / (a.sum() + 1e-8)
    return L, pos, head, a


def rs(v):
    return "[" + ", ".join(repr(float(x)) for x in v) + "]"  # shortest round-trip digits


if __name__ == "__main__":
    names = {"infonce": "InfoNce", "supcon_in": "SupConIn", "supcon_out": "SupConOut", "soft_nn": "SoftNn"}
    lv = {"group": "Group", "cross": "Cross", "batch": "Batch"}
    ml = {0: "Incorrect", 1: "Correct", -1: "Nothing"}
    for loss in names:
        for level in lv:
            for m in (0, 1, -1):
                L, pos, head, a = losses(loss, level, m)
                print(f"    Case {{ loss: LossKind::{names[loss]}, level: Level::{lv[level]}, masked: MaskedLabel::{ml[m]},")
                print(f"        loss_i: {rs(L)},")
                print(f"        positive: {pos}, anchor: {[bool(x) for x in a]}, head: {float(head)!r} }},".replace("True", "true").replace("False", "false"))
    print("// other similarities and skip_trivial off")
    for loss in names:
        for level in lv:
            for sim, skip in (("-cosine", True), ("l2", True), ("cosine", False)):
                L, pos, head, a = losses(loss, level, -1, sim=sim, skip_trivial=skip)
                print(f"    Case2 {{ loss: LossKind::{names[loss]}, level: Level::{lv[level]}, sim: \"{sim}\", skip: {str(skip).lower()},")
                print(f"        loss_i: {rs(L)},")
                print(f"        positive: {pos}, anchor: {[bool(x) for x in a]}, head: {float(head)!r} }},".replace("True", "true").replace("False", "false"))
