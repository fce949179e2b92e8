"""``python -m fastxent overhead``: the per-call cost of the Python layers, per backend.

For a small problem (default (256, 10) float32, integer labels, ``reduction="mean"``,
``n_threads=1``) it measures in one run:

* the whole public call, ``SparseSoftmaxCrossEntropy(...).loss_gradient(y, x,
  gradient_out=g)`` (and ``loss`` for the forward);
* the kernel work of such a call: the same call on a batch 64 times larger, divided by 64
  (the fixed costs amortised away);
* one ``np.add(a, b, out=c)`` on 10-element arrays, the unit.

The three are sampled in interleaved rounds and the best of each is kept (a shared
machine's slow moments then hit all three alike).

The overhead is (whole call - kernel work), reported in units of np.add.
"""

import sys

import numpy as np

from .. import _plan
from .common import interleaved, loss_object

SCALE = 64


def add_arguments(parser):
    parser.add_argument("--rows", type=int, default=256, help="rows of the small batch")
    parser.add_argument("--classes", type=int, default=10, help="classes")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--repeat", type=int, default=15, help="samples per timing (>= 1)")
    return parser


def measure(rows=256, classes=10, dtype="float32", repeat=15):
    """{backend: {op: (whole s, kernel s, overhead in np.add units)}}, and the unit (s)."""
    rng = np.random.default_rng(0)
    a, b, c = (np.ones(10) for _ in range(3))
    x = rng.standard_normal((rows, classes)).astype(dtype)
    t = rng.integers(0, classes, rows)
    xl = rng.standard_normal((rows * SCALE, classes)).astype(dtype)
    tl = rng.integers(0, classes, rows * SCALE)
    g, gl = np.empty_like(x), np.empty_like(xl)
    result, units = {}, []
    for name in _plan.available_backends():
        obj = loss_object("integer", name, 1, reduction="mean")
        calls = {"fused": (lambda: obj.loss_gradient(t, x, gradient_out=g),
                           lambda: obj.loss_gradient(tl, xl, gradient_out=gl)),
                 "forward": (lambda: obj.loss(t, x), lambda: obj.loss(tl, xl))}
        result[name] = {}
        for op, (small, large) in calls.items():
            res = interleaved({"unit": lambda: np.add(a, b, out=c), "whole": small,
                               "kernel": large}, repeat, sample_s=2e-3)
            unit, whole, kernel = (res[k][0] for k in ("unit", "whole", "kernel"))
            kernel /= SCALE
            units.append(unit)
            result[name][op] = (whole, kernel, (whole - kernel) / unit)
    return result, min(units)


def main(args):
    if args.repeat < 1 or args.rows < 1 or args.classes < 1:
        print("fastxent overhead: error: --rows, --classes and --repeat must be >= 1",
              file=sys.stderr)
        return 2
    result, unit = measure(args.rows, args.classes, args.dtype, args.repeat)
    print(f"({args.rows}, {args.classes}) {args.dtype}, integer labels, reduction='mean', "
          f"n_threads=1, check='off'; one np.add on 10 elements: {unit * 1e6:.2f} us")
    print(f"{'backend':<8} {'op':<8} {'call us':>8} {'kernel us':>10} {'overhead us':>12} "
          f"{'x np.add':>9}")
    for name, ops in result.items():
        for op, (whole, kernel, ratio) in ops.items():
            print(f"{name:<8} {op:<8} {whole * 1e6:8.2f} {kernel * 1e6:10.2f} "
                  f"{(whole - kernel) * 1e6:12.2f} {ratio:9.1f}")
    return 0
