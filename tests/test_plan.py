"""The call plan, configuration and threads: precedence, auto's rule and its policy file,
the one thread decision, the plan cache, isolation, concurrency, fork."""

import multiprocessing
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastxent as fx
import json

from fastxent import _config, _plan, _registry, _threads


def _picked(backend=None, n_threads=None, shape=(4096, 1000)):
    run, threads, name = _plan.plan("integer", "fused", np.dtype(np.float64), *shape,
                                    backend, n_threads)
    return name, threads


@pytest.fixture(autouse=True)
def _clean_settings():
    yield
    fx.set_backend(None)
    fx.set_num_threads(None)
    _plan.reload_policy()


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
    _plan._plans.clear()
    with pytest.raises(fx.BackendUnavailableError,
                       match=r"backend 'numba' is not available: numba is not installed; or "
                             r"use backend='auto'"):
        fx.softmax_cross_entropy_with_logits([[1.0, 0.0]], [[0.0, 1.0]], backend="numba")
    with pytest.raises(fx.BackendUnavailableError, match="extension not built"):
        fx.SparseSoftmaxCrossEntropy(backend="cython").loss([0], [[0.0, 1.0]])
    with pytest.raises(fx.BackendUnavailableError, match="numba is not installed"):
        fx.set_backend("numba")  # at once, with the real reason
    with pytest.raises(fx.BackendUnavailableError, match="extension not built"):
        fx.use_backend("cython")
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
    assert _picked(n_threads=2)[1] == min(2, cores)
    # counts above the usable cores are clamped to them (issue: 2**31 threads)
    assert _picked(n_threads=2 ** 31)[1] == cores
    fx.set_num_threads(3_000_000_000)
    assert fx.get_num_threads() == cores


def test_small_problems_run_serially_whatever_the_backend():
    # the one thread decision: by size, for a named backend as for auto
    for backend in (None, "numpy", *fx.available_backends()):
        assert _picked(backend, 2, shape=(256, 10))[1] == 0
        assert _picked(backend, 2, shape=(1, 100000))[1] == 0
        assert _picked(backend, 2, shape=(4096, 1000))[1] == min(2, _threads.usable_cores())


def test_auto_takes_the_backends_by_role_untuned():
    names = fx.available_backends()
    for shape in [(64, 4096), (8192, 128), (100000, 20), (512, 50257), (256, 10), (1, 3)]:
        for labels in ("integer", "dense", "sigmoid"):
            for op in ("forward", "fused", "backward"):
                for dtype in (np.float32, np.float64):
                    _, _, name = _plan.plan(labels, op, np.dtype(dtype), *shape)
                    assert name == names[0]
    assert names[-1] == "numpy"
    assert list(names) == [b for b in _plan.ROLE_ORDER if b in names]


def _write_policy(tmp_path, table):
    path = tmp_path / "policy.json"
    path.write_text(table if isinstance(table, str) else json.dumps(table))
    return str(path)


def test_auto_follows_a_tuned_policy(tmp_path, monkeypatch):
    table = {"version": 2, "parallel_min_elements": 1000, "cells": [
        {"labels": "integer", "op": "fused", "dtype": "float64", "min_classes": 500,
         "max_classes": 2000, "order": ["numpy"]}]}
    monkeypatch.setenv(_plan.POLICY_ENV_VAR, _write_policy(tmp_path, table))
    _plan.reload_policy()
    assert _picked()[0] == "numpy"
    assert _picked(shape=(4096, 5000))[0] == fx.available_backends()[0]
    assert _picked(shape=(40, 30))[1] >= 1  # 1200 elements: parallel from 1000 here
    assert "the tuned policy" in fx.explain(shape=(4096, 1000), labels="integer")


@pytest.mark.parametrize("content", ["{not json", json.dumps({"version": 1}),
                                     json.dumps({"version": 2, "cells": [{"labels": "x"}]}),
                                     json.dumps({"version": 2, "cells": [
                                         {"labels": "integer", "op": "fused",
                                          "dtype": "float32", "min_classes": 1,
                                          "max_classes": 9, "order": ["gpu"]}]}),
                                     None, "directory"])
