"""The ``numba`` backend: the C kernels' algorithms compiled by Numba (no C compiler needed at
install time), behind the same ``run(call, n_threads)``.

* Rows: ``_numba_rows`` (one function per family, one signature); launch loops: the
  generated ``_numba_loops`` (a serial loop and a ``prange`` loop per row kernel).
* ``n_threads`` 0 (a problem the plan runs serially) takes the serial loop, no parallel
  launch (~2-5 us); any ``n_threads >= 1`` takes the parallel loop, so the same bits come
  out for any thread count (the two loops are compiled separately and LLVM may vectorise
  them differently).
* Compilation: nothing at ``import fastxent``; each launch loop compiles on its first use
  for the dtypes and read-only pattern of its arguments (a few seconds; only what the call
  needs) and is cached on disk: next to this file when that is writable, else in Numba's
  user cache (``~/.cache/numba``) or ``$NUMBA_CACHE_DIR``. ``python -m fastxent warmup``
  compiles the common kernels ahead of time. With no writable cache directory at all the
  kernels are compiled without a cache (one warning says how to fix it).
* Threads: Numba's own pool, sized per call with ``numba.set_num_threads`` under a
  process-wide lock (the workqueue layer must not be entered by two Python threads at
  once; concurrent callers queue). fastxent leaves Numba's threading layer as the user
  chose it (``NUMBA_THREADING_LAYER``); note that GNU OpenMP's layer aborts a child forked
  after a parallel call: set ``NUMBA_THREADING_LAYER=workqueue`` (or ``tbb``) when forking.
  Contention: see ``_LATE_S`` below.
"""

import os
import threading
import time

import numpy as np

from . import (FAMILIES, LABEL_GRAD, LOGSUMEXP, SIGMOID, SIGMOID_LABEL_GRAD, SIGNAL_BLOCK_ELEMS,
               SOFTMAX, Status)

NAME = "numba"

def _fresh_loops():
    """The generated launch loops, rewritten first when the row kernels changed since they
    were generated (a source checkout; an install regenerates them at build time)."""
    import importlib
    import os
    from . import _numba_gen
    folder = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(folder, "_numba_loops.py")
    current = _numba_gen.sources_hash(folder)
    try:
        with open(path) as f:
            stale = f'SOURCES_HASH = "{current}"' not in f.read()
    except OSError:
        stale = True
    if stale:
        try:
            with open(path, "w") as f:
                f.write(_numba_gen.source(folder))
        except OSError as exc:
            raise ImportError(f"the generated module fastxent._backends._numba_loops is "
                              f"missing or stale and {path} cannot be written ({exc}): "
                              f"reinstall fastxent (pip install .)") from None
    return importlib.import_module("fastxent._backends._numba_loops")


_IMPORT_ERROR = None
try:
    import numba
    _loops = _fresh_loops()
except Exception as exc:  # numba missing, broken, or the loops not generated: say why
    _IMPORT_ERROR = exc


def is_available():
    return _IMPORT_ERROR is None


def why_unavailable():
    if _IMPORT_ERROR is None:
        return ""
    if isinstance(_IMPORT_ERROR, ModuleNotFoundError) and _IMPORT_ERROR.name == "numba":
        return "numba is not installed (pip install numba)"
    if isinstance(_IMPORT_ERROR, ImportError) and "_numba_loops" in str(_IMPORT_ERROR):
        return ("the generated module fastxent._backends._numba_loops is missing: reinstall "
                "fastxent (pip install .), whose build writes it")
    return f"numba could not be used: {type(_IMPORT_ERROR).__name__}: {_IMPORT_ERROR}"


_LAUNCH_LOCK = threading.Lock()


_LAUNCHED = []
#: Contention (as in the C runner, ``_cython/fxe_runner.h``): when another process holds
#: one of our cores, a team thread is descheduled for a time slice and the join waits for
#: it. Tasks are handed out one at a time and timed; when the launch loop finds a thread
#: was away (``_numba_gen``'s late_team: a join wait over _LATE_S), calls run on one thread
#: for _SERIAL_S before trying the team again.
_LATE_S = 300e-6
_SERIAL_S = 0.1
_serial_until = [0.0]
_spells = [0]
_late_ticks = [0]


def _ticks_per_second():
    t0, c0 = time.perf_counter(), _loops.now_ticks()
    time.sleep(0.005)
    t1, c1 = time.perf_counter(), _loops.now_ticks()
    return (c1 - c0) / (t1 - t0)    # 0 where the target has no cycle counter


def _start_threads():
    """Start Numba's threading layer; calibrate the task clock."""
    numba.get_num_threads()
    _late_ticks[0] = int(_LATE_S * _ticks_per_second())
    _LAUNCHED.append(True)


def _new_lock_in_child():
    global _LAUNCH_LOCK
    _LAUNCH_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_in_child)

_ABSENT = {}


