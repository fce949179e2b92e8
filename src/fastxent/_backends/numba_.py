"""Numba backend: the NumPy reference maths as fused, vectorised, multi-threaded row loops.

Design choices
--------------
* **One row at a time, few passes.** Each kernel is a ``*_row`` function in
  ``_numba_kernels`` built from the helpers in ``_numba_rows``; for the fused softmax
  kernels: pass 1 max (reads the row from memory), pass 2 exp(x - max) stored into the
  gradient buffer while summing it and the label terms, pass 3 rewrites the gradient in
  place. Passes 2 and 3 hit L2 (a 100k-class float32 row is 400 kB). Nothing of size n x C
  is ever allocated.
* **Few classes: blocks of rows.** Up to ``SMALL_C`` classes the softmax forward, backward
  and fused kernels (dense and sparse) run ``*_small_*`` kernels instead: a fixed block of
  rows is copied class-major into per-thread scratch and every step (max, exp, sums, a
  vector log of the row sums, loss, gradient) is a loop across the block's rows, so it
  vectorises for any C; per-row helper calls cost more than the work below ~64 classes.
  Block boundaries depend on the shape only and those sums run in class order without
  reassociation, so the bits still do not depend on the thread count; the block is read
  before anything is written, so in place needs no special case. Chunks of blocks are
  split statically over the threads (``n_threads`` passed in).
* **Vectorised maths without SVML.** ``_numba_math`` provides exp (Cody-Waite reduction,
  polynomial, 2**n from exponent bits), log/log1p and an ``llvm.maxnum`` max, compiled
  without ``reassoc`` so LLVM can vectorise but not re-associate them (float32 exp <= 1
  ulp, float64 <= 2 ulp, -inf -> 0 exactly, NaN -> NaN). Where the argument is known to
  be <= 0 (x - row max, -|x|) ``fexp_neg`` drops the overflow handling and the second
  2**n factor and flushes results below the normal range to 0 (same bits elsewhere).
  Row code uses ``fastmath={'nsz', 'arcp', 'contract', 'reassoc'}`` (no nnan/ninf: masked
  -inf logits contribute exactly 0 and NaN stays in its row) and ``error_model='numpy'``.
* **Accumulators.** Sums run over blocks of 512 classes in the input dtype (vector partial
  sums) and the block sums are added in float64: float32 losses are more accurate than
  NumPy's pairwise float32 sums (tested) at float32 vector speed. Row scalars (log of the
  sum, loss, gradient multiplier) are float64 (small-C kernels: log and the gradient
  multiplier in the data type, loss in float64).
* **Threads.** ``prange`` over rows; each row is computed entirely by one thread with the
  same code, so the bits do not depend on ``n_threads``. Problems below ``SERIAL_WORK``
  elements and one-row problems run a serial compilation of the same row code (a parallel
  launch costs 1.5-3 us, more than a small kernel). That choice depends on the shape
  only: LLVM may vectorise the two compilations differently (another summation order),
  so larger problems run the parallel code even for ``n_threads == 1``.
* **Threading layer: a fork-safe one (workqueue, or TBB when installed) behind a
  process-wide lock.** Numba's default order picks GNU OpenMP when present, which aborts
  a child forked after a parallel call, so on load this module sets
  ``numba.config.THREADING_LAYER = 'forksafe'`` -- only if the user left it at 'default'
  and no parallel Numba code has run yet (the layer is chosen once per process; a user's
  explicit choice wins). workqueue aborts the process if two Python threads launch
  parallel kernels at once, so every parallel launch holds ``_LAUNCH_LOCK`` (concurrent
  callers serialise on the parallel part; serial small problems run concurrently, without
  the GIL); the lock is re-created in a forked child (``os.register_at_fork``) in case
  another thread held it at the fork. TBB would be thread-safe without the lock but is an
  extra dependency (``pip install tbb``). ``numba.set_num_threads`` is per calling thread,
  so it is set under the lock at every parallel launch.
* **Compilation and cache.** Nothing is compiled at import (``import fastxent`` does not
  even import this module: the registry loads it on first use). Each kernel compiles on
  first use for the dtype and read-only pattern it is called with (float32/float64,
  C-contiguous, possibly read-only: the wrappers pass every scalar as float/bool/int so no
  other specialisation can occur) and the machine code is cached on disk (``cache=True``):
  next to this file in ``__pycache__`` when that is writable, otherwise in Numba's
  user-wide cache directory (``~/.cache/numba`` or ``$XDG_CACHE_HOME/numba``), or in
  ``$NUMBA_CACHE_DIR`` when set. A read-only site-packages therefore still caches. A fresh
  process loading a kernel from the cache takes well under a second (mostly ``import
  numba``); a cold compile takes a few seconds per kernel and dtype.
"""

