"""The ``cython`` backend: the compiled C row kernels (``_cython/``), one entry point.

This module always imports: when the extension was not built (no C compiler or no Cython
at install time, a failed build, an incompatible binary) ``is_available()`` is False and
``why_unavailable()`` says why and how to fix it.

Environment, read at import: ``FASTXENT_SIMD=baseline|avx2|avx512`` caps the instruction-set
tier of the row kernels (default: the best this CPU supports, chosen with
``__builtin_cpu_supports``; the build itself stays portable). ``FASTXENT_OMP_AFTER_FORK=1``
keeps OpenMP threads in forked children (only safe with a fork-safe OpenMP runtime; GNU
libgomp hangs).
"""

NAME = "cython"

#: How to get the extension (shared with ``python -m fastxent info``).
FIX = ("reinstall from a source checkout with a C compiler and Cython available: "
       "pip install . (a developer install: pip install -e . --no-build-isolation needs "
       "Cython, NumPy, setuptools and wheel in the environment first: "
       "pip install cython numpy setuptools wheel)")

try:
    from ._cython import _kernels as _ext
except Exception as exc:  # ImportError, or a broken binary: report, never raise
    _ext = None
    _REASON = (f"the compiled extension fastxent._backends._cython._kernels could not be "
               f"imported ({type(exc).__name__}: {exc}); {FIX}")
    try:  # the cause setup.py recorded when it skipped the build (pip hides its output)
        import json
        import pathlib
        _why = json.loads((pathlib.Path(__file__).parents[1] / "_data" / "build_status.json")
                          .read_text()).get("cython_skipped")
    except (OSError, ValueError):
        _why = None
    if _why:
        _REASON = f"the build skipped it: {_why} ({FIX})"
    run = None
else:
    _REASON = ""
    run = _ext.run


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
