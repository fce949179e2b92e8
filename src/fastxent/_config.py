"""Defaults for backend and thread count: per-call > thread-local context > global > env var.

The context managers (``use_backend``, ``threads``) are thread-local, restore on exit and
nest; ``set_backend``/``set_num_threads`` are process-wide. Environment variables are read
once, at import (reading ``os.environ`` costs ~1 us, more than a small kernel); call
:func:`reload_env` after changing them at run time. Nothing here validates a backend name
or resolves a thread count: ``_dispatch`` and ``_threads`` do, each in one place.
"""

import contextlib
import os
import threading

ENV_VARS = {"backend": "FASTXENT_BACKEND", "n_threads": "FASTXENT_NUM_THREADS"}

_local = threading.local()
_global = {"backend": None, "n_threads": None}
_env = {}


def reload_env():
    """Re-read FASTXENT_BACKEND and FASTXENT_NUM_THREADS from the environment."""
    for key, var in ENV_VARS.items():
        _env[key] = os.environ.get(var) or None


reload_env()


def _stack(key):
    try:
        return _local.stacks[key]
    except AttributeError:
        _local.stacks = {k: [] for k in _global}
        return _local.stacks[key]


def get(key):
    """(value, where it came from): the innermost context value, else the global setting,
    else the environment variable, else (None, "the default")."""
    stack = _stack(key)
    if stack:
        return stack[-1], "a with-block in this thread"
    value = _global[key]
    if value is not None:
        return value, "the process-wide setting"
    value = _env[key]
    if value is not None:
        return value, f"the {ENV_VARS[key]} environment variable"
    return None, "the default"


def set_global(key, value):
    _global[key] = value


@contextlib.contextmanager
def scoped(key, value):
    stack = _stack(key)
    stack.append(value)
    try:
        yield value
    finally:
        stack.pop()