import os
import threading

import numpy as np

NAME = "numba"

#: Below this many elements (n * C) a kernel runs serially: a parallel launch (1.5-3 us)
#: costs more than it saves for the ~0.5 ns/element softmax work. The dispatcher may
#: override it.
SERIAL_WORK = 32768

#: Up to this many classes the softmax forward/backward/fused kernels run the small-C code
#: (blocks of rows, vectorised across rows; see ``_numba_kernels``).
SMALL_C = 64  # measured (2 threads, float32): small-C code ahead up to 64, rows at 128

_IMPORT_ERROR = None
try:
    import numba
    from . import _numba_kernels as _k
except Exception as exc:  # numba missing or broken: report, never crash the package
    _IMPORT_ERROR = exc


def is_available():
    return _IMPORT_ERROR is None


def why_unavailable():
    if _IMPORT_ERROR is None:
        return ""
    return f"numba could not be imported: {type(_IMPORT_ERROR).__name__}: {_IMPORT_ERROR}"


# ------------------------------------------------------------------------------ launching

_LAUNCH_LOCK = threading.Lock()


def _new_lock_in_child():
    global _LAUNCH_LOCK
    _LAUNCH_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_in_child)

_MAX_THREADS = numba.config.NUMBA_NUM_THREADS if _IMPORT_ERROR is None else 1


def _prefer_fork_safe_layer():
    """Ask for a fork-safe threading layer unless the user chose one or one is running.

    Numba's default order tries GNU OpenMP before workqueue, and GNU OpenMP aborts a child
    forked after a parallel call. 'forksafe' picks TBB when installed, else workqueue.
    """
    from numba.np.ufunc import parallel

    if numba.config.THREADING_LAYER == "default" and not parallel._is_initialized:
        numba.config.THREADING_LAYER = "forksafe"


if _IMPORT_ERROR is None:
    _prefer_fork_safe_layer()


def _threads(x, n_threads):
    """Threads for x, or 0 for the serial compilation (small or one-row problems).

    The choice between the two compilations depends on the shape only, never on
    ``n_threads``: LLVM may vectorise the same row code differently in the two (another
    summation order), so a large problem runs the parallel code even with one thread.
    """
    n, c = x.shape
    if n < 2 or n * c < SERIAL_WORK:
        return 0
    return max(1, min(n_threads, n, _MAX_THREADS))


def _same(x, out):
    """True when the output shares memory with x (the contract allows only x itself)."""
    return bool(np.may_share_memory(x, out))


def _launch(par, ser, threads, *args):
    if threads == 0:
        return ser(*args)
    with _LAUNCH_LOCK:
        numba.set_num_threads(threads)
        return par(*args)


_UNIT = {}
_UNIT1 = {}
_EMPTY1 = {}


def _unit1(dtype):
    """A (1,) array of ones: the scale, or a loss buffer, that a kernel never uses."""
    try:
        return _UNIT1[dtype]
    except KeyError:
        return _UNIT1.setdefault(dtype, np.ones(1, dtype))


def _empty1(dtype):
    try:
        return _EMPTY1[dtype]
    except KeyError:
        return _EMPTY1.setdefault(dtype, np.empty(0, dtype))


def _launch_small(par, ser, threads, *args):
    """_launch for the small-C kernels, which take the chunk count as their last argument."""
    if threads == 0:
        return ser(*args, 1)
    with _LAUNCH_LOCK:
        numba.set_num_threads(threads)
        return par(*args, threads)


