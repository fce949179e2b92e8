"""The call plan: which backend runs a call, on how many threads, and why.

Backend: ``backend=`` argument > ``with use_backend(...)`` (thread-local) > ``set_backend(...)``
> ``FASTXENT_BACKEND`` > ``"auto"``. A named backend is used exactly (an unavailable one fails
at once, saying why and how to fix it); ``"auto"`` never fails because a backend is missing.

``"auto"`` follows the backends' roles, which hold on any machine by construction: the
compiled C kernels (``cython``) have the least per-call cost and the widest SIMD code paths;
Numba compiles the same algorithms without a C compiler at install time; NumPy is the
reference. So auto takes the first available of cython, numba, numpy, for every shape,
dtype and operation. ``python -m fastxent tune`` measures this machine and may write a small
table of exceptions (cells where another backend measured faster) that auto then follows;
FASTXENT_AUTO_POLICY names such a file, else ``~/.config/fastxent/auto_policy.json`` is used
when it exists. A broken table gives one warning and the built-in rule; a named backend never
reads it.

Threads: the one thread decision of the library. A call runs on the resolved thread count
(``_threads``) when it has at least two rows and ``PARALLEL_MIN_ELEMENTS`` elements, else on
one thread (a parallel launch and the second core's cold caches cost more than they save on
a smaller problem; measured: 32768 float32 elements of a fused kernel take ~10 us on one core).

Plans depend on the call's signature only (kind, operation, dtype, parallel or not, the class
count's power of two, the requested backend and thread count, and the settings), never on
data; they are cached, and any settings change or :func:`reload_policy` clears the cache.
"""

import json
import os
import warnings

import numpy as np

from . import _config, _registry, _threads

POLICY_ENV_VAR = "FASTXENT_AUTO_POLICY"
USER_POLICY = os.path.join(os.path.expanduser("~"), ".config", "fastxent", "auto_policy.json")
ROLE_ORDER = ("cython", "numba", "numpy")
PARALLEL_MIN_ELEMENTS = 32768
OPS = ("forward", "backward", "fused", "label_grad", "hessp", "logsumexp", "log_softmax",
       "softmax")
KINDS = {"dense": "dense", "integer": "integer", "sparse": "integer", "sigmoid": "sigmoid",
         "util": "util"}


class BackendUnavailableError(RuntimeError):
    """A backend was asked for by name but cannot run here."""


def check_name(name, source="backend"):
    """``name`` if it is None, "auto" or a known backend, else a ValueError."""
    if name is None or name == "auto" or name in _registry.MODULES:
        return name
    known = ", ".join(repr(b) for b in ("auto",) + _registry.known_backends())
    raise ValueError(f"{source}={name!r} is not a known backend; use one of {known}")


def require(name):
    """The backend module ``name``, or BackendUnavailableError with the reason and the fix."""
    module = _registry.load(name)
    if module is None:
        raise BackendUnavailableError(
            f"backend {name!r} is not available: {_registry.why(name)}; or use "
            f"backend='auto', which picks among the available ones")
    return module


# ------------------------------------------------------------------------------ policy

_policy = {"loaded": False, "cells": [], "parallel_min": PARALLEL_MIN_ELEMENTS, "path": None}


def policy_path():
    """The tuned policy file auto follows, or None for the built-in rule."""
    path = os.environ.get(POLICY_ENV_VAR)
    if path:
        return path
    return USER_POLICY if os.path.exists(USER_POLICY) else None


