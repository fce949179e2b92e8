"""Smoke test of the asv suites in benchmarks/: every benchmark runs once, nothing is timed.

Each class in ``benchmarks/bench_*.py`` is run over its whole parameter grid with the shape
parameter swapped for tiny shapes: ``setup`` (skipping combinations that raise
NotImplementedError, as asv does), every ``time_*`` / ``peakmem_*`` / ``track_*`` method
once, and ``teardown``. Outputs are checked against the NumPy backend where that means
something, ``track_*`` values must be positive (and a stream fraction a sane fraction).
asv itself is not needed.
"""

import importlib
import importlib.util
import inspect
import itertools
import pathlib
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"
PACKAGE = "_fastxent_asv_benchmarks"  # a private name: no clash with any "benchmarks"
PREFIXES = ("time_", "peakmem_", "track_", "mem_", "timeraw_")
TINY = {"256x10": "16x10", "4096x1000": "8x100", "2048x32768": "4x300", "1000000x3": "64x3",
        "512x64x8192": "8x4x32", "2048x128x65536": "4x8x64",  # N x D x V: the linear loss
        "2048x256x65536": "4x8x64"}


def _package():
    if PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACKAGE, BENCH_DIR / "__init__.py", submodule_search_locations=[str(BENCH_DIR)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = module
        spec.loader.exec_module(module)
    return sys.modules[PACKAGE]


def _modules():
    _package()
    return [importlib.import_module(f"{PACKAGE}.{p.stem}")
            for p in sorted(BENCH_DIR.glob("bench_*.py"))]


def _classes():
    found = []
    for module in _modules():
        for name, cls in vars(module).items():
            if (inspect.isclass(cls) and not name.startswith("_")
                    and cls.__module__ == module.__name__
                    and any(m.startswith(PREFIXES) for m in dir(cls))):
                found.append(pytest.param(cls, id=f"{module.__name__.split('.')[-1]}.{name}"))
    return found


CLASSES = _classes()


def test_suites_found():
    names = {p.id.split(".")[-1] for p in CLASSES}
    assert {"Forward", "Fused", "BackwardFromLSE", "InplaceGradient", "Memory",
            "StreamFraction"} <= names


def _tiny_params(cls):
    names = list(getattr(cls, "param_names", []))
    params = [list(p) for p in getattr(cls, "params", [])]
    if "shape" in names:
        i = names.index("shape")
        params[i] = [TINY.get(s, s) for s in params[i]]
        assert all(int(v) <= 1000 for s in params[i] for v in s.split("x"))
    return names, params


def _reference(data):
    import fastxent
    cls = {"dense": fastxent.SoftmaxCrossEntropy,
           "integer": fastxent.SparseSoftmaxCrossEntropy,
           "sigmoid": fastxent.SigmoidCrossEntropy}[data.labels_kind]
    return cls(reduction="none", backend="numpy").loss_gradient(data.y, data.x)


def _check_outputs(instance, method):
    """The outputs a benchmark left behind equal the NumPy backend's (where meaningful)."""
    op = getattr(instance, "op", None)
    data = getattr(instance, "data", None)
    if data is None or op not in ("forward", "fused", "backward"):
        return  # in-place: the buffer holds a gradient of a gradient after repeated calls
    tol = dict(rtol=2e-4, atol=2e-5) if data.dtype == np.float32 else dict(rtol=1e-9,
                                                                            atol=1e-11)
    loss, grad = _reference(data)
    np.testing.assert_allclose(data.loss, loss, **tol, err_msg=method)
    if op in ("fused", "backward"):
        np.testing.assert_allclose(data.grad, grad, **tol, err_msg=method)


@pytest.fixture
def fast_tracks(monkeypatch):
    """No time budgets in the smoke run: one sample is enough."""
    for module in _modules():
        for name in ("TIME_BUDGET", "STREAM_BUDGET"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, 1e-4)


@pytest.mark.parametrize("cls", CLASSES)
def test_benchmark_runs_once(cls, fast_tracks):
    names, params = _tiny_params(cls)
    methods = sorted(m for m in dir(cls) if m.startswith(PREFIXES))
    ran = skipped = numpy_skipped = 0
    for combo in itertools.product(*params) if params else [()]:
        instance = cls()
        label = f"{cls.__name__}{dict(zip(names, combo))}"
        try:
            if hasattr(instance, "setup"):
                instance.setup(*combo)
        except NotImplementedError:
            skipped += 1
            params_of = dict(zip(names, combo))
            if params_of.get("backend") == "numpy" and not (
                    params_of.get("labels") == "sigmoid" and cls.__name__ == "BackwardFromLSE"):
                numpy_skipped += 1  # the baseline must never be skipped
            continue
        try:
            for method in methods:
                value = getattr(instance, method)(*combo)
                if method.startswith("track_"):
                    assert isinstance(value, (int, float)) and np.isfinite(value), (label,
                                                                                   value)
                    assert value >= 0, (label, method, value)
                    if "fraction" in method:
                        assert 0 < value < 2, (label, method, value)
                    if method == "track_gbps":
                        assert value > 0, (label, value)
                else:
                    assert value is None, f"{label}.{method} returned {value!r}"
                _check_outputs(instance, f"{label}.{method}")
            ran += 1
        finally:
            if hasattr(instance, "teardown"):
                instance.teardown(*combo)
    assert ran > 0, f"every combination of {cls.__name__} was skipped"
    # Only missing backends and meaningless combinations (sigmoid backward from a saved
    # logsumexp) may be skipped; the NumPy baseline always runs.
    assert numpy_skipped == 0


def test_missing_backend_raises_not_implemented(monkeypatch):
    """A backend that is not available makes setup raise NotImplementedError (asv skips)."""
    import fastxent
    module = importlib.import_module(f"{_package().__name__}.bench_losses")
    monkeypatch.setattr(fastxent, "available_backends", lambda: ("numpy",))
    with pytest.raises(NotImplementedError):
        module.Fused().setup("cython", "float32", "16x10", "integer")
    module.Fused().setup("auto", "float32", "16x10", "integer")  # "auto" never fails


def test_sigmoid_backward_skipped():
    module = importlib.import_module(f"{_package().__name__}.bench_losses")
    with pytest.raises(NotImplementedError):
        module.BackwardFromLSE().setup("numpy", "float64", "16x10", "sigmoid")


def test_grid_has_the_contract_parameters():
    module = importlib.import_module(f"{_package().__name__}.bench_common")
    assert {"numpy", "numba", "cython", "auto"} <= set(module.BACKENDS)
    assert {"256x10", "4096x1000", "2048x32768", "1000000x3"} <= set(module.SHAPES)
    assert {"dense", "integer", "sigmoid"} <= set(module.LABELS)
    assert {"float32", "float64"} <= set(module.DTYPES)
