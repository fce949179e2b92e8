"""``python -m fastxent tune``: measure this machine and write the "auto" policy table.

For every cell (label kind x operation x dtype) and a ladder of class counts, every available
backend's kernel is timed twice (median of repeats, outputs preallocated, hot cache) on a problem
big enough to use every thread and on a small one on one thread (per-call cost); the
backends are ranked per class count for each, and adjacent class
counts become bands split at their geometric mean. Then, for the winning backend, the
smallest problem (in elements) on which several threads beat one thread by 10% becomes the
band's ``parallel_from``. The table is written as JSON; ``FASTXENT_AUTO_POLICY=<file>`` or
``--install`` (to ~/.config/fastxent/auto_policy.json) makes it the default.
"""

import json
import math
import os
import platform
import time

import numpy as np

from . import _dispatch, _registry, _threads

CLASSES = (2, 3, 10, 100, 1000, 10000, 32768)
CELLS = [(kind, op) for kind in ("sparse", "dense", "sigmoid") for op in
         ("forward", "fused", "backward")] + [("util", "logsumexp"), ("util", "log_softmax")]
SIZES = (1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20, 1 << 22)
SMALL = 2560  # elements of a "small" problem, ranked on one thread: (256, 10)


def add_arguments(parser):
    parser.add_argument("--output", "-o", default="auto_policy.json",
                        help="where to write the table (default: ./auto_policy.json)")
    parser.add_argument("--install", action="store_true",
                        help=f"write it to {_dispatch.USER_POLICY}, which auto then uses")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and sizes")
    parser.add_argument("--elements", type=int, default=1 << 21,
                        help="problem size for ranking backends (default 2**21 elements)")


def _args(module, kind, op, x, y, t, out, nt):
    """Kernel name and arguments for one timed call (the kernel table's argument order)."""
    dtype = x.dtype
    e = np.empty(0, dtype)
    n = x.shape[0]
    one = np.ones(1, dtype)
    if kind == "util":
        return getattr(module, op), (x, out if op != "logsumexp" else np.empty(n, dtype), nt)
    fn = getattr(module, f"{kind}_{op}")
    loss = np.empty(n, dtype)
    if kind == "dense":
        head = (x, y, e, 0.0, 0.0)
    elif kind == "sparse":
        head = (x, t, e, 0.0, 0.0, False, 0)
    else:
        head = (x, y, e, 0.0)
        one = np.ones((1, 1), dtype)
    if op == "forward":
        return fn, head + ((loss, e, nt) if kind != "sigmoid" else (loss, nt))
    if op == "backward":
        return fn, head + ((one, e, out, nt) if kind != "sigmoid" else (one, out, nt))
    return fn, head + (one, loss, out, nt)


def _time(fn, args, repeat):
    fn(*args)  # compile / page in
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _problem(n_rows, n_classes, dtype, rng):
    x = rng.standard_normal((n_rows, n_classes)).astype(dtype)
    y = rng.random((n_rows, n_classes)).astype(dtype)
    t = rng.integers(0, n_classes, n_rows).astype(np.intp)
    return x, y, t, np.empty_like(x)


def measure(elements=1 << 21, repeat=7, sizes=SIZES, progress=print):
    rng = np.random.default_rng(0)
    names = _registry.available_backends()
    nt = _threads.get_num_threads()
    cells, raw = {}, {}
    for kind, op in CELLS:
        for dtype in (np.float32, np.float64):
            key = f"{kind}/{op}/{np.dtype(dtype).name}"
            ranked = []
            for c in CLASSES:
                orders = []
                for size, threads, reps in ((elements, nt, repeat), (SMALL, 1, repeat * 20)):
                    x, y, t, out = _problem(max(1, size // c), c, dtype, rng)
                    timings = {name: _time(*_args(_registry.load(name), kind, op, x, y, t, out,
                                                  threads), reps) for name in names}
                    raw[f"{key}/{c}/{size}"] = timings
                    orders.append(sorted(timings, key=timings.get))
                ranked.append((c, orders))
            bands = []
            for i, (c, (order, small_order)) in enumerate(ranked):
                upper = (int(math.sqrt(c * ranked[i + 1][0])) if i + 1 < len(ranked)
                         else 1 << 62)
                best = _registry.load(order[0])
                bands.append({"max_classes": upper, "order": order, "small_order": small_order,
                              "parallel_from": _parallel_from(best, kind, op, c, dtype, nt,
                                                              repeat, sizes, rng)})
            cells[key] = _merge(bands)
            progress(f"{key}: " + ", ".join(f"<= {b['max_classes']}: {'>'.join(b['order'])} "
                                            f"(threads from {b['parallel_from']})"
                                            for b in cells[key]))
    cells["default"] = [{"max_classes": 1 << 62, "order": ["cython", "numba", "numpy"],
                         "small_order": ["cython", "numba", "numpy"], "parallel_from": 1 << 15}]
    return {"generated_by": "python -m fastxent tune",
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": {"platform": platform.platform(), "processor": platform.processor(),
                        "threads": nt, "backends": list(names)},
            "cells": cells, "timings_s": raw}


def _parallel_from(module, kind, op, n_classes, dtype, nt, repeat, sizes, rng):
    """Smallest size (elements) at which ``nt`` threads beat one thread by 10%."""
    if nt == 1:
        return 1 << 62
    for size in sizes:
        x, y, t, out = _problem(max(1, size // n_classes), n_classes, dtype, rng)
        one = _time(*_args(module, kind, op, x, y, t, out, 1), repeat * 3)
        many = _time(*_args(module, kind, op, x, y, t, out, nt), repeat * 3)
        if many < 0.9 * one:
            return size
    return 1 << 62


def _merge(bands):
    """Join adjacent bands that decide alike (same orders and thread cut-over)."""
    merged = []
    keys = ("order", "small_order", "parallel_from")
    for band in bands:
        if merged and all(merged[-1][k] == band[k] for k in keys):
            merged[-1]["max_classes"] = band["max_classes"]
        else:
            merged.append(dict(band))
    return merged


def main(args):
    quick = getattr(args, "quick", False)
    table = measure(elements=args.elements, repeat=3 if quick else 7,
                    sizes=SIZES[::2] if quick else SIZES)
    path = _dispatch.USER_POLICY if args.install else args.output
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(table, f, indent=1)
    print(f"wrote {path}" + ("" if args.install else
                             f"; use it with FASTXENT_AUTO_POLICY={os.path.abspath(path)} "
                             f"or install it with --install"))
    return 0
