"""Backend registry: names, lazy import, availability. No policy here (see _dispatch.py)."""

import importlib
import os

from ._backends import KERNELS

#: Known backends, in order of preference for nothing in particular: "auto" decides.
MODULES = {
    "numpy": "fastxent._backends.numpy_",
    "numba": "fastxent._backends.numba_",
    "cython": "fastxent._backends.cython_",
}

_loaded = {}


def known_backends():
    return tuple(MODULES)


def load(name):
    """Return the backend module for ``name``, or None with the reason kept for ``why``."""
    if name not in _loaded:
        if name != "numpy" and os.environ.get("FASTXENT_PURE_NUMPY", "") not in ("", "0"):
            _loaded[name] = (None, "FASTXENT_PURE_NUMPY is set, so only the NumPy backend is used")
        else:
            try:
                module = importlib.import_module(MODULES[name])
            except Exception as exc:  # an optional compiled part: say why, never crash
                _loaded[name] = (None, f"import failed: {type(exc).__name__}: {exc}")
            else:
                if module.is_available():
                    missing = [k for k in KERNELS if not hasattr(module, k)]
                    reason = f"kernels missing: {', '.join(missing)}" if missing else ""
                    _loaded[name] = (None if missing else module, reason)
                else:
                    _loaded[name] = (None, module.why_unavailable())
    return _loaded[name][0]


def why(name):
    load(name)
    return _loaded[name][1]


def available_backends():
    """Names of the backends that can run here, as a tuple."""
    return tuple(name for name in MODULES if load(name) is not None)
