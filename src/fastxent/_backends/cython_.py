"""The ``cython`` backend: compiled C row kernels (``_cython/_kernels.pyx`` + headers).

This module always imports: when the extension was not built (no C compiler at install
time, a failed build, an incompatible binary) ``is_available()`` is False and
``why_unavailable()`` says why and how to fix it; the kernels are then absent.

Build facts (OpenMP, SIMD variant in use, flags, bounds checks) are in :func:`build_info`.
Environment, read at import: ``FASTXENT_SIMD=baseline|avx2|avx512`` caps the SIMD variant
of the row kernels (default: the best this CPU supports, chosen with __builtin_cpu_supports;
the build itself stays portable x86-64). ``FASTXENT_OMP_AFTER_FORK=1`` keeps OpenMP threads
in forked children (only safe with a fork-safe OpenMP runtime; GNU libgomp hangs).
"""

from .. import _backends

NAME = "cython"

_FIX = ("reinstall with a C compiler available: "
        "pip install --force-reinstall --no-binary fastxent fastxent "
        "(from a source checkout: pip install -e . --no-build-isolation)")

try:
    from ._cython import _kernels as _ext
except Exception as exc:  # ImportError, or a broken binary: report, never raise
    _ext = None
    _REASON = (f"the compiled extension fastxent._backends._cython._kernels could not be "
               f"imported ({type(exc).__name__}: {exc}); {_FIX}")
else:
    _REASON = ""
    for _name in _backends.KERNELS:
        globals()[_name] = getattr(_ext, _name)
    del _name


def is_available():
    return _ext is not None


def why_unavailable():
    return _REASON


def build_info():
    """How the extension was built and which code path runs, as a dict (for show_config)."""
    if _ext is None:
        return {"available": False, "reason": _REASON}
    info = {"available": True}
    info.update(_ext._build_info())
    return info
