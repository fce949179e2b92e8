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

from . import _config, _registry, _threads

ENV_VAR = "FASTXENT_BACKEND"
POLICY_ENV_VAR = "FASTXENT_AUTO_POLICY"

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
    value, source = _config.get("backend", ENV_VAR)
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

_policy = None


def policy():
    """The auto policy table (loaded once; ``FASTXENT_AUTO_POLICY`` names another file)."""
    global _policy
    if _policy is None:
        path = os.environ.get(POLICY_ENV_VAR)
        if path:
            with open(path) as f:
                _policy = json.load(f)
        else:
            _policy = json.loads(
                resources.files("fastxent").joinpath("_data/auto_policy.json").read_text())
    return _policy


def _auto(op, kind, dtype, n_rows, n_classes, n_threads):
    """Pick (backend, threads, reason) from the measured policy table."""
    table = policy()
    work = n_rows * max(n_classes, 1)
    serial_below = table["serial_below_elements"]
    threads = 1 if work < serial_below else n_threads
    key = f"{kind}/{op}/{dtype}"
    rules = table["rules"].get(key) or table["rules"]["default"]
    for rule in rules:  # first rule whose class range fits, in order of preference
        if rule["min_classes"] <= n_classes <= rule.get("max_classes", 1 << 62):
            for name in rule["order"]:
                if _registry.load(name) is not None:
                    return name, threads, (
                        f"the measured policy for {key} with {n_classes} classes prefers "
                        f"{' > '.join(rule['order'])}; {name!r} is the first available")
    return "numpy", threads, "no compiled backend is available"


def select(op, kind, dtype, n_rows, n_classes, backend=None, n_threads=None, why=False):
    """Return (module, n_threads) for one call; with ``why=True`` also a reason string."""
    name, source = requested(backend)
    nt = _threads.resolve(n_threads)
    if name == "auto":
        name, threads, reason = _auto(op, kind, str(dtype), n_rows, n_classes, nt)
        reason = f"auto (from {source}): {reason}"
    else:
        threads = nt if n_rows * max(n_classes, 1) >= policy()["serial_below_elements"] else 1
        reason = f"{name!r} was requested by {source}"
    module = require(name)
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
    import numpy as np

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
        thread_note += (f" (not {requested_threads}: {n_rows * n_classes} elements is below "
                        f"the {policy()['serial_below_elements']}-element cut-over where a "
                        f"parallel launch pays off)")
    what = {"dense": "dense labels", "sparse": "integer labels", "sigmoid": "sigmoid labels",
            "util": "no labels"}[kind]
    available = ", ".join(available_backends())
    return (f"A {op} call on {shape} {np.dtype(dtype).name} logits with {what} runs on "
            f"{module.NAME!r} with {thread_note}. Why: {reason}. Available backends: "
            f"{available}.")
