"""Settings: backend, thread count and diagnostics mode, per call > thread-local > global > env.

The context managers (``use_backend``, ``threads``, ``checking``) are thread-local, restore on
exit and nest; ``set_backend``/``set_num_threads``/``set_check`` are process-wide. Environment
variables (``FASTXENT_BACKEND``, ``FASTXENT_NUM_THREADS``, ``FASTXENT_CHECK``) are read once, at
import: reading ``os.environ`` costs ~1 us, more than a small kernel; call :func:`reload_env`
after changing them at run time. This module stores raw values; ``_plan`` and ``_threads``
validate and resolve them, each in one place.

``current()`` returns the effective ``(backend, n_threads, check)`` of the calling thread,
each with where it came from, cached per thread and recomputed only after a change (a
generation counter), so the hot path pays one attribute read.
"""

import contextlib
import os
import threading

KEYS = ("backend", "n_threads", "check")
ENV_VARS = {"backend": "FASTXENT_BACKEND", "n_threads": "FASTXENT_NUM_THREADS",
            "check": "FASTXENT_CHECK"}

_local = threading.local()
_global = dict.fromkeys(KEYS)
_env = {}
_generation = [0]
_listeners = []  # called after any change (the call-plan cache clears itself)


def on_change(fn):
    """Register ``fn()`` to run after every settings change."""
    _listeners.append(fn)
    return fn


def _changed():
    _generation[0] += 1
    for fn in _listeners:
        fn()


def reload_env():
    """Re-read FASTXENT_BACKEND, FASTXENT_NUM_THREADS and FASTXENT_CHECK."""
    for key, var in ENV_VARS.items():
        _env[key] = os.environ.get(var) or None
    _changed()


def _stacks():
    try:
        return _local.stacks
    except AttributeError:
        _local.stacks = {k: [] for k in KEYS}
        return _local.stacks


def _source(key):
    stack = _stacks()[key]
    if stack:
        return stack[-1], "a with-block in this thread"
    if _global[key] is not None:
        return _global[key], "the process-wide setting"
    if _env[key] is not None:
        return _env[key], f"the {ENV_VARS[key]} environment variable"
    return None, "the default"


_tokens = {}


def current():
    """((backend, source), (n_threads, source), (check, source)) for this thread."""
    cached = getattr(_local, "cached", None)
    if cached is not None and cached[0] == _generation[0]:
        return cached[1]
    value = tuple(_source(k) for k in KEYS)
    _local.cached = (_generation[0], value, _tokens.setdefault(value, len(_tokens)))
    return value


def token():
    """A small int naming this thread's current settings (equal settings, equal token): a
    cheap key for caches of decisions that depend on them."""
    cached = getattr(_local, "cached", None)
    if cached is None or cached[0] != _generation[0]:
        current()
        cached = _local.cached
    return cached[2]


def set_global(key, value):
    _global[key] = value
    _changed()


@contextlib.contextmanager
def scoped(key, value):
    stack = _stacks()[key]
    stack.append(value)
    _local.cached = None
    try:
        yield value
    finally:
        stack.pop()
        _local.cached = None


reload_env()