def _absent(dtype, ndim):
    """Empty arrays standing for an absent argument (one type per dtype and rank)."""
    key = (dtype, ndim)
    a = _ABSENT.get(key)
    if a is None:
        a = _ABSENT[key] = np.empty((0,) * ndim, dtype)
    return a


def _col(a, dtype):
    """A per-row array as an (n, 1) view; per-element 2-D arrays unchanged; None absent."""
    if a is None:
        return _absent(dtype, 2)
    return a.reshape(-1, 1) if a.ndim == 1 else a


#: elements per task (the C kernels' FXE_TASK_ELEMS), rows per task at least 1
_TASK_ELEMS = 16384


def run(call, n_threads):
    """Run one KernelCall; ``n_threads`` 0: the serial loop; k >= 1: the parallel loop."""
    x = call.x
    n, C = x.shape
    dt = x.dtype
    f1, f2 = _absent(dt, 1), _absent(dt, 2)
    grad = call.grad
    family = call.family
    if family == LOGSUMEXP:
        grad = grad.reshape(-1, 1)
    cw = call.cw
    if cw is None:
        # the sigmoid loops multiply by the positive weights unconditionally (a test of
        # whether they exist, in a loop that also masks NaN, stops LLVM vectorising it)
        cw = np.ones(C, dt) if family == SIGMOID else f1
    A = (x,
         call.y if call.y is not None else f2,
         call.t if call.t is not None else _absent(np.dtype(np.intp), 1),
         cw,
         _col(call.rs, dt),
         call.lse_in if call.lse_in is not None else f1,
         call.coef_in if call.coef_in is not None else f1,
         call.v if call.v is not None else f2,
         _col(call.loss, dt),
         grad if grad is not None else f2,
         call.lse_out if call.lse_out is not None else f1)
    inplace = grad is not None and family != LOGSUMEXP and np.may_share_memory(grad, x)
    n_classes = call.n_classes or C
    if call.cw is None:
        sum_cw = float(n_classes)
    else:
        sum_cw = float(np.sum(call.cw, dtype=np.float64))
    S = (call.ignore_index is not None,
         np.int64(call.ignore_index if call.ignore_index is not None else 0),
         float(call.eps), float(call.eps) / n_classes, float(call.z), float(call.softcap),
         float(call.gscale), sum_cw, bool(call.want_total), bool(call.shard),
         np.int64(call.check), float(call.prob_tol), float(call.label_tol),
         np.int64(1 if FAMILIES[family] == "log_softmax" else 0), bool(inplace))
    if (family == SOFTMAX and call.y is None and call.t is None) or \
            (family == SIGMOID and call.y is None):
        raise ValueError("kernel contract violated: labels are absent")
    cnt = np.zeros(18, np.int64)
    cnt[9:17] = -1
    if n == 0:
        return _status(cnt, 0.0, call.check)
    task = max(1, _TASK_ELEMS // max(C, 1))
    scratch_rows = 2 if family not in (LABEL_GRAD, SIGMOID_LABEL_GRAD, SIGMOID) else 1
    key = FAMILIES[family]
    if family == SOFTMAX:        # variants that compile only the code the call needs
        if call.softcap or call.lse_in is not None:
            key = "softmax_full"
        elif call.check:
            key = "softmax_checked"
    ser, par = _loops.LOOPS[key]
    # super-blocks of whole tasks (totals add up in the same order as in one block), between
    # which Python takes Ctrl-C
    super_rows = max(task, (SIGNAL_BLOCK_ELEMS // max(C, 1)) // task * task)
    total = 0.0
    for r0 in range(0, n, super_rows):
        r1 = min(n, r0 + super_rows)
        if n_threads <= 0:
            total += ser(A, S, r0, r1, task, scratch_rows, cnt)
            continue
        nt = max(1, min(n_threads, numba.config.NUMBA_NUM_THREADS, -(-(r1 - r0) // task)))
        if nt > 1 and time.monotonic() < _serial_until[0]:
            nt = 1
        with _LAUNCH_LOCK:
            if not _LAUNCHED:
                _start_threads()
            numba.set_num_threads(nt)
            total += par(A, S, r0, r1, task, scratch_rows, cnt, nt, _late_ticks[0])
        if cnt[17]:
            cnt[17] = 0
            _serial_until[0] = time.monotonic() + _SERIAL_S
            _spells[0] += 1
    return _status(cnt, total, call.check)


def build_info():
    """The CPU Numba compiles for and the contention spells so far (for show_config)."""
    if _IMPORT_ERROR is not None:
        return {"available": False, "reason": why_unavailable()}
    from llvmlite import binding
    return {"available": True,
            "cpu_name": numba.config.CPU_NAME or binding.get_host_cpu_name(),
            "one_thread_spells": _spells[0]}


def _status(cnt, total, check):
    from . import DIAG
    if not check:
        return Status(int(cnt[0]), float(total), None, None)
    return Status(int(cnt[0]), float(total), {k: int(cnt[1 + i]) for i, k in enumerate(DIAG)},
                  {k: int(cnt[9 + i]) for i, k in enumerate(DIAG)})
