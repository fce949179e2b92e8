"""Dispatcher, configuration and threads: precedence, isolation, concurrency, fork."""

import multiprocessing
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastxent as fx
from fastxent import _config, _dispatch, _registry, _threads


def _picked(**kw):
    dtype = np.dtype(np.float64)
    module, threads = _dispatch.select("fused", "sparse", dtype, 4096, 1000, **kw)
    return module.NAME, threads


@pytest.fixture(autouse=True)
def _clean_settings():
    yield
    fx.set_backend(None)
    fx.set_num_threads(None)


def test_backend_precedence(backend):
    other = "numpy" if backend != "numpy" else fx.available_backends()[-1]
    fx.set_backend(other)
    assert _picked()[0] == other
    with fx.use_backend(backend):
        assert _picked()[0] == backend
        with fx.use_backend(other):  # nests
            assert _picked()[0] == other
        assert _picked()[0] == backend
        assert _picked(backend=other)[0] == other  # the argument wins
    assert _picked()[0] == other  # restored on exit


def test_env_vars_are_the_last_resort(monkeypatch):
    monkeypatch.setenv("FASTXENT_BACKEND", "numpy")
    monkeypatch.setenv("FASTXENT_NUM_THREADS", "1")
    _config.reload_env()
    try:
        assert _picked() == ("numpy", 1)
        assert "FASTXENT_BACKEND environment variable" in fx.explain(shape=(10, 10))
        fx.set_num_threads(2)
        assert _picked()[1] == 2
    finally:
        monkeypatch.undo()
        _config.reload_env()


def test_bad_env_values_are_named(monkeypatch):
    monkeypatch.setenv("FASTXENT_BACKEND", "gpu")
    monkeypatch.setenv("FASTXENT_NUM_THREADS", "many")
    _config.reload_env()
    try:
        with pytest.raises(ValueError, match="FASTXENT_BACKEND='gpu' is not a known backend"):
            _picked()
        fx.set_backend("numpy")
        with pytest.raises(ValueError, match="FASTXENT_NUM_THREADS='many' is not a thread count"):
            _picked()
    finally:
        monkeypatch.undo()
        _config.reload_env()


def test_unavailable_backend_fails_at_once_and_auto_falls_back(monkeypatch):
    monkeypatch.setitem(_registry._loaded, "numba", (None, "numba is not installed"))
    monkeypatch.setitem(_registry._loaded, "cython", (None, "extension not built"))
    with pytest.raises(fx.BackendUnavailableError,
                       match=r"backend 'numba' is not available: numba is not installed\. To "
                             r"use it, install numba \(pip install numba\)"):
        fx.softmax_cross_entropy_with_logits([[1.0, 0.0]], [[0.0, 1.0]], backend="numba")
    with pytest.raises(fx.BackendUnavailableError, match="build the extension"):
        fx.SparseSoftmaxCrossEntropy(backend="cython").loss([0], [[0.0, 1.0]])
    assert _picked()[0] == "numpy"
    assert fx.available_backends() == ("numpy",)
    assert fx.explain(shape=(5, 5)).endswith("Available backends: numpy.")


def test_thread_count_resolution():
    cores = _threads.usable_cores()
    assert cores == len(os.sched_getaffinity(0)) or cores < len(os.sched_getaffinity(0))
    assert fx.get_num_threads() == cores
    fx.set_num_threads(1)
    assert fx.get_num_threads() == 1
    with fx.threads(-1):
        assert fx.get_num_threads() == cores
    assert fx.get_num_threads() == 1
    assert _picked(n_threads=2)[1] == 2


def test_small_problems_run_on_one_thread():
    module, threads = _dispatch.select("fused", "sparse", np.dtype(np.float32), 256, 10,
                                       n_threads=2)
    assert threads == 1