def test_a_broken_policy_warns_once_and_auto_uses_its_rule(tmp_path, monkeypatch, content):
    if content is None:
        path = str(tmp_path / "missing.json")
    elif content == "directory":
        path = str(tmp_path)
    else:
        path = _write_policy(tmp_path, content)
    monkeypatch.setenv(_plan.POLICY_ENV_VAR, path)
    _plan.reload_policy()
    with pytest.warns(RuntimeWarning, match=rf"ignoring {_plan.POLICY_ENV_VAR}=.*Using the "
                                            r"built-in auto rule"):
        assert _picked()[0] == fx.available_backends()[0]
    # a named backend never reads the policy
    _plan.reload_policy()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = fx.sparse_softmax_cross_entropy_with_logits([0], [[1.0, 2.0]], backend="numpy")
    assert np.isfinite(value).all()


def test_the_plan_cache_follows_settings_changes():
    first = _picked()[0]
    fx.set_backend("numpy")
    assert _picked()[0] == "numpy"
    fx.set_backend(None)
    assert _picked()[0] == first
    with fx.use_backend("numpy"):
        assert _picked()[0] == "numpy"
    assert _picked()[0] == first


def test_settings_do_not_leak_between_threads():
    seen = {}
    entered = threading.Event()
    release = threading.Event()

    def inside():
        with fx.use_backend("numpy"), fx.threads(1):
            entered.set()
            release.wait(10)
            seen["inside"] = (_picked()[0], fx.get_num_threads())

    def outside():
        entered.wait(10)
        seen["outside"] = (_picked()[0], fx.get_num_threads())
        release.set()

    a, b = threading.Thread(target=inside), threading.Thread(target=outside)
    a.start(), b.start()
    a.join(20), b.join(20)
    assert seen["inside"] == ("numpy", 1)
    assert seen["outside"] == (fx.available_backends()[0], _threads.usable_cores())


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


def test_pure_numpy_env_var_and_import_changes_nothing():
    code = ("import sys, fastxent as fx; "
            "print(fx.available_backends(), 'numba' in sys.modules)")
    env = dict(os.environ, FASTXENT_PURE_NUMPY="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "('numpy',) False"
    # importing fastxent, and running the NumPy backend, imports no Numba and changes no
    # process-wide setting (Numba's threading layer, OMP_WAIT_POLICY)
    code = ("import os, sys, fastxent as fx; "
            "fx.SoftmaxCrossEntropy(backend='numpy')([[1.0, 0.0]], [[0.0, 1.0]]); "
            "print('numba' in sys.modules, os.environ.get('OMP_WAIT_POLICY'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False None"
    if "numba" in fx.available_backends():
        code = ("import fastxent as fx, numba; fx.softmax([[1.0, 2.0]], backend='numba'); "
                "print(numba.config.THREADING_LAYER)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout.strip()
        assert out == "default"


def test_explain_says_backend_threads_and_why():
    text = fx.explain(shape=(4096, 1000), dtype="float32", labels="dense", op="forward",
                      backend="numpy", n_threads=2)
    two = min(2, _threads.usable_cores())
    assert text.startswith("A forward call on (4096, 1000) float32 logits with dense labels "
                           f"runs on 'numpy' with {two} thread")
    assert "'numpy' was requested by the backend= argument" in text
    x = np.zeros((7, 3, 5), np.float32)
    assert "(7, 3, 5) float32" in fx.explain(x, axis=1)
    with pytest.raises(ValueError, match="op='backprop' is not one of"):
        fx.explain(shape=(2, 2), op="backprop")
    # no internal sentinel values: small problems say why they stay on one thread
    small = fx.explain(shape=(256, 10))
    assert "too small for a parallel launch to pay" in small
    assert "4611686018427387904" not in small and "1 << 62" not in small


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
