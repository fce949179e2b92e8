"""Timings of the cython backend's kernels against the NumPy reference and memory streams.

Plain script (no asv yet): ``python tools/cython_kernels_bench.py [--threads 2]
[--repeat 15] [--quick] [--only NAME]``. For each target shape: the median of repeated calls
with preallocated outputs and a hot cache, for

* the cython kernel (n_threads as given),
* the NumPy reference kernel (``fastxent._backends.numpy_``; it allocates temporaries),
* a read+write stream of the same bytes (``np.copyto`` of x into a buffer like the grad,
  split over the same number of Python threads; NumPy releases the GIL while copying),
* a read stream of x (``np.max`` over row blocks, threaded the same way),

all in the same run, printed as ms, GB/s (bytes of x read + outputs written) and % of the
stream (stream time / kernel time: 100% = as fast as copying the data).
"""

import argparse
import os
import statistics
import sys
import threading
import time

# NumPy's BLAS threads are not used here; keep them from spinning on the cores we measure.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY"):
    os.environ.setdefault(_var, "1" if _var == "OPENBLAS_NUM_THREADS" else "PASSIVE")

import numpy as np  # noqa: E402

from fastxent._backends import cython_ as cy  # noqa: E402
from fastxent._backends import numpy_ as ref  # noqa: E402


def median_ms(fn, repeat, min_time=0.0):
    fn()  # warm up (page faults, thread pool)
    times = []
    t_end = time.perf_counter() + min_time
    while len(times) < repeat or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def median_ms_batched(fn, repeat, batch):
    """For microsecond calls: median over `repeat` batches of `batch` calls, per call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        times.append((time.perf_counter() - t0) / batch)
    return statistics.median(times) * 1e3


def threaded(parts):
    """Run callables in parallel Python threads (serially if one)."""
    if len(parts) == 1:
        return parts[0]

    def run():
        ths = [threading.Thread(target=p) for p in parts]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
    return run


def streams(x, out, n_threads):
    """(read+write stream, read stream) callables over the rows of x split n_threads ways."""
    bounds = np.linspace(0, x.shape[0], n_threads + 1).astype(int)
    copies = [lambda a=a, b=b: np.copyto(out[a:b], x[a:b]) for a, b in zip(bounds, bounds[1:])]
    reads = [lambda a=a, b=b: x[a:b].max() for a, b in zip(bounds, bounds[1:])]
    return threaded(copies), threaded(reads)


def case_data(n, c, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c), dtype=np.float32).astype(dtype, copy=False) * 3
    t = rng.integers(0, c, n).astype(np.intp)
    return x, t


CASES = [
    # name, shape, dtype, kernel, target ms (None: report only)
    ("sparse_fused f32 2048x32768", (2048, 32768), np.float32, "sparse_fused", 25.0),
    ("sparse_forward f32 2048x32768", (2048, 32768), np.float32, "sparse_forward", 17.0),
    ("dense_forward f32 2048x32768", (2048, 32768), np.float32, "dense_forward", None),
    ("sparse_fused f64 2048x32768", (2048, 32768), np.float64, "sparse_fused", 55.0),
    ("sparse_fused f32 4096x1000", (4096, 1000), np.float32, "sparse_fused", 1.4),
    ("dense_fused f32 4096x1000", (4096, 1000), np.float32, "dense_fused", None),
    ("sparse_fused f32 1000000x3", (1_000_000, 3), np.float32, "sparse_fused", 3.5),
    ("sparse_fused f32 256x10 (call overhead)", (256, 10), np.float32, "sparse_fused", 0.001),
]


def make_call(module, kernel, x, t, y, scale, loss, lse, grad, n_threads):
    e = np.empty(0, x.dtype)
    if kernel == "sparse_fused":
        return lambda: module.sparse_fused(x, t, e, 0.0, 0.0, False, 0, scale, loss, grad,
                                           n_threads)
    if kernel == "sparse_forward":
        return lambda: module.sparse_forward(x, t, e, 0.0, 0.0, False, 0, loss, lse, n_threads)
    if kernel == "dense_forward":
        return lambda: module.dense_forward(x, y, e, 0.0, 0.0, loss, lse, n_threads)
    if kernel == "dense_fused":
        return lambda: module.dense_fused(x, y, e, 0.0, 0.0, scale, loss, grad, n_threads)
    raise ValueError(kernel)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="skip the NumPy reference")
    ap.add_argument("--only", default="", help="substring of the case names to run")
    args = ap.parse_args(argv)
    if not cy.is_available():
        sys.exit(f"cython backend unavailable: {cy.why_unavailable()}")
    info = cy.build_info()
    print(f"cython build: simd={info['simd']} openmp={info['openmp']} "
          f"flags='{info['compile_flags']}' threads={args.threads} cpus={os.cpu_count()}")
    hdr = (f"{'case':42s} {'cython ms':>10s} {'GB/s':>6s} {'numpy ms':>9s} {'x faster':>8s} "
           f"{'rw-stream ms':>12s} {'%rw':>5s} {'rd-stream ms':>12s} {'target':>7s}")
    print(hdr)
    for name, (n, c), dtype, kernel, target in CASES:
        if args.only and args.only not in name:
            continue
        x, t = case_data(n, c, dtype)
        dense = kernel.startswith("dense")
        y = np.full_like(x, 1.0 / c) if dense else None
        scale = np.ones(1, dtype)
        loss, lse = np.empty(n, dtype), np.empty(n, dtype)
        fused = kernel.endswith("fused")
        grad = np.empty_like(x) if fused else None
        fn = make_call(cy, kernel, x, t, y, scale, loss, lse, grad, args.threads)
        small = n * c < 100_000
        if small:
            ms = median_ms_batched(fn, args.repeat, 2000)
        else:
            ms = median_ms(fn, args.repeat, min_time=0.3)
        # bytes: x read (+ y read) + outputs written (+ labels read)
        nbytes = x.nbytes + (y.nbytes if dense else t.nbytes) + loss.nbytes
        nbytes += grad.nbytes if fused else lse.nbytes
        out = np.empty_like(x)
        rw, rd = streams(x, out, args.threads)
        if small:
            rw_ms = median_ms_batched(rw, args.repeat, 200)
            rd_ms = median_ms_batched(rd, args.repeat, 200)
        else:
            rw_ms = median_ms(rw, args.repeat)
            rd_ms = median_ms(rd, args.repeat)
        stream_ref = rw_ms if fused else rd_ms  # fused writes a grad; forward only reads
        if args.quick:
            np_ms = float("nan")
        else:
            gref = np.empty_like(x) if fused else None
            fref = make_call(ref, kernel, x, t, y, scale, np.empty(n, dtype), np.empty(n, dtype),
                             gref, 1)
            np_ms = median_ms(fref, max(3, args.repeat // 3)) if not small else \
                median_ms_batched(fref, args.repeat, 50)
            del gref
        tgt = "" if target is None else (f"{target * 1e3:.1f}us" if target < 0.01 else
                                          f"{target:.1f}")
        unit = 1e3 if small else 1.0
        print(f"{name:42s} {ms * unit:10.3f}{'us' if small else '  '}"
              f"{nbytes / ms / 1e6:6.1f} {np_ms * unit:9.3f} {np_ms / ms:8.1f} "
              f"{rw_ms * unit:12.3f} {100 * stream_ref / ms:5.0f} {rd_ms * unit:12.3f} {tgt:>7s}",
              flush=True)
        del x, y, grad, out
    print("(%rw: the stream time of the same bytes over the kernel time; for forward kernels "
          "the read stream is used. small cases in microseconds.)")


if __name__ == "__main__":
    main()
