"""Memory-stream reference measurements: how fast can *anything* move these bytes here?

A cross-entropy kernel on a large batch is bound by memory traffic, so the honest yardstick
for its speed is the bandwidth of the simplest code that moves the same bytes, measured in
the same process, on the same buffers' sizes and with the same thread count:

* ``"read"`` stream (for forward, which reads logits and writes only ``n`` losses): a
  reduction over a buffer of the bytes read (``np.max`` / ``np.add.reduce``, the faster of
  the two);
* ``"copy"`` stream (for fused forward+backward and backward, which read logits and write a
  gradient of the same size): ``np.copyto`` of a logits-sized buffer into a preallocated one
  (bytes moved = read + write).

NumPy's reductions and copies release the GIL, so ``n_threads > 1`` runs the same operation
on ``n_threads`` contiguous chunks from a thread pool (a chunked parallel stream). The result
for ``n_threads`` is the best of the serial and the chunked stream at that size: for small
buffers a thread launch costs more than the copy, and the "limit" is what the best simple
code achieves. Only NumPy and the standard library are used (no JIT), so this works with any
subset of backends available.
"""

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["stream_gbps", "measure", "clear_cache"]

_cache = {}
_pools = {}


def _pool(n_threads):
    if n_threads not in _pools:
        _pools[n_threads] = ThreadPoolExecutor(n_threads, thread_name_prefix="fastxent-stream")
    return _pools[n_threads]


def clear_cache():
    """Forget cached measurements and free the buffers (they can be large)."""
    _cache.clear()


def _best_time(fn, budget, max_repeat=50, min_repeat=3):
    """Best (minimum) wall time of ``fn`` over repeats within ``budget`` seconds.

    The best is the right statistic for a *limit*: it is the least disturbed sample.
    ``fn`` is run once first (page faults, thread start-up), untimed.
    """
    fn()
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    number = max(1, int(2e-3 / max(one, 1e-9)))  # a sample of >= ~2 ms beats timer noise
    best = one
    start = time.perf_counter()
    for i in range(max_repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
        if i + 1 >= min_repeat and time.perf_counter() - start > budget:
            break
    return best


def _ops(pattern, src, dst, n_threads):
    """Candidate callables that move the pattern's bytes (serial, then chunked parallel)."""
    if pattern == "read":
        serial = [lambda: np.max(src), lambda: np.add.reduce(src)]
    elif pattern == "copy":
        serial = [lambda: np.copyto(dst, src)]
    else:
        raise ValueError(f"pattern={pattern!r} is not 'read' or 'copy'")
    if n_threads <= 1 or src.size < 2 * n_threads:
        return serial
    pool = _pool(n_threads)
    chunks = np.array_split(src, n_threads)
    if pattern == "read":
        par = [lambda: list(pool.map(np.max, chunks)),
               lambda: list(pool.map(np.add.reduce, chunks))]
    else:
        dchunks = np.array_split(dst, n_threads)
        par = [lambda: list(pool.map(np.copyto, dchunks, chunks))]
    return serial + par


def measure(pattern, nbytes, n_threads=1, dtype=np.float64, budget=0.2):
    """Measure a stream of ``nbytes`` and return a dict (cached per arguments).

    Keys: ``pattern``, ``nbytes`` (buffer size), ``moved`` (bytes moved per pass: ``nbytes``
    for read, ``2 * nbytes`` for copy), ``seconds`` (best time per pass), ``gbps``,
    ``n_threads``, ``how`` (which variant was fastest).
    """
    dtype = np.dtype(dtype)
    n = max(1, int(nbytes) // dtype.itemsize)
    key = (pattern, n, int(n_threads), dtype.str)
    if key in _cache:
        return _cache[key]
    src = np.empty(n, dtype)
    src.fill(1)  # touch every page: no page faults inside the timing
    dst = np.empty(n, dtype) if pattern == "copy" else None
    if dst is not None:
        dst.fill(0)
    names = (["max", "sum"] if pattern == "read" else ["copyto"])
    labels = [f"{nm} x1" for nm in names] + [f"{nm} x{n_threads} chunks" for nm in names]
    best = None
    for label, fn in zip(labels, _ops(pattern, src, dst, int(n_threads))):
        t = _best_time(fn, budget / 2)
        if best is None or t < best[0]:
            best = (t, label)
    moved = src.nbytes * (2 if pattern == "copy" else 1)
    result = {"pattern": pattern, "nbytes": int(src.nbytes), "moved": int(moved),
              "seconds": best[0], "gbps": moved / best[0] / 1e9, "n_threads": int(n_threads),
              "how": best[1]}
    _cache[key] = result
    return result


def stream_gbps(pattern, nbytes, n_threads=1, dtype=np.float64, budget=0.2):
    """Bandwidth in GB/s (1e9 bytes/s) of the ``pattern`` stream over ``nbytes``."""
    return measure(pattern, nbytes, n_threads, dtype, budget)["gbps"]
