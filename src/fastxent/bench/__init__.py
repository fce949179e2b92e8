"""Tooling, not the core: the benchmark (``python -m fastxent bench``), its shared timer,
cells and bytes model (``common``), memory streams, the auto-policy tuner, the overhead
measurement, the Numba warm-up, the estimator benchmark and the correctness self-check.
Nothing here is imported by ``import fastxent``."""