def _count_bad(t, n_classes, has_ignore, ignore_index):
    bad = (t < 0) | (t >= n_classes)
    if has_ignore:
        bad &= t != ignore_index
    return int(np.count_nonzero(bad))


# ----------------------------------------------------------------------- softmax kernels

def dense_forward(x, y, cw, eps, z, loss, lse, n_threads):
    if x.size:
        if x.shape[1] <= SMALL_C:
            _launch_small(_k.dense_small_par, _k.dense_small_ser, _threads(x, n_threads),
                          x, y, cw, float(eps), float(z), _unit1(x.dtype), loss, lse,
                          _unit_scale(x.dtype), True, False, _empty1(x.dtype))
        else:
            _launch(_k.dense_forward_par, _k.dense_forward_ser, _threads(x, n_threads),
                    x, y, cw, float(eps), float(z), loss, lse)
    return 0


def dense_backward(x, y, cw, eps, z, scale, lse, grad, n_threads):
    if x.size:
        if x.shape[1] <= SMALL_C:
            _launch_small(_k.dense_small_par, _k.dense_small_ser, _threads(x, n_threads),
                          x, y, cw, float(eps), float(z), scale, _unit1(x.dtype),
                          _empty1(x.dtype), grad, False, True, lse)
        else:
            _launch(_k.dense_backward_par, _k.dense_backward_ser, _threads(x, n_threads),
                    x, y, cw, float(eps), float(z), scale, lse, grad, _same(x, grad))
    return 0


def dense_fused(x, y, cw, eps, z, scale, loss, grad, n_threads):
    if x.size:
        if x.shape[1] <= SMALL_C:
            _launch_small(_k.dense_small_par, _k.dense_small_ser, _threads(x, n_threads),
                          x, y, cw, float(eps), float(z), scale, loss, _empty1(x.dtype), grad,
                          True, True, _empty1(x.dtype))
        else:
            _launch(_k.dense_fused_par, _k.dense_fused_ser, _threads(x, n_threads),
                    x, y, cw, float(eps), float(z), scale, loss, grad, _same(x, grad))
    return 0


def dense_label_grad(x, cw, eps, scale, lse, out, n_threads):
    if x.size:
        _launch(_k.dense_label_grad_par, _k.dense_label_grad_ser, _threads(x, n_threads),
                x, cw, float(eps), scale, lse, out, _same(x, out))
    return 0


def dense_hessp(x, y, cw, eps, z, scale, v, out, n_threads):
    if x.size:
        _launch(_k.dense_hessp_par, _k.dense_hessp_ser, _threads(x, n_threads),
                x, y, cw, float(eps), float(z), scale, v, out, _same(x, out))
    return 0


def sparse_forward(x, t, cw, eps, z, has_ignore, ignore_index, loss, lse, n_threads):
    if not x.size:
        return _count_bad(t, x.shape[1], has_ignore, ignore_index)
    if x.shape[1] <= SMALL_C:
        return int(_launch_small(_k.sparse_small_par, _k.sparse_small_ser,
                                 _threads(x, n_threads), x, t, cw, float(eps), float(z),
                                 bool(has_ignore), int(ignore_index),
                                 _unit1(x.dtype), loss, lse, _unit_scale(x.dtype), True,
                                 False, _empty1(x.dtype)))
    return int(_launch(_k.sparse_forward_par, _k.sparse_forward_ser, _threads(x, n_threads),
                       x, t, cw, float(eps), float(z), bool(has_ignore), int(ignore_index),
                       loss, lse))


def sparse_backward(x, t, cw, eps, z, has_ignore, ignore_index, scale, lse, grad, n_threads):
    if not x.size:
        return _count_bad(t, x.shape[1], has_ignore, ignore_index)
    if x.shape[1] <= SMALL_C:
        return int(_launch_small(_k.sparse_small_par, _k.sparse_small_ser,
                                 _threads(x, n_threads), x, t, cw, float(eps), float(z),
                                 bool(has_ignore), int(ignore_index),
                                 scale, _unit1(x.dtype), _empty1(x.dtype), grad, False,
                                 True, lse))
    return int(_launch(_k.sparse_backward_par, _k.sparse_backward_ser,
                       _threads(x, n_threads), x, t, cw, float(eps), float(z),
                       bool(has_ignore), int(ignore_index), scale, lse, grad, _same(x, grad)))