def parse_policy(data, path):
    """Validate a policy table (``tune``'s JSON); returns (cells, parallel_min)."""
    if not isinstance(data, dict) or data.get("version") != 2:
        raise ValueError("not a version-2 fastxent policy (rewrite it with python -m "
                         "fastxent tune)")
    parallel_min = data.get("parallel_min_elements", PARALLEL_MIN_ELEMENTS)
    if not isinstance(parallel_min, int) or parallel_min < 1:
        raise ValueError(f"parallel_min_elements={parallel_min!r} is not a positive int")
    cells = []
    for i, cell in enumerate(data.get("cells", [])):
        try:
            kind, op, dtype = cell["labels"], cell["op"], np.dtype(cell["dtype"]).char
            lo, hi, order = int(cell["min_classes"]), int(cell["max_classes"]), cell["order"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"cells[{i}] is malformed ({type(exc).__name__}: {exc})") from None
        bad = [b for b in order if b not in _registry.MODULES]
        if kind not in KINDS or op not in OPS or bad or not order:
            raise ValueError(f"cells[{i}] names an unknown kind, operation or backend")
        cells.append((KINDS[kind], op, dtype, lo, hi, tuple(order)))
    return cells, parallel_min


def _load_policy():
    _policy.update(loaded=True, cells=[], parallel_min=PARALLEL_MIN_ELEMENTS, path=None)
    path = policy_path()
    if path is None:
        return
    try:
        with open(path) as f:
            cells, parallel_min = parse_policy(json.load(f), path)
    except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
        source = (f"{POLICY_ENV_VAR}={path}" if os.environ.get(POLICY_ENV_VAR)
                  else f"the tuned policy {path}")
        warnings.warn(f"fastxent: ignoring {source}: {type(exc).__name__}: {exc}. Using the "
                      f"built-in auto rule; fix or delete the file (python -m fastxent tune "
                      f"--install writes a new one)", RuntimeWarning, stacklevel=4)
        return
    _policy.update(cells=cells, parallel_min=parallel_min, path=path)


def reload_policy():
    """Read the tuned policy again (after setting FASTXENT_AUTO_POLICY or tune --install)."""
    _policy["loaded"] = False
    _plans.clear()


def _auto(kind, op, dtype_char, n_classes):
    """(backend order, reason) for auto."""
    if not _policy["loaded"]:
        _load_policy()
    for k, o, d, lo, hi, order in _policy["cells"]:
        if k == kind and o == op and d == dtype_char and lo <= n_classes <= hi:
            return order, f"the tuned policy {_policy['path']} ranks {' > '.join(order)} here"
    return ROLE_ORDER, ("by role: the compiled C kernels first (least per-call cost, widest "
                        "SIMD code), then Numba, then the NumPy reference")


# ------------------------------------------------------------------------------ plans

_plans = {}
_config.on_change(_plans.clear)


def plan(kind, op, dtype, n_rows, n_classes, backend=None, n_threads=None):
    """(run, n_threads, backend name) for a call; cached per call signature."""
    parallel = n_rows > 1 and n_rows * n_classes >= _policy["parallel_min"]
    key = (kind, op, dtype.char, parallel, n_classes.bit_length(), backend, n_threads,
           _config.token())
    try:
        return _plans[key]
    except KeyError:
        pass
    made = _make_plan(kind, op, dtype, n_classes, parallel, backend, n_threads,
                      _config.current())[0]
    _plans[key] = made
    return made


def _make_plan(kind, op, dtype, n_classes, parallel, backend, n_threads, settings):
    (b_value, b_source), (t_value, t_source), _ = settings
    if backend is not None:
        name, source = check_name(backend), "the backend= argument"
    elif b_value is not None:
        name, source = check_name(b_value, "FASTXENT_BACKEND" if "environment" in b_source
                                  else "backend"), b_source
    else:
        name, source = "auto", "the default"
    if name == "auto":
        order, why = _auto(kind, op, dtype.char, n_classes)
        name = next((b for b in order if _registry.load(b) is not None), "numpy")
        reason = f"auto (from {source}): {why}; {name!r} is the first available"
    else:
        require(name)
        reason = f"{name!r} was requested by {source}"
    # 0: a small problem, run serially with no parallel launch; k >= 1: a parallel region of
    # k threads (the kernel ABI's n_threads)
    threads = _threads.resolve(n_threads, t_value) if parallel else 0
    module = _registry.load(name)
    return (module.run, threads, name), reason