def test_settings_do_not_leak_between_threads():
    seen = {}
    entered = threading.Event()
    release = threading.Event()

    def inside():
        with fx.use_backend("numpy"), fx.threads(1):
            entered.set()
            release.wait(10)
            seen["inside"] = (_dispatch.requested()[0], fx.get_num_threads())

    def outside():
        entered.wait(10)
        seen["outside"] = (_dispatch.requested()[0], fx.get_num_threads())
        release.set()

    a, b = threading.Thread(target=inside), threading.Thread(target=outside)
    a.start(), b.start()
    a.join(20), b.join(20)
    assert seen["inside"] == ("numpy", 1)
    assert seen["outside"] == ("auto", _threads.usable_cores())


def _reference(x, t):
    return fx.SparseSoftmaxCrossEntropy(reduction="none", backend="numpy").loss_gradient(t, x)


def test_eight_python_threads_with_different_backends_and_thread_counts():
    rng = np.random.default_rng(0)
    jobs = []
    for i in range(8):
        shape = [(3000, 40), (64, 5000), (20000, 3), (512, 200)][i % 4]
        x = rng.standard_normal(shape)
        t = rng.integers(0, shape[1], shape[0])
        jobs.append((x, t, _reference(x, t)))
    backends = fx.available_backends()
    errors = []

    def work(i):
        x, t, (want_loss, want_grad) = jobs[i]
        name = backends[i % len(backends)]
        loss = fx.SparseSoftmaxCrossEntropy(reduction="none", backend=name,
                                            n_threads=1 + i % 2)
        for _ in range(15):
            got_loss, got_grad = loss.loss_gradient(t, x)
            if not (np.allclose(got_loss, want_loss, rtol=1e-12, atol=1e-14)
                    and np.allclose(got_grad, want_grad, rtol=1e-12, atol=1e-14)):
                errors.append((i, name))
                return

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not any(th.is_alive() for th in threads), "deadlock"
    assert not errors


def _child(queue, name):
    x = np.arange(6000, dtype=np.float64).reshape(1000, 6) % 7
    t = np.arange(1000) % 6
    loss, _ = fx.SparseSoftmaxCrossEntropy(backend=name, n_threads=2).loss_gradient(t, x)
    queue.put(float(loss))


def test_forked_child_computes_correctly_after_parent_calls(backend):
    x = np.arange(6000, dtype=np.float64).reshape(1000, 6) % 7
    t = np.arange(1000) % 6
    want = float(fx.SparseSoftmaxCrossEntropy(backend=backend, n_threads=2)(t, x))
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, backend))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0, "child failed or hung"
    assert abs(queue.get(timeout=5) - want) < 1e-12


def test_pure_numpy_env_var_and_import_compiles_nothing():
    code = ("import sys, fastxent as fx; "
            "print(fx.available_backends(), 'numba' in sys.modules)")
    env = dict(os.environ, FASTXENT_PURE_NUMPY="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "('numpy',) False"
    out = subprocess.run([sys.executable, "-c", "import sys, fastxent; "
                          "print('numba' in sys.modules)"], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False", "import fastxent must not import (or compile) numba kernels"


def test_explain_says_backend_threads_and_why():
    text = fx.explain(shape=(4096, 1000), dtype="float32", labels="dense", op="forward",
                      backend="numpy", n_threads=2)
    assert text.startswith("A forward call on (4096, 1000) float32 logits with dense labels "
                           "runs on 'numpy' with 2 threads")
    assert "'numpy' was requested by the backend= argument" in text
    x = np.zeros((7, 3, 5), np.float32)
    assert "(7, 3, 5) float32" in fx.explain(x, axis=1)
    with pytest.raises(ValueError, match="op='backprop' is not one of"):
        fx.explain(shape=(2, 2), op="backprop")


def test_show_config_reports_backends_and_threads(capsys):
    fx.show_config()
    out = capsys.readouterr().out
    for word in ("fastxent:", "numpy:", "numba:", "cython:", "usable_cores:", "features:"):
        assert word in out
    info = __import__("fastxent._info", fromlist=["config"]).config()
    for name in _registry.known_backends():
        entry = info["backends"][name]
        assert entry["available"] == (name in fx.available_backends())
        assert entry["available"] or entry["why"]


def test_command_line_info():
    out = subprocess.run([sys.executable, "-m", "fastxent", "info"], capture_output=True,
                         text=True, check=True).stdout
    assert "backends:" in out and "numpy:" in out