def sparse_fused(x, t, cw, eps, z, has_ignore, ignore_index, scale, loss, grad, n_threads):
    if not x.size:
        return _count_bad(t, x.shape[1], has_ignore, ignore_index)
    if x.shape[1] <= SMALL_C:
        return int(_launch_small(_k.sparse_small_par, _k.sparse_small_ser,
                                 _threads(x, n_threads), x, t, cw, float(eps), float(z),
                                 bool(has_ignore), int(ignore_index),
                                 scale, loss, _empty1(x.dtype), grad, True, True,
                                 _empty1(x.dtype)))
    return int(_launch(_k.sparse_fused_par, _k.sparse_fused_ser, _threads(x, n_threads),
                       x, t, cw, float(eps), float(z), bool(has_ignore), int(ignore_index),
                       scale, loss, grad, _same(x, grad)))


def sparse_hessp(x, t, cw, eps, z, has_ignore, ignore_index, scale, v, out, n_threads):
    if not x.size:
        return _count_bad(t, x.shape[1], has_ignore, ignore_index)
    return int(_launch(_k.sparse_hessp_par, _k.sparse_hessp_ser, _threads(x, n_threads),
                       x, t, cw, float(eps), float(z), bool(has_ignore), int(ignore_index),
                       scale, v, out, _same(x, out)))


# ----------------------------------------------------------------------- sigmoid kernels

def _unit_scale(dtype):
    """A (1, 1) array of ones, for kernels that take no scale (never written)."""
    if dtype not in _UNIT:
        _UNIT[dtype] = np.ones((1, 1), dtype)
    return _UNIT[dtype]


def _sigmoid(x, y, pw, eps, scale, loss, grad, n_threads):
    want_loss = loss is not None
    want_grad = grad is not None
    if want_loss:
        rowsum = loss.ndim == 1
        loss2 = loss.reshape(-1, 1) if rowsum else loss
    if not want_grad:
        grad = loss2
        scale = _unit_scale(x.dtype)
    if not want_loss:
        loss2, rowsum = grad, False
    _launch(_k.sigmoid_par, _k.sigmoid_ser, _threads(x, n_threads),
            x, y, pw, float(eps), scale, loss2, rowsum, grad, want_loss, want_grad,
            _same(x, grad))
    return 0


def sigmoid_forward(x, y, pw, eps, loss, n_threads):
    if x.size:
        _sigmoid(x, y, pw, eps, None, loss, None, n_threads)
    return 0


def sigmoid_backward(x, y, pw, eps, scale, grad, n_threads):
    if x.size:
        _sigmoid(x, y, pw, eps, scale, None, grad, n_threads)
    return 0


def sigmoid_fused(x, y, pw, eps, scale, loss, grad, n_threads):
    if x.size:
        _sigmoid(x, y, pw, eps, scale, loss, grad, n_threads)
    return 0


def sigmoid_label_grad(x, pw, eps, scale, out, n_threads):
    if x.size:
        _launch(_k.sigmoid_label_grad_par, _k.sigmoid_label_grad_ser, _threads(x, n_threads),
                x, pw, float(eps), scale, out, _same(x, out))
    return 0


# ----------------------------------------------------------------------------- utilities

def logsumexp(x, out, n_threads):
    if x.size:
        _launch(_k.logsumexp_par, _k.logsumexp_ser, _threads(x, n_threads), x, out)
    return 0


def log_softmax(x, out, n_threads):
    if x.size:
        _launch(_k.log_softmax_par, _k.log_softmax_ser, _threads(x, n_threads), x, out,
                _same(x, out))
    return 0


def softmax(x, out, n_threads):
    if x.size:
        _launch(_k.softmax_par, _k.softmax_ser, _threads(x, n_threads), x, out,
                _same(x, out))
    return 0
