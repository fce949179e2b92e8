"""``python -m fastxent tune``: measure this machine and write auto's exceptions.

auto's built-in rule takes the backends by role (the compiled C kernels, then Numba, then
NumPy; ``fastxent._plan``). ``tune`` times every available backend on each cell (label kind x
operation x dtype) over a ladder of class counts, at a problem size that uses every thread
(medians of repeats, outputs preallocated, through the public loss objects), and records
only the cells where another backend beat the role order's first by more than 10%, as bands
of class counts, plus the problem size from which several threads beat one thread on this
machine. The result is a short JSON table (version 2), written to
``~/.config/fastxent/auto_policy.json`` (auto then follows it), or to ``--output``;
``FASTXENT_AUTO_POLICY`` can name any such file.
"""

import json
import os
import platform
import sys
import time

import numpy as np

from .. import _plan, _registry, _threads
from .common import Cell, time_call

CLASSES = (2, 10, 100, 1000, 10000, 65536)
CELLS = [(kind, op) for kind in ("integer", "dense", "sigmoid") for op in ("forward", "fused")]
SIZES = (1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20)
MARGIN = 1.10  # another backend must be this much faster to be recorded


def add_arguments(parser):
    parser.add_argument("--output", "-o", metavar="FILE",
                        help=f"write the table here instead of {_plan.USER_POLICY}")
    parser.add_argument("--dry-run", action="store_true",
                        help="measure and print the table, write nothing")
    parser.add_argument("--quick", action="store_true",
                        help="fewer class counts and repeats (about a minute)")
    parser.add_argument("--elements", type=int, default=1 << 21,
                        help="problem size (elements) for ranking backends (default 2**21; "
                             "at least 2**12)")
    return parser


def _time(cell, op, backend, n_threads, repeat):
    prepare, fn, _ = cell.call(op, backend, n_threads)
    return time_call(fn, repeat, 0.3, prepare)[0]


def measure(elements, repeat, classes, progress):
    """(cells, parallel_min) of the table."""
    names = [b for b in _plan.ROLE_ORDER if _registry.load(b) is not None]
    nt = _threads.get_num_threads()
    cells = []
    todo = [(k, op, dt) for k, op in CELLS for dt in ("float32", "float64")]
    for i, (kind, op, dtype) in enumerate(todo):
        for c in classes:
            cell = Cell(kind, dtype, (max(1, elements // c), c))
            times = {b: _time(cell, op, b, nt, repeat) for b in names}
            best = min(times, key=times.get)
            if times[names[0]] > MARGIN * times[best]:
                order = [best] + [b for b in names if b != best]
                cells.append({"labels": kind, "op": op, "dtype": dtype, "min_classes": c,
                              "max_classes": c, "order": order})
        progress(f"[{i + 1}/{len(todo)}] {kind} {op} {dtype}")
    # widen each exception to the neighbouring class counts it was measured between
    for cell in cells:
        k = classes.index(cell["min_classes"])
        cell["min_classes"] = int(np.sqrt(classes[k - 1] * classes[k])) + 1 if k else 1
        cell["max_classes"] = int(np.sqrt(classes[k] * classes[k + 1])) if k + 1 < len(
            classes) else 1 << 31
    return cells, _parallel_min(names[0], nt, repeat, progress)


def _parallel_min(backend, nt, repeat, progress):
    """Smallest problem (elements) on which nt threads beat one thread by 10%."""
    if nt == 1:
        return _plan.PARALLEL_MIN_ELEMENTS
    for size in SIZES:
        cell = Cell("integer", "float32", (max(2, size // 100), 100))
        one = _time(cell, "fused", backend, 1, repeat * 3)
        many = _time(cell, "fused", backend, nt, repeat * 3)
        if many * MARGIN < one:
            progress(f"threads pay from {size} elements")
            return size
    return SIZES[-1]


def main(args):
    if args.elements < (1 << 12):
        print(f"fastxent tune: error: --elements {args.elements}: use at least 4096",
              file=sys.stderr)
        return 2
    path = args.output or _plan.USER_POLICY
    if not args.dry_run:
        folder = os.path.dirname(os.path.abspath(path))
        if args.output and not os.path.isdir(folder):
            print(f"fastxent tune: error: --output {path}: the folder {folder} does not exist",
                  file=sys.stderr)
            return 2
    started = time.perf_counter()

    def progress(text):
        print(f"{time.perf_counter() - started:6.0f} s  {text}", file=sys.stderr, flush=True)
    progress("measuring (about 2 minutes on 2 cores; --quick about 1)")
    classes = CLASSES[::2] if args.quick else CLASSES
    cells, parallel_min = measure(args.elements, 3 if args.quick else 5, classes, progress)
    table = {"version": 2, "generated_by": "python -m fastxent tune",
             "date": time.strftime("%Y-%m-%d %H:%M"),
             "machine": {"platform": platform.platform(), "threads":
                         _threads.get_num_threads()},
             "parallel_min_elements": parallel_min, "cells": cells}
    _plan.parse_policy(table, path)  # what auto will read back
    text = json.dumps(table, indent=1)
    if args.dry_run:
        print(text)
        return 0
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text + "\n")
    print(text)
    print(f"wrote {path}" + ("" if args.output else " (auto follows it from now on; delete "
                                                    "it to return to the built-in rule)"))
    _plan.reload_policy()
    return 0
