"""Two torch.optim.AdamW steps (lr 1e-3, wd 0.01, betas 0.9/0.999, eps 1e-8), written out as
torch's _single_tensor_adamw does them, in float64, for head_tests.rs."""
import numpy as np

lr, wd, b1, b2, eps = 1e-3, 0.01, 0.9, 0.999, 1e-8
p = np.array([0.5, -1.0, 2.0, 0.0])
m = np.zeros(4)
v = np.zeros(4)
for t, g in enumerate([np.array([0.1, -0.2, 0.0, 1e-3]), np.array([-0.3, 0.05, 0.4, 0.0])], start=1):
    p = p * (1 - lr * wd)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    step_size = lr / (1 - b1 ** t)
    denom = np.sqrt(v) / np.sqrt(1 - b2 ** t) + eps
    p = p - step_size * m / denom
    print(f"step {t}: p = {[float(f'{x:.12g}') for x in p]}")
    print(f"        m = {[float(f'{x:.12g}') for x in m]}")
    print(f"        v = {[float(f'{x:.12g}') for x in v]}")
