"""Thread counts: what the user may ask for, and how many cores this process may use.

Precedence: ``n_threads=`` per call > ``with fastxent.threads(n)`` (thread-local) >
``fastxent.set_num_threads(n)`` > ``FASTXENT_NUM_THREADS`` > the cores this process may use
(CPU affinity, which honours taskset and cpusets, capped by a cgroup CPU quota). ``-1`` means
all usable cores; ``0``, other negatives and non-integers are errors; a count above the
usable cores is clamped to them (more threads than cores only oversubscribe). Whether a call
actually runs in parallel is decided in one place, the call plan (``_plan``).
"""

import operator
import os

from . import _config

ENV_VAR = _config.ENV_VARS["n_threads"]

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
    """Cores this process may use: CPU affinity capped by a cgroup quota (cached; a forked
    child reads it again)."""
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
    """Validate a user-given thread count: an int >= 1, -1, or None (returned as given)."""
    if n_threads is None:
        return None
    if isinstance(n_threads, bool):
        raise TypeError(f"{name} must be an int, -1 or None; got {n_threads!r}")
    try:
        n = operator.index(n_threads)
    except TypeError:
        raise TypeError(f"{name} must be an int, -1 or None; got {n_threads!r}") from None
    if n == 0 or n < -1:
        raise ValueError(
            f"{name}={n} is not a thread count; use a positive int, -1 for all "
            f"{usable_cores()} usable cores, or None for the library default")
    return n


def resolve(n_threads, setting):
    """The thread count a call may use (1..usable cores): ``n_threads`` if given, else the
    configured ``setting`` (a value from ``_config``, possibly the environment's string)."""
    n = check(n_threads)
    if n is None:
        n = setting
        if isinstance(n, str):  # from the environment
            try:
                n = check(int(n), name=ENV_VAR)
            except ValueError:
                raise ValueError(
                    f"{ENV_VAR}={n!r} is not a thread count; set it to a positive int or -1, "
                    f"or unset it") from None
    cores = usable_cores()
    if n is None or n == -1 or n > cores:
        return cores
    return n


def set_num_threads(n_threads):
    """Set the process-wide default thread count (``None`` restores the default: all usable
    cores). Counts above the usable cores are clamped to them when a call runs."""
    _config.set_global("n_threads", check(n_threads))


def get_num_threads():
    """The thread count a call made now from this thread would use at most."""
    return resolve(None, _config.current()[1][0])


def threads(n_threads):
    """Context manager: use ``n_threads`` in this thread inside the ``with`` block."""
    return _config.scoped("n_threads", check(n_threads))
