"""Dispatch: which backend and how many threads run a given call, and why.

Precedence for the backend: ``backend=`` argument > ``with use_backend(name)`` (thread-local)
> ``set_backend(name)`` > ``FASTXENT_BACKEND`` > ``"auto"``. A named backend is used exactly
(an unavailable one fails at once, saying what to install); ``"auto"`` picks among the
available ones by the measured policy in ``_data/auto_policy.json`` and never fails because
a backend is missing.
"""

import json
import os
from importlib import resources

import numpy as np

from . import _config, _registry, _threads

ENV_VAR = _config.ENV_VARS["backend"]
POLICY_ENV_VAR = "FASTXENT_AUTO_POLICY"
USER_POLICY = os.path.join(os.path.expanduser("~"), ".config", "fastxent", "auto_policy.json")

_INSTALL_HINT = {
    "numba": "install numba (pip install numba)",
    "cython": ("build the extension: reinstall fastxent from source with a C compiler "
               "(pip install --force-reinstall --no-binary fastxent fastxent, or pip install . "
               "in a checkout)"),
}


class BackendUnavailableError(RuntimeError):
    """A backend was asked for by name but cannot run here."""


def check_name(name, source="backend"):
    if name is None or name == "auto" or name in _registry.MODULES:
        return name
    known = ", ".join(repr(b) for b in ("auto",) + _registry.known_backends())
    raise ValueError(f"{source}={name!r} is not a known backend; use one of {known}")


def requested(backend=None):
    """(name, where it came from) for this call, before "auto" is resolved."""
    if backend is not None:
        return check_name(backend), "the backend= argument"
    value, source = _config.get("backend")
    if value is None:
        return "auto", source
    return check_name(value, ENV_VAR if ENV_VAR in source else "backend"), source


def require(name):
    module = _registry.load(name)
    if module is None:
        raise BackendUnavailableError(
            f"backend {name!r} is not available: {_registry.why(name)}. To use it, "
            f"{_INSTALL_HINT.get(name, 'reinstall fastxent')}; or use backend='auto'")
    return module


# ------------------------------------------------------------------------------ policy
#
# The "auto" policy is data: for each cell "<labels>/<op>/<dtype>" a list of bands of class
# counts, each with the backends in order of measured speed and the problem size (elements)
# from which running on several threads paid off. `python -m fastxent tune` measures and
# writes it. Lookup order: FASTXENT_AUTO_POLICY (a path), then ~/.config/fastxent/
# auto_policy.json, then the table shipped in fastxent/_data/auto_policy.json.

_policy = None
_bands = {}


def policy_path():
    path = os.environ.get(POLICY_ENV_VAR)
    if path:
        return path
    if os.path.exists(USER_POLICY):
        return USER_POLICY
    return str(resources.files("fastxent").joinpath("_data/auto_policy.json"))


def policy():
    """The auto policy table (loaded once; :func:`reload_policy` reads it again)."""
    global _policy
    if _policy is None:
        with open(policy_path()) as f:
            _policy = json.load(f)
    return _policy


def reload_policy():
    """Forget the loaded policy (e.g. after setting FASTXENT_AUTO_POLICY or tune --install)."""
    global _policy
    _policy = None
    _bands.clear()


def _bands_for(op, kind, dtype):
    key = (op, kind, dtype.char)
    bands = _bands.get(key)
    if bands is None:
        cells = policy()["cells"]
        name = f"{kind}/{op}/{np.dtype(dtype).name}"
        bands = cells.get(name) or cells.get(f"{kind}/fused/{np.dtype(dtype).name}") or cells[
            "default"]
        _bands[key] = bands = sorted(bands, key=lambda b: b["max_classes"])
    return bands


def _auto(op, kind, dtype, n_rows, n_classes, n_threads, why=False):
    """Pick (backend, threads[, reason]) from the measured policy table."""
    for band in _bands_for(op, kind, dtype):
        if n_classes <= band["max_classes"]:
            break
    serial = n_rows * n_classes < band["parallel_from"]
    threads = 1 if serial else n_threads
    order = band.get("small_order", band["order"]) if serial else band["order"]
    for name in order:
        if _registry.load(name) is not None:
            break
    else:
        name = "numpy"
    if not why:
        return name, threads
    cell = f"{kind}/{op}/{np.dtype(dtype).name}"
    size = "small problems (one thread)" if serial else "large problems"
    return name, threads, (
        f"for {cell} with up to {band['max_classes']} classes, {size} measured fastest on "
        f"{' > '.join(order)}, and {name!r} is the first available; problems of fewer than "
        f"{band['parallel_from']} elements run on one thread")


