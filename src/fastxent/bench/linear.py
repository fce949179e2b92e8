"""``python -m fastxent linbench``: the fused linear + softmax cross-entropy against its
GEMMs and PyTorch, and its memory, measured side by side in one run::

    python -m fastxent linbench [--shape 2048x128x65536] [--threads 2] [--repeats 5]
                                [--memory-shape 4096x256x131072] [--no-memory] [--no-torch]

Time (float32, N x D inputs, V x D weight, integer labels, reduction "mean"): in
alternation, ``repeats`` rounds of

* ``gemm x3``: the three GEMMs of a linear layer's forward and backward with full
  preallocated buffers by NumPy's BLAS (``Z = X W^T``, ``dZ W``, ``dZ^T X``): the floor any
  implementation that goes through the logits pays;
* ``gemm x1``: the first of them alone (the floor of a forward);
* ``fastxent loss_gradient`` and ``fastxent loss`` (:class:`fastxent.LinearSoftmaxCrossEntropy`);
* ``torch chunked`` (``torch.nn.functional.linear_cross_entropy`` with
  ``LinearCrossEntropyOptions()``, forward + backward) and ``torch plain`` (``F.linear``,
  ``F.cross_entropy``, backward), when torch is installed,

with BLAS, fastxent and torch all capped at ``--threads`` (torch runs ``--torch-repeats``
rounds). The table gives the median and the minimum and the ratio of medians to
``gemm x3`` (``gemm x1`` for forwards).

Memory: a fresh Python process per contender makes the inputs, warms the code up on a tiny
problem, then runs one forward + backward at ``--memory-shape``; the figure is its peak
resident memory (``VmHWM``, the peak of its own memory map; ``ru_maxrss`` where there is
no /proc) minus the resident memory just before the call (inputs,
libraries) minus the gradients it returns (its outputs, the same bytes for every
contender): what the call holds beyond its inputs and outputs.
"""

import json
import statistics
import subprocess
import sys
import time

import numpy as np


def _shape(text):
    parts = [int(float(p.replace("_", ""))) for p in text.lower().split("x")]
    if len(parts) != 3 or min(parts) < 1:
        raise ValueError(f"shape {text!r} is not NxDxV (e.g. 2048x128x65536)")
    return tuple(parts)


def add_arguments(parser):
    parser.add_argument("--shape", default="2048x128x65536", help="N x D x V for the timings")
    parser.add_argument("--memory-shape", default="4096x256x131072",
                        help="N x D x V for the peak memory")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--backend", default=None)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-time", action="store_true")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--torch-repeats", type=int, default=1,
                        help="rounds for the torch contenders (its chunked path takes ~25 s "
                             "a call at the default shape on 2 cores)")
    return parser


def _data(N, D, V, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, D), dtype=np.float32)
    W = rng.standard_normal((V, D), dtype=np.float32) * np.float32(D ** -0.5)
    b = rng.standard_normal(V, dtype=np.float32) * np.float32(0.1)
    t = rng.integers(0, V, N)
    return X, W, b, t


def _contenders(args, N, D, V):
    """name -> (callable, floor name)."""
    import fastxent as fx
    X, W, b, t = _data(N, D, V)
    Z = np.empty((N, V), np.float32)
    GX, GW = np.empty((N, D), np.float32), np.empty((V, D), np.float32)
    out = {
        "gemm x3": (lambda: (np.matmul(X, W.T, out=Z), np.matmul(Z, W, out=GX),
                             np.matmul(Z.T, X, out=GW)), None),
        "gemm x1": (lambda: np.matmul(X, W.T, out=Z), None),
    }
    loss = fx.LinearSoftmaxCrossEntropy(chunk_size=args.chunk_size, backend=args.backend,
                                        n_threads=args.threads)
    out["fastxent loss_gradient"] = (lambda: loss.loss_gradient(t, X, W, b), "gemm x3")
    out["fastxent loss"] = (lambda: loss.loss(t, X, W, b), "gemm x1")
    if not args.no_torch:
        try:
            import torch
            import torch.nn.functional as F
        except ImportError:
            torch = None
        if torch is not None:
            torch.set_num_threads(args.threads)
            xt = torch.from_numpy(X).requires_grad_()
            wt = torch.from_numpy(W).requires_grad_()
            bt = torch.from_numpy(b).requires_grad_()
            tt = torch.from_numpy(t)
            if hasattr(F, "linear_cross_entropy"):
                opts = torch.nn.LinearCrossEntropyOptions()

                def torch_chunked():
                    xt.grad = wt.grad = bt.grad = None
                    F.linear_cross_entropy(xt, wt, tt, linear_bias=bt,
                                           options=opts).backward()
                out[f"torch {torch.__version__} chunked"] = (torch_chunked, "gemm x3")

            def torch_plain():
                xt.grad = wt.grad = bt.grad = None
                F.cross_entropy(F.linear(xt, wt, bt), tt).backward()
            out[f"torch {torch.__version__} plain"] = (torch_plain, "gemm x3")
    return out


