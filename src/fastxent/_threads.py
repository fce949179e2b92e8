"""The one place that resolves ``n_threads`` and sets Numba's and OpenMP's thread counts.

Precedence: ``n_threads=`` per call > ``with fastxent.threads(n)`` (thread-local) >
``fastxent.set_num_threads(n)`` > ``FASTXENT_NUM_THREADS`` > the cores this process may use
(``os.sched_getaffinity``, which honours taskset and cgroup cpusets).
``-1`` means all usable cores; ``0`` and other negatives are errors.
"""

import os

from . import _config

ENV_VAR = "FASTXENT_NUM_THREADS"


_cores = {}


def _cgroup_quota():
    """CPUs allowed by a cgroup v2 CPU quota (containers), or None."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, -(-int(quota) // int(period)))


def usable_cores():
    """Cores this process may use: CPU affinity (taskset, cpusets) capped by a cgroup quota.

    Cached; a forked child re-reads it."""
    try:
        return _cores["n"]
    except KeyError:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            n = os.cpu_count() or 1
        quota = _cgroup_quota()
        _cores["n"] = n = min(n, quota) if quota else n
        return n


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_cores.clear)


def check(n_threads, name="n_threads"):
    """Validate a user-given thread count and return it as an int (or None)."""
    if n_threads is None:
        return None
    if isinstance(n_threads, bool) or not hasattr(n_threads, "__index__"):
        raise TypeError(f"{name} must be an int, -1 or None; got {n_threads!r}")
    n = int(n_threads)
    if n == 0 or n < -1:
        raise ValueError(
            f"{name}={n} is not a thread count; use a positive int, -1 for all "
            f"{usable_cores()} usable cores, or None for the library default")
    return n


def resolve(n_threads=None):
    """The thread count a call runs with (>= 1)."""
    n = check(n_threads)
    if n is None:
        n, _ = _config.get("n_threads")
        if isinstance(n, str):  # from the environment
            try:
                n = check(int(n), name=ENV_VAR)
            except ValueError:
                raise ValueError(
                    f"{ENV_VAR}={n!r} is not a thread count; set it to a positive int or -1, "
                    f"or unset it") from None
    if n is None or n == -1:
        return usable_cores()
    return n


def set_num_threads(n_threads):
    """Set the process-wide default thread count (None restores the default)."""
    _config.set_global("n_threads", check(n_threads))


def get_num_threads():
    """The thread count a call made now from this thread would use."""
    return resolve(None)


def threads(n_threads):
    """Context manager: use ``n_threads`` in this thread inside the ``with`` block."""
    return _config.scoped("n_threads", check(n_threads))
