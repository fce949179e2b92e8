"""Backend registry: names, lazy import, availability and why not. No policy here (_plan)."""

import importlib
import os

#: Known backends (auto's order lives in _plan).
MODULES = {
    "numpy": "fastxent._backends.numpy_",
    "numba": "fastxent._backends.numba_",
    "cython": "fastxent._backends.cython_",
}

_loaded = {}


def known_backends():
    return tuple(MODULES)


def load(name):
    """The backend module ``name``, or None with the reason kept for :func:`why`."""
    if name not in _loaded:
        if name != "numpy" and os.environ.get("FASTXENT_PURE_NUMPY", "") not in ("", "0"):
            _loaded[name] = (None, "FASTXENT_PURE_NUMPY is set, so only the NumPy backend is used")
        else:
            try:
                module = importlib.import_module(MODULES[name])
            except Exception as exc:  # an optional compiled part: say why, never crash
                _loaded[name] = (None, f"import failed: {type(exc).__name__}: {exc}")
            else:
                ok = module.is_available()
                _loaded[name] = (module if ok else None, "" if ok else module.why_unavailable())
    return _loaded[name][0]


def why(name):
    load(name)
    return _loaded[name][1]


def available_backends():
    """Names of the backends that can run here, as a tuple (registry order)."""
    return tuple(name for name in MODULES if load(name) is not None)
