"""``python -m fastxent warmup``: compile and cache the Numba kernels ahead of time.

A fresh install has an empty Numba cache, so a process's first call of each Numba kernel
compiles it (a few seconds). This runs every kernel family once, for float32 and float64,
on a small (serial) and a large (parallel) problem, so later processes load them from the
cache (``NUMBA_CACHE_DIR`` or the package's ``__pycache__``). Only the Numba backend needs
it; the C kernels are compiled at install time.
"""

import sys
import time

import numpy as np


def add_arguments(parser):
    parser.add_argument("--dtypes", default="float32,float64",
                        help="comma-separated dtypes to compile (default both)")
    return parser


def main(args):
    import fastxent as fx
    from .. import _registry
    if _registry.load("numba") is None:
        print(f"fastxent warmup: the numba backend is not available: {_registry.why('numba')}")
        return 1
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    bad = [d for d in dtypes if d not in ("float32", "float64")]
    if bad:
        print(f"fastxent warmup: error: --dtypes: {', '.join(bad)} (use float32,float64)",
              file=sys.stderr)
        return 2
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    for dtype in dtypes:
        for n, c in ((8, 16), (512, 256)):  # serial, then parallel
            x = rng.standard_normal((n, c)).astype(dtype)
            t = rng.integers(0, c, n)
            y = np.eye(c, dtype=dtype)[t]
            kw = dict(backend="numba", check="off")
            fx.SparseSoftmaxCrossEntropy(**kw).loss_gradient(t, x)
            fx.SoftmaxCrossEntropy(**kw).labels_gradient(y, x)
            fx.SparseSoftmaxCrossEntropy(**kw).hessp(t, x, x)
            fx.SigmoidCrossEntropy(**kw).loss_gradient((y > 0).astype(dtype), x)
            fx.SigmoidCrossEntropy(**kw).labels_gradient(None, x)
            for name in ("logsumexp", "softmax", "log_softmax"):
                getattr(fx, name)(x, axis=-1, backend="numba")
            print(f"{time.perf_counter() - started:6.1f} s  {dtype} ({n}, {c})", flush=True)
    print("the Numba kernels are compiled and cached")
    return 0