def select(op, kind, dtype, n_rows, n_classes, backend=None, n_threads=None, why=False):
    """Return (module, n_threads) for one call; with ``why=True`` also a reason string."""
    name, source = requested(backend)
    nt = _threads.resolve(n_threads)
    if name == "auto":
        picked = _auto(op, kind, dtype, n_rows, n_classes, nt, why)
        name, threads = picked[0], picked[1]
        reason = f"auto (from {source}): {picked[2]}" if why else None
    else:
        # A named backend still skips the thread pool where the policy says it cannot pay.
        threads = _auto(op, kind, dtype, n_rows, n_classes, nt)[1]
        reason = f"{name!r} was requested by {source}"
    module = _registry.load(name) or require(name)
    if why:
        return module, threads, reason
    return module, threads


def available_backends():
    return _registry.available_backends()


def set_backend(name):
    """Set the process-wide default backend (``None`` or ``"auto"`` for automatic)."""
    _config.set_global("backend", check_name(name))


def use_backend(name):
    """Context manager: use backend ``name`` in this thread inside the ``with`` block."""
    return _config.scoped("backend", check_name(name))


_OPS = ("forward", "backward", "fused", "label_grad", "hessp", "logsumexp", "log_softmax",
        "softmax")
_KINDS = {"dense": "dense", "sparse": "sparse", "integer": "sparse", "sigmoid": "sigmoid"}


def explain(logits=None, *, shape=None, dtype=None, labels="integer", op="fused", axis=-1,
            backend=None, n_threads=None):
    """Say which backend and thread count a call would use, and why, in one paragraph.

    Pass either ``logits`` (any array-like, as to a loss) or ``shape`` and ``dtype``.
    ``labels`` is ``"dense"``, ``"integer"`` (``"sparse"``) or ``"sigmoid"``; ``op`` is one
    of ``"forward"``, ``"backward"``, ``"fused"``, ``"label_grad"``, ``"hessp"``,
    ``"logsumexp"``, ``"log_softmax"``, ``"softmax"``.

    Examples
    --------
    >>> import fastxent as fx
    >>> print(fx.explain(shape=(256, 10), dtype="float32", backend="numpy"))  # doctest: +ELLIPSIS
    A fused call on (256, 10) float32 logits with integer labels runs on 'numpy' with 1 thread...
    """
    from . import _validation as V

    if op not in _OPS:
        raise ValueError(f"op={op!r} is not one of {', '.join(map(repr, _OPS))}")
    if labels not in _KINDS:
        raise ValueError(f"labels={labels!r} is not one of {', '.join(map(repr, _KINDS))}")
    if logits is not None:
        x, ax = V.check_logits(logits, axis)
        shape, dtype = x.shape, x.dtype
    else:
        if shape is None:
            raise ValueError("explain() needs logits, or shape= (and dtype=)")
        shape = tuple(shape)
        dtype = np.dtype(dtype or "float64")
        if dtype == np.float16:
            dtype = np.dtype(np.float32)
        ax = V.normalize_axis(axis, len(shape))
    n_classes = shape[ax]
    n_rows = int(np.prod(shape, dtype=np.int64)) // max(n_classes, 1)
    kind = "util" if op in ("logsumexp", "log_softmax", "softmax") else _KINDS[labels]
    module, threads, reason = select(op, kind, np.dtype(dtype), n_rows, n_classes, backend,
                                     n_threads, why=True)
    requested_threads = _threads.resolve(n_threads)
    thread_note = (f"{threads} thread{'s' if threads != 1 else ''}")
    if threads != requested_threads:
        thread_note += f" (not {requested_threads}: too small for a parallel launch to pay)"
    what = {"dense": "dense labels", "sparse": "integer labels", "sigmoid": "sigmoid labels",
            "util": "no labels"}[kind]
    available = ", ".join(available_backends())
    return (f"A {op} call on {shape} {np.dtype(dtype).name} logits with {what} runs on "
            f"{module.NAME!r} with {thread_note}. Why: {reason}. Available backends: "
            f"{available}.")