# ------------------------------------------------------------------------------ control

def available_backends():
    """Names of the backends that can run here, in auto's order of preference."""
    return tuple(name for name in ROLE_ORDER if _registry.load(name) is not None)


def set_backend(name):
    """Set the process-wide default backend (``None`` or ``"auto"`` for automatic); a named
    backend that cannot run here fails at once with the reason."""
    name = check_name(name)
    if name not in (None, "auto"):
        require(name)
    _config.set_global("backend", name)


def use_backend(name):
    """Context manager: use backend ``name`` in this thread inside the ``with`` block."""
    name = check_name(name)
    if name not in (None, "auto"):
        require(name)
    return _config.scoped("backend", name)


_UTIL_OPS = ("logsumexp", "log_softmax", "softmax")


def explain(logits=None, *, shape=None, dtype=None, labels="integer", op="fused", axis=-1,
            backend=None, n_threads=None):
    """Say which backend and thread count a call would use, and why, in one paragraph.

    Parameters
    ----------
    logits : array_like, optional
        The logits of the call (only their shape and dtype are used); or give ``shape`` and
        ``dtype``.
    labels : {"integer", "dense", "sigmoid"}
        The kind of labels.
    op : str
        One of ``"forward"``, ``"backward"``, ``"fused"``, ``"label_grad"``, ``"hessp"``,
        ``"logsumexp"``, ``"log_softmax"``, ``"softmax"``.
    axis, backend, n_threads
        As for the losses.

    Examples
    --------
    >>> import fastxent as fx
    >>> print(fx.explain(shape=(256, 10), dtype="float32", backend="numpy"))
    ... # doctest: +ELLIPSIS +NORMALIZE_WHITESPACE
    A fused call on (256, 10) float32 logits with integer labels runs on 'numpy' with 1
    thread (too small for a parallel launch to pay: ...
    """
    if op not in OPS:
        raise ValueError(f"op={op!r} is not one of {', '.join(map(repr, OPS))}")
    if labels not in KINDS or labels == "util":
        raise ValueError(f"labels={labels!r} is not one of 'integer', 'dense', 'sigmoid'")
    if logits is not None:
        a = np.asarray(logits)
        shape, dtype = a.shape, a.dtype
    elif shape is None:
        raise ValueError("explain() needs logits, or shape= (and dtype=)")
    shape = tuple(int(s) for s in shape)
    dtype = np.dtype(dtype or "float64")
    if dtype.kind != "f":
        raise TypeError(f"dtype={dtype} is not a floating-point dtype")
    if dtype.itemsize < 4:
        dtype = np.dtype(np.float32)  # float16 / bfloat16 are computed in float32
    kind = "util" if op in _UTIL_OPS else KINDS[labels]
    if not shape:
        raise ValueError("shape=() has no class axis")
    if kind == "sigmoid":
        n_classes = shape[-1]
    else:
        n_classes = shape[axis % len(shape)]
    n_rows = int(np.prod(shape, dtype=np.int64)) // max(n_classes, 1)
    parallel = n_rows > 1 and n_rows * n_classes >= _policy["parallel_min"]
    (run, threads, name), reason = _make_plan(kind, op, dtype, n_classes, parallel, backend,
                                              _threads.check(n_threads), _config.current())
    if threads > 1:
        thread_note = f"{threads} threads"
    elif threads == 1:
        thread_note = "1 thread (the configured thread count)"
    else:
        thread_note = (f"1 thread (too small for a parallel launch to pay: calls of fewer than "
                       f"{_policy['parallel_min']} elements or one row run on one thread)")
    what = {"dense": "dense labels", "integer": "integer labels", "sigmoid": "sigmoid labels",
            "util": "no labels"}[kind]
    return (f"A {op} call on {shape} {dtype.name} logits with {what} runs on {name!r} with "
            f"{thread_note}. Why: {reason}. Available backends: "
            f"{', '.join(available_backends())}.")
