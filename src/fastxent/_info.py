"""show_config(): versions, backends and why any is missing, build details, threads, CPU."""

import os
import platform
import sys

from . import _config, _plan, _registry, _threads, _version


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f") if f in flags]
    except OSError:
        pass
    return []


def isa():
    """One line: the CPU's vector extensions and the code each compiled backend runs."""
    flags = _cpu_flags()
    parts = ["+".join(f for f in flags if f in ("avx2", "fma", "avx512f")) or
             (flags[-1] if flags else platform.machine())]
    for name, key in (("cython", "simd"), ("numba", "cpu_name")):
        module = _registry.load(name)
        if module is not None and hasattr(module, "build_info"):
            value = module.build_info().get(key)
            if value:
                parts.append(f"{name}: {value}")
    return "; ".join(parts)


def config():
    """The configuration as a dict (what :func:`show_config` prints)."""
    import numpy as np
    info = {
        "fastxent": _version.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "cpu": {"usable_cores": _threads.usable_cores(), "features": _cpu_flags(),
                "isa": isa()},
        "threads": {"default": _threads.get_num_threads(),
                    "FASTXENT_NUM_THREADS": os.environ.get(_threads.ENV_VAR)},
        "backend": {"requested": _config.current()[0][0] or "auto",
                    "FASTXENT_BACKEND": os.environ.get(_config.ENV_VARS["backend"])},
        "backends": {},
    }
    for name in _registry.known_backends():
        module = _registry.load(name)
        entry = {"available": module is not None}
        if module is None:
            entry["why"] = _registry.why(name)
        elif hasattr(module, "build_info"):
            entry.update(module.build_info())
        info["backends"][name] = entry
    return info


def _lines(d, indent=0):
    for key, value in d.items():
        if isinstance(value, dict):
            yield " " * indent + f"{key}:"
            yield from _lines(value, indent + 2)
        else:
            yield " " * indent + f"{key}: {value}"


def show_config(file=None):
    """Print versions, backends (and why one is missing), build and thread settings."""
    print("\n".join(_lines(config())), file=file or sys.stdout)


def main(args=None):
    """``python -m fastxent info``."""
    show_config()