def run_time(args):
    import fastxent as fx
    from threadpoolctl import threadpool_limits
    N, D, V = _shape(args.shape)
    print(f"time: N={N} D={D} V={V} float32, integer labels, mean; {args.threads} threads "
          f"(BLAS, fastxent, torch); median / min of {args.repeats} rounds, in alternation")
    with threadpool_limits(limits=args.threads, user_api="blas"), fx.threads(args.threads):
        cont = _contenders(args, N, D, V)
        for f, _ in cont.values():  # warm-up: JIT, first touch, thread pools
            f()
        times = {name: [] for name in cont}
        for k in range(args.repeats):
            for name, (f, _) in cont.items():
                if name.startswith("torch") and k >= args.torch_repeats:
                    continue
                t0 = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{'':<28} {'median s':>9} {'min s':>9} {'/ floor':>8}")
    for name, (_, floor) in cont.items():
        ratio = f"{med[name] / med[floor]:7.2f}x" if floor else f"{'':>8}"
        print(f"{name:<28} {med[name]:9.4f} {min(times[name]):9.4f} {ratio}"
              + (f"  ({floor})" if floor else ""))
    return med


_MEMORY_CHILD = r"""
import json, resource, sys
import numpy as np
mode, N, D, V, threads = sys.argv[1], *map(int, sys.argv[2:6])

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

def peak_rss():
    # VmHWM: the peak of this process's own memory map. ru_maxrss would do on a quiet
    # parent, but Linux carries the parent's peak over fork + exec into the child's
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

rng = np.random.default_rng(0)
X = rng.standard_normal((N, D), dtype=np.float32)
W = rng.standard_normal((V, D), dtype=np.float32) * np.float32(D ** -0.5)
b = np.zeros(V, np.float32)
t = rng.integers(0, V, N)
small = (t[:8] % 16, X[:8], W[:16], b[:16])
if mode == "fastxent":
    import fastxent as fx
    loss = fx.LinearSoftmaxCrossEntropy(n_threads=threads)
    def call(t, X, W, b):
        return loss.loss_gradient(t, X, W, b)[1:]
else:
    import torch, torch.nn.functional as F
    torch.set_num_threads(threads)
    opts = torch.nn.LinearCrossEntropyOptions() if mode == "torch-chunked" else None
    def call(t, X, W, b):
        xt, wt, bt = (torch.from_numpy(a).requires_grad_() for a in (X, W, b))
        if opts is None:
            F.cross_entropy(F.linear(xt, wt, bt), torch.from_numpy(t)).backward()
        else:
            F.linear_cross_entropy(xt, wt, torch.from_numpy(t), linear_bias=bt,
                                   options=opts).backward()
        return xt.grad, wt.grad, bt.grad
call(*small)  # imports, compilation, thread pools
before = rss()
grads = call(t, X, W, b)
peak = peak_rss()
# the gradients are the call's outputs (allocated by it): the same bytes for every mode
print(json.dumps({"before": before, "peak": peak, "outputs": X.nbytes + W.nbytes + b.nbytes}))
"""


def run_memory(args):
    N, D, V = _shape(args.memory_shape)
    print(f"\nmemory: N={N} D={D} V={V} float32 (the logits would be "
          f"{N * V * 4 / 2**20:.0f} MiB); peak RSS of one loss_gradient beyond inputs, "
          f"outputs and libraries, fresh process each")
    modes = ["fastxent"]
    if not args.no_torch:
        try:
            import torch.nn.functional as F
            modes += (["torch-chunked"] if hasattr(F, "linear_cross_entropy") else []) + \
                ["torch-plain"]
        except ImportError:
            pass
    result = {}
    for mode in modes:
        proc = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, mode, str(N), str(D),
                               str(V), str(args.threads)], capture_output=True, text=True)
        if proc.returncode:
            print(f"{mode:<16} failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        extra = (r["peak"] - r["before"] - r["outputs"]) / 2**20
        result[mode] = extra
        print(f"{mode:<16} {extra:8.0f} MiB")
    return result


def main(args):
    if not args.no_time:
        run_time(args)
    if not args.no_memory:
        run_memory(args)
    return 0
