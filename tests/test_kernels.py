"""Kernel-level conformance: every compiled backend against the NumPy reference kernels.

This runs below the public API (no validation, no reduction), so a backend is checked on
exactly the contract in ``fastxent._backends``: same outputs, in-place safety, bad-label
counts, exact zeros for masked classes, and the same bits for 1 and 2 threads.
"""

import numpy as np
import pytest

from fastxent import _registry
from fastxent._backends import numpy_ as ref

COMPILED = [b for b in _registry.known_backends() if b != "numpy"]
SHAPES = [(1, 1), (3, 2), (7, 3), (33, 10), (64, 1000), (5, 4099)]
RTOL = {np.float32: 2e-5, np.float64: 1e-12}


@pytest.fixture(params=COMPILED)
def backend(request):
    module = _registry.load(request.param)
    if module is None:
        pytest.skip(f"{request.param} backend unavailable: {_registry.why(request.param)}")
    return module


def _data(shape, dtype, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    n, c = shape
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    y = rng.random(shape).astype(dtype)
    t = rng.integers(0, c, n).astype(np.intp)
    cw = (rng.random(c) + 0.5).astype(dtype)
    v = rng.standard_normal(shape).astype(dtype)
    row_scale = (rng.random(n) + 0.5).astype(dtype)
    return x, y, t, cw, v, row_scale


def _close(a, b, dtype):
    np.testing.assert_allclose(a, b, rtol=RTOL[dtype], atol=RTOL[dtype] * 10)


def _call_both(backend, name, args, outs):
    """Run kernel ``name`` on both backends with fresh copies of ``outs``; return results."""
    results = []
    for module in (ref, backend):
        bufs = [np.full_like(o, np.nan) for o in outs]
        status = getattr(module, name)(*args(*bufs))
        results.append((status, bufs))
    return results


OPTIONS = [(0.0, 0.0, False), (0.1, 0.0, True), (0.0, 1e-3, False), (0.2, 1e-2, True)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("eps,z,weighted", OPTIONS)
def test_softmax_kernels_match_reference(backend, dtype, shape, eps, z, weighted):
    x, y, t, cw, v, s = _data(shape, dtype)
    n, c = shape
    cw = cw if weighted else np.empty(0, dtype)
    loss, grad, lse = np.empty(n, dtype), np.empty(shape, dtype), np.empty(n, dtype)
    cases = {
        "dense_forward": (lambda l, e: (x, y, cw, eps, z, l, e, 2), [loss, lse]),
        "dense_backward": (lambda g: (x, y, cw, eps, z, s, np.empty(0, dtype), g, 2), [grad]),
        "dense_fused": (lambda l, g: (x, y, cw, eps, z, s, l, g, 2), [loss, grad]),
        "dense_hessp": (lambda o: (x, y, cw, eps, z, s, v, o, 2), [grad]),
        "dense_label_grad": (lambda o: (x, cw, eps, s, np.empty(0, dtype), o, 2), [grad]),
        "sparse_forward": (lambda l, e: (x, t, cw, eps, z, True, 1, l, e, 2), [loss, lse]),
        "sparse_backward": (
            lambda g: (x, t, cw, eps, z, False, 0, s, np.empty(0, dtype), g, 2), [grad]),
        "sparse_fused": (lambda l, g: (x, t, cw, eps, z, True, 0, s, l, g, 2), [loss, grad]),
        "sparse_hessp": (lambda o: (x, t, cw, eps, z, True, 2, s, v, o, 2), [grad]),
    }
    for name, (args, outs) in cases.items():
        (st_ref, want), (st, got) = _call_both(backend, name, args, outs)
        assert st == st_ref == 0, name
        for w, g in zip(want, got):
            _close(g, w, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_backward_from_saved_lse(backend, dtype, shape):
    x, y, t, cw, _, s = _data(shape, dtype, seed=1)
    lse = np.empty(shape[0], dtype)
    ref.logsumexp(x, lse, 1)
    for name, args in [
        ("dense_backward", lambda g: (x, y, cw, 0.1, 1e-3, s, lse, g, 2)),
        ("sparse_backward", lambda g: (x, t, cw, 0.1, 1e-3, False, 0, s, lse, g, 2)),
        ("dense_label_grad", lambda g: (x, cw, 0.1, s, lse, g, 2)),
    ]:
        (_, [want]), (_, [got]) = _call_both(backend, name, args, [np.empty(shape, dtype)])
        _close(got, want, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("eps,weighted", [(0.0, False), (0.1, True)])
def test_sigmoid_kernels_match_reference(backend, dtype, shape, eps, weighted):
    x, y, _, pw, _, _ = _data(shape, dtype, seed=2, scale=10.0)
    n, c = shape
    pw = pw * 2 if weighted else np.empty(0, dtype)
    rng = np.random.default_rng(3)
    for scale in [np.ones((1, 1), dtype), rng.random((n, 1)).astype(dtype),
                  rng.random(shape).astype(dtype)]:
        for loss in [np.empty(shape, dtype), np.empty(n, dtype)]:
            cases = {
                "sigmoid_forward": (lambda l: (x, y, pw, eps, l, 2), [loss]),
                "sigmoid_backward": (lambda g: (x, y, pw, eps, scale, g, 2), [x]),
                "sigmoid_fused": (lambda l, g: (x, y, pw, eps, scale, l, g, 2), [loss, x]),
                "sigmoid_label_grad": (lambda o: (x, pw, eps, scale, o, 2), [x]),
            }
            for name, (args, outs) in cases.items():
                (_, want), (_, got) = _call_both(backend, name, args, outs)
                for w, g in zip(want, got):
                    _close(g, w, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_utilities_match_reference(backend, dtype, shape):
    x = _data(shape, dtype, seed=4, scale=30.0)[0]
    for name, out in [("logsumexp", np.empty(shape[0], dtype)),
                      ("log_softmax", np.empty(shape, dtype)), ("softmax", np.empty(shape, dtype))]:
        (_, [want]), (_, [got]) = _call_both(backend, name, lambda o: (x, o, 2), [out])
        _close(got, want, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_in_place_gradients_equal_out_of_place(backend, dtype):
    shape = (17, 300)
    x, y, t, cw, v, s = _data(shape, dtype, seed=5)
    kernels = [
        ("dense_backward", lambda xx, g: (xx, y, cw, 0.1, 0.0, s, np.empty(0, dtype), g, 2)),
        ("dense_fused", lambda xx, g: (xx, y, cw, 0.1, 0.0, s, np.empty(shape[0], dtype), g, 2)),
        ("sparse_backward", lambda xx, g: (xx, t, cw, 0.1, 0.0, True, 3, s,
                                           np.empty(0, dtype), g, 2)),
        ("sparse_fused", lambda xx, g: (xx, t, cw, 0.0, 1e-3, False, 0, s,
                                        np.empty(shape[0], dtype), g, 2)),
        ("dense_label_grad", lambda xx, g: (xx, cw, 0.1, s, np.empty(0, dtype), g, 2)),
        ("sigmoid_backward", lambda xx, g: (xx, y, cw, 0.1, s.reshape(-1, 1), g, 2)),
        ("sigmoid_fused", lambda xx, g: (xx, y, cw, 0.1, s.reshape(-1, 1),
                                         np.empty(shape[0], dtype), g, 2)),
        ("sigmoid_label_grad", lambda xx, g: (xx, cw, 0.1, s.reshape(-1, 1), g, 2)),
        ("log_softmax", lambda xx, g: (xx, g, 2)),
        ("softmax", lambda xx, g: (xx, g, 2)),
    ]
    for name, args in kernels:
        out = np.empty(shape, dtype)
        getattr(backend, name)(*args(x, out))
        xx = x.copy()
        getattr(backend, name)(*args(xx, xx))
        np.testing.assert_array_equal(xx, out, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", [3, 40, 5000])
def test_bad_labels_are_counted_and_never_read(backend, dtype, c):
    x, _, t, _, v, s = _data((6, c), dtype, seed=6)
    t[[1, 4]] = [c, -(2 ** 62)]
    t[2] = -100
    empty = np.empty(0, dtype)
    loss, grad = np.empty(6, dtype), np.empty((6, c), dtype)
    assert backend.sparse_fused(x, t, empty, 0.0, 0.0, True, -100, s, loss, grad, 2) == 2
    assert backend.sparse_forward(x, t, empty, 0.0, 0.0, False, 0, loss, empty, 2) == 3
    assert backend.sparse_backward(x, t, empty, 0.0, 0.0, True, -100, s, empty, grad, 2) == 2
    assert backend.sparse_hessp(x, t, empty, 0.0, 0.0, True, -100, s, v, grad, 2) == 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_masked_classes_contribute_exact_zero_and_nan_stays_in_its_row(backend, dtype):
    x, y, t, _, _, s = _data((4, 50), dtype, seed=7)
    x[:, ::3] = -np.inf
    y[:, ::3] = 0
    t[:] = 1
    x[2, 5] = np.nan
    empty = np.empty(0, dtype)
    for name, args in [
        ("dense_fused", lambda l, g: (x, y, empty, 0.0, 0.0, s, l, g, 2)),
        ("sparse_fused", lambda l, g: (x, t, empty, 0.0, 0.0, False, 0, s, l, g, 2)),
    ]:
        (_, want), (_, (loss, grad)) = _call_both(
            backend, name, args, [np.empty(4, dtype), np.empty((4, 50), dtype)])
        assert np.isnan(loss[2]) and np.isfinite(loss[[0, 1, 3]]).all(), name
        assert np.all(grad[[0, 1, 3], ::3] == 0), name
        _close(loss[[0, 1, 3]], want[0][[0, 1, 3]], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1000, 3), (64, 5000), (3, 70000)])
def test_same_bits_for_any_thread_count(backend, dtype, shape):
    x, y, t, cw, _, s = _data(shape, dtype, seed=8)
    results = []
    for n_threads in (1, 2, 3):
        loss, grad = np.empty(shape[0], dtype), np.empty(shape, dtype)
        backend.sparse_fused(x, t, cw, 0.1, 1e-4, False, 0, s, loss, grad, n_threads)
        dl, dg = np.empty(shape[0], dtype), np.empty(shape, dtype)
        backend.dense_fused(x, y, cw, 0.1, 1e-4, s, dl, dg, n_threads)
        results.append((loss, grad, dl, dg))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def _readonly(*arrays):
    for a in arrays:
        a.flags.writeable = False
    return arrays


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(9, 40), (300, 3), (5000, 10)])
def test_every_input_may_be_read_only(backend, dtype, shape):
    x, y, t, cw, v, s = _readonly(*_data(shape, dtype, seed=9))
    lse = np.empty(shape[0], dtype)
    ref.logsumexp(x, lse, 1)
    (lse,) = _readonly(lse)
    s2 = s.reshape(-1, 1)
    for name, args in [
        ("dense_backward", lambda g: (x, y, cw, 0.1, 1e-3, s, lse, g, 2)),
        ("sparse_backward", lambda g: (x, t, cw, 0.1, 1e-3, True, 1, s, lse, g, 2)),
        ("sparse_backward", lambda g: (x, t, cw, 0.0, 0.0, False, 0, s[:1], lse, g, 2)),
        ("dense_label_grad", lambda g: (x, cw, 0.1, s, lse, g, 2)),
        ("dense_hessp", lambda g: (x, y, cw, 0.1, 1e-3, s, v, g, 2)),
        ("sparse_hessp", lambda g: (x, t, cw, 0.1, 1e-3, False, 0, s, v, g, 2)),
        ("dense_fused", lambda g: (x, y, cw, 0.1, 1e-3, s, np.empty(shape[0], dtype), g, 2)),
        ("sparse_fused", lambda g: (x, t, cw, 0.1, 1e-3, True, 1, s,
                                    np.empty(shape[0], dtype), g, 2)),
        ("sigmoid_fused", lambda g: (x, y, cw, 0.1, s2, np.empty(shape, dtype), g, 2)),
        ("sigmoid_label_grad", lambda g: (x, cw, 0.1, s2, g, 2)),
        ("softmax", lambda g: (x, g, 2)),
    ]:
        (_, [want]), (_, [got]) = _call_both(backend, name, args, [np.empty(shape, dtype)])
        _close(got, want, dtype)
