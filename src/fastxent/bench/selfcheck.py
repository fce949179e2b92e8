"""``python -m fastxent check``: every available backend against a float64 oracle (a few
seconds: it compiles the Numba kernels it uses on a first run)."""

import numpy as np

from .. import _plan, losses


def _oracle(x, t):
    x = x.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]
    p = np.exp(x - lse[:, None])
    g = p.copy()
    g[np.arange(len(t)), t] -= 1
    return lse - x[np.arange(len(t)), t], g


def main(args=None):
    rng = np.random.default_rng(0)
    rows = []
    ok = True
    for shape in [(256, 10), (64, 1000), (8, 40000)]:
        x64 = rng.standard_normal(shape) * 4
        t = rng.integers(0, shape[1], shape[0])
        for dtype in (np.float32, np.float64):
            x = x64.astype(dtype)
            want_loss, want_grad = _oracle(x, t)
            for name in _plan.available_backends():
                loss, grad = losses.SparseSoftmaxCrossEntropy(
                    reduction="none", backend=name, check="off").loss_gradient(t, x)
                el = np.max(np.abs(loss - want_loss) / np.maximum(np.abs(want_loss), 1))
                eg = np.max(np.abs(grad - want_grad))
                good = el < (1e-5 if dtype == np.float32 else 1e-12)
                ok &= bool(good)
                rows.append((str(shape), np.dtype(dtype).name, name, el, eg, good))
    print(f"{'shape':>12} {'dtype':>8} {'backend':>8} {'loss rel err':>13} "
          f"{'grad abs err':>13}  ok")
    for shape, dtype, name, el, eg, good in rows:
        print(f"{shape:>12} {dtype:>8} {name:>8} {el:13.2e} {eg:13.2e}  {'yes' if good else 'NO'}")
    print("all backends agree with the float64 oracle" if ok else "MISMATCH")
    return 0 if ok else 1
