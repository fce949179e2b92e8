"""Time the Numba kernels against the NumPy reference kernels and a memory stream.

Plain Python (not asv). For each target shape: median of repeats, outputs preallocated,
hot cache (one warm-up call). The stream figures are measured in the same run over the same
bytes: a read+write stream (np.copyto of x into a preallocated array) and a read-only
stream (np.add.reduce over rows into a small output, multi-threaded via chunks would need
threads, so it is the single-call figure). "% stream" = stream time / kernel time for the
kernel's dominant traffic (read+write for kernels that write a gradient, read-only for
forward).

    python tools/numba_kernels_bench.py [--threads 2] [--repeat 15] [--quick]
"""

import argparse
import os
import sys
import threading
import time

import numpy as np

from fastxent._backends import numba_ as nb
from fastxent._backends import numpy_ as ref

TARGETS = [
    # (label, kind, shape, dtype, target_ms)
    ("fused sparse f32", "sparse_fused", (2048, 32768), np.float32, 25.0),
    ("forward sparse f32", "sparse_forward", (2048, 32768), np.float32, 17.0),
    ("fused dense f32", "dense_fused", (2048, 32768), np.float32, None),
    ("fused sparse f64", "sparse_fused", (2048, 32768), np.float64, 55.0),
    ("fused sparse f32", "sparse_fused", (4096, 1000), np.float32, 1.4),
    ("fused sparse f32", "sparse_fused", (1_000_000, 3), np.float32, 3.5),
    ("fused sparse f32", "sparse_fused", (256, 10), np.float32, 0.002),
    ("forward sparse f32", "sparse_forward", (1_000_000, 3), np.float32, None),
    ("fused dense f32", "dense_fused", (1_000_000, 3), np.float32, None),
    ("fused sparse f64", "sparse_fused", (1_000_000, 3), np.float64, None),
]


def _median_time(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _threaded_stream(src, dst, n_threads, write):
    """Read(+write) stream over rows split across threads (NumPy releases the GIL)."""
    chunks = np.array_split(np.arange(src.shape[0]), n_threads)
    sink = np.empty((n_threads, src.shape[1]), src.dtype)

    def work(k):
        rows = chunks[k]
        if not len(rows):
            return
        a, b = rows[0], rows[-1] + 1
        if write:
            np.copyto(dst[a:b], src[a:b])
        else:
            np.add.reduce(src[a:b], axis=0, out=sink[k])

    def run():
        if n_threads == 1:
            work(0)
            return
        ts = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    return run


def bench(kind, shape, dtype, n_threads, repeat):
    rng = np.random.default_rng(0)
    n, c = shape
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    t = rng.integers(0, c, n).astype(np.intp)
    y = rng.random(shape).astype(dtype) if kind.startswith("dense") else None
    empty = np.empty(0, dtype)
    scale = np.ones(1, dtype)
    loss, lse, grad = np.empty(n, dtype), np.empty(n, dtype), np.empty(shape, dtype)
    grad.fill(0)
    if kind == "sparse_fused":
        args = (x, t, empty, 0.0, 0.0, False, 0, scale, loss, grad, n_threads)
    elif kind == "sparse_forward":
        args = (x, t, empty, 0.0, 0.0, False, 0, loss, lse, n_threads)
    elif kind == "dense_fused":
        args = (x, y, empty, 0.0, 0.0, scale, loss, grad, n_threads)
    else:
        raise ValueError(kind)
    t_nb = _median_time(lambda: getattr(nb, kind)(*args), repeat)
    t_ref = _median_time(lambda: getattr(ref, kind)(*args), max(3, repeat // 5))
    write = kind != "sparse_forward"
    dst = np.zeros_like(x)
    # starting Python threads costs ~100 us: small problems stream on one thread
    stream_threads = n_threads if x.size >= nb.SERIAL_WORK else 1
    t_stream = _median_time(_threaded_stream(x, dst, stream_threads, write), repeat)
    nbytes = x.nbytes * (2 if write else 1) + (y.nbytes if y is not None else 0)
    if y is not None:  # the stream reads x only; scale by the extra input read
        t_stream *= nbytes / (2 * x.nbytes)
    return t_nb, t_ref, t_stream, nbytes


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="skip the NumPy reference")
    opts = parser.parse_args(argv)
    print(f"threads={opts.threads}  numba threads available={nb._MAX_THREADS}")
    print(f"{'case':20s} {'shape':>16s} {'numba ms':>9s} {'numpy ms':>9s} {'x faster':>8s} "
          f"{'GB/s':>6s} {'stream ms':>9s} {'% stream':>8s} {'target':>7s}")
    for label, kind, shape, dtype, target in TARGETS:
        t_nb, t_ref, t_stream, nbytes = bench(kind, shape, dtype, opts.threads, opts.repeat)
        gbs = nbytes / t_nb / 1e9
        tgt = "" if target is None else f"{target:g}"
        print(f"{label:20s} {str(shape):>16s} {t_nb * 1e3:9.3f} {t_ref * 1e3:9.3f} "
              f"{t_ref / t_nb:8.1f} {gbs:6.1f} {t_stream * 1e3:9.3f} "
              f"{100 * t_stream / t_nb:7.0f}% {tgt:>7s}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
