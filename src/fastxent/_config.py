"""Defaults for backend and thread count: per-call > thread-local context > global > env var.

The context managers (``use_backend``, ``threads``) are thread-local, restore on exit and
nest; ``set_backend``/``set_num_threads`` are process-wide. Nothing here validates a backend
name or resolves a thread count: ``_dispatch`` and ``_threads`` do, each in one place.
"""

import contextlib
import os
import threading

_local = threading.local()
_global = {"backend": None, "n_threads": None}


def _stack(key):
    stacks = _local.__dict__.setdefault("stacks", {})
    return stacks.setdefault(key, [])


def get(key, env_var):
    """(value, where it came from): the innermost context value, else the global setting,
    else the environment variable, else (None, "default")."""
    stack = _stack(key)
    if stack:
        return stack[-1], "a with-block in this thread"
    if _global[key] is not None:
        return _global[key], "the process-wide setting"
    value = os.environ.get(env_var)
    if value:
        return value, f"the {env_var} environment variable"
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
