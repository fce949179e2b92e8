"""Every public loss and option combination against the float64 oracle, per backend."""

import itertools

import numpy as np
import pytest

import fastxent as fx

from . import _reference as ref
from .conftest import tol

N, C = 9, 7
REDUCTIONS = ["none", "sum", "mean"]


def _inputs(dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((N, C)) * 3).astype(dtype)
    y = rng.random((N, C)).astype(dtype)  # soft labels that do not sum to 1 on purpose
    t = rng.integers(0, C, N)
    t[[2, 5]] = -100  # rows to ignore when ignore_index=-100
    cw = rng.random(C) + 0.5
    sw = rng.random(N) + 0.1
    return x, y, t, cw, sw


def _assert_close(got, want, dtype):
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol, atol=atol)


def test_tensorflow_documented_value(backend):
    # TF docs: logits [[2.0, 1.0, 0.1]], labels [[1, 0, 0]] -> 0.4170299 (float32).
    got = fx.softmax_cross_entropy_with_logits(
        [[1, 0, 0]], np.array([[2.0, 1.0, 0.1]], np.float32), backend=backend)
    assert got.dtype == np.float32
    assert abs(float(got[0]) - 0.4170299) < 1e-6


DENSE_OPTIONS = list(itertools.product([0.0, 0.1], [False, True], [False, True], [0.0, 1e-2],
                                       REDUCTIONS))


@pytest.mark.parametrize("eps,use_cw,use_sw,z,reduction", DENSE_OPTIONS)
def test_dense_matches_oracle(backend, dtype, eps, use_cw, use_sw, z, reduction):
    x, y, _, cw, sw = _inputs(dtype)
    cw, sw = (cw if use_cw else None), (sw if use_sw else None)
    loss = fx.SoftmaxCrossEntropy(label_smoothing=eps, class_weight=cw, z_loss=z,
                                  reduction=reduction, backend=backend)
    want, wgrad, wdy, _ = ref.softmax_batch(x, y, cw=cw, eps=eps, z=z, sw=sw,
                                            reduction=reduction)
    _assert_close(loss(y, x, sample_weight=sw), want, dtype)
    _assert_close(loss.gradient(y, x, sample_weight=sw), wgrad, dtype)
    value, grad = loss.loss_gradient(y, x, sample_weight=sw)
    _assert_close(value, want, dtype)
    _assert_close(grad, wgrad, dtype)
    _assert_close(loss.labels_gradient(y, x, sample_weight=sw), wdy, dtype)
    assert grad.dtype == dtype and np.asarray(value).dtype == dtype
    functional = fx.softmax_cross_entropy_with_logits(
        y, x, label_smoothing=eps, class_weight=cw, sample_weight=sw, z_loss=z,
        reduction=reduction, backend=backend)
    _assert_close(functional, want, dtype)


SPARSE_OPTIONS = list(itertools.product([0.0, 0.1], [False, True], [False, True], [0.0, 1e-2],
                                        REDUCTIONS, [None, -100]))


@pytest.mark.parametrize("eps,use_cw,use_sw,z,reduction,ignore", SPARSE_OPTIONS)
def test_sparse_matches_oracle(backend, dtype, eps, use_cw, use_sw, z, reduction, ignore):
    x, _, t, cw, sw = _inputs(dtype, seed=1)
    if ignore is None:
        t = np.where(t == -100, 3, t)
    cw, sw = (cw if use_cw else None), (sw if use_sw else None)
    keep = t != -100
    denom_w = None if cw is None else [cw[k] if k >= 0 else 0.0 for k in t]
    want, wgrad, _, _ = ref.softmax_batch(x, ref.onehot(t, C), cw=cw, eps=eps, z=z, sw=sw,
                                          reduction=reduction, keep=keep, denom_w=denom_w)
    loss = fx.SparseSoftmaxCrossEntropy(ignore_index=ignore, label_smoothing=eps,
                                        class_weight=cw, z_loss=z, reduction=reduction,
                                        backend=backend)
    _assert_close(loss(t, x, sample_weight=sw), want, dtype)
    _assert_close(loss.gradient(t, x, sample_weight=sw), wgrad, dtype)
    value, grad = loss.loss_gradient(t, x, sample_weight=sw)
    _assert_close(value, want, dtype)
    _assert_close(grad, wgrad, dtype)
    functional = fx.sparse_softmax_cross_entropy_with_logits(
        t, x, ignore_index=ignore, label_smoothing=eps, class_weight=cw, sample_weight=sw,
        z_loss=z, reduction=reduction, backend=backend)
    _assert_close(functional, want, dtype)


@pytest.mark.parametrize("eps,use_cw,z,sparse", list(itertools.product(
    [0.0, 0.2], [False, True], [0.0, 1e-2], [False, True])))
def test_hessp_matches_oracle(backend, dtype, eps, use_cw, z, sparse):
    x, y, t, cw, sw = _inputs(dtype, seed=2)
    t = np.abs(t) % C
    labels, dense = (t, ref.onehot(t, C)) if sparse else (y, y)
    cw = cw if use_cw else None
    v = np.random.default_rng(3).standard_normal((N, C)).astype(dtype)
    cls = fx.SparseSoftmaxCrossEntropy if sparse else fx.SoftmaxCrossEntropy
    loss = cls(label_smoothing=eps, class_weight=cw, z_loss=z, reduction="mean",
               backend=backend)
    got = loss.hessp(labels, x, v, sample_weight=sw)
    _, _, _, s = ref.softmax_batch(x, dense, cw=cw, eps=eps, z=z, sw=sw, reduction="mean",
                                   denom_w=None if cw is None or not sparse else cw[t])
    want = np.array([ref.softmax_hessp_row(list(map(float, x[i])), list(dense[i]),
                                           list(map(float, v[i])),
                                           None if cw is None else list(cw), eps, z)
                     for i in range(N)]) * s
    _assert_close(got, want, dtype)


@pytest.mark.parametrize("eps,use_pw,use_sw,reduction", list(itertools.product(
    [0.0, 0.1], [False, True], [None, "row", "element"], REDUCTIONS)))
def test_sigmoid_matches_oracle(backend, dtype, eps, use_pw, use_sw, reduction):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((N, C)) * 4).astype(dtype)
    y = (rng.random((N, C)) > 0.5).astype(dtype)
    pw = rng.random(C) * 3 if use_pw else None
    sw = {None: None, "row": rng.random(N) + 0.1, "element": rng.random((N, C)) + 0.1}[use_sw]
    want, wgrad, wdy = ref.sigmoid_batch(x, y, pw=pw, eps=eps, sw=sw, reduction=reduction)
    loss = fx.SigmoidCrossEntropy(pos_weight=pw, label_smoothing=eps, reduction=reduction,
                                  backend=backend)
    _assert_close(loss(y, x, sample_weight=sw), want, dtype)
    _assert_close(loss.gradient(y, x, sample_weight=sw), wgrad, dtype)
    value, grad = loss.loss_gradient(y, x, sample_weight=sw)
    _assert_close(value, want, dtype)
    _assert_close(grad, wgrad, dtype)
    _assert_close(loss.labels_gradient(y, x, sample_weight=sw), wdy, dtype)
    _assert_close(fx.sigmoid_cross_entropy_with_logits(
        y, x, pos_weight=pw, label_smoothing=eps, sample_weight=sw, reduction=reduction,
        backend=backend), want, dtype)


def test_weighted_cross_entropy_is_tf_formula(backend, dtype):
    # TF: (1 - z) x + (1 + (q - 1) z) (log1p(exp(-|x|)) + max(-x, 0)).
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((4, 3)) * 3).astype(dtype)
    z = rng.random((4, 3)).astype(dtype)
    q = 2.5
    x64, z64 = x.astype(np.float64), z.astype(np.float64)
    want = (1 - z64) * x64 + (1 + (q - 1) * z64) * (np.log1p(np.exp(-np.abs(x64)))
                                                    + np.maximum(-x64, 0))
    with fx.use_backend(backend):
        _assert_close(fx.weighted_cross_entropy_with_logits(z, x, q), want, dtype)


def test_grad_loss_scales_gradient(backend, dtype):
    x, y, t, _, sw = _inputs(dtype, seed=6)
    t = np.abs(t) % C
    g = np.random.default_rng(7).random(N).astype(dtype)
    loss = fx.SparseSoftmaxCrossEntropy(reduction="none", backend=backend)
    _, wgrad, _, _ = ref.softmax_batch(x, ref.onehot(t, C), sw=sw, grad_loss=g)
    _assert_close(loss.gradient(t, x, sample_weight=sw, grad_loss=g), wgrad, dtype)
    mean = fx.SoftmaxCrossEntropy(backend=backend)
    _, wgrad, _, _ = ref.softmax_batch(x, y, reduction="mean", grad_loss=2.5)
    _assert_close(mean.gradient(y, x, grad_loss=2.5), wgrad, dtype)


@pytest.mark.parametrize("name", ["logsumexp", "log_softmax", "softmax"])
def test_utilities_match_oracle(backend, dtype, name):
    x = (np.random.default_rng(8).standard_normal((N, C)) * 50).astype(dtype)
    lse = np.array([ref._lse(list(map(float, row))) for row in x])
    want = {"logsumexp": lse, "log_softmax": x - lse[:, None],
            "softmax": np.exp(x.astype(np.float64) - lse[:, None])}[name]
    _assert_close(getattr(fx, name)(x, axis=-1, backend=backend), want, dtype)


def test_empty_batch_mean_is_zero(backend, dtype):
    x = np.empty((0, 4), dtype)
    loss = fx.SparseSoftmaxCrossEntropy(backend=backend)
    value, grad = loss.loss_gradient(np.empty(0, int), x)
    assert value == 0 and grad.shape == (0, 4)
    all_ignored = np.full(3, -1)
    value, grad = fx.SparseSoftmaxCrossEntropy(ignore_index=-1, backend=backend).loss_gradient(
        all_ignored, np.ones((3, 4), dtype))
    assert value == 0 and np.all(grad == 0)


def test_saved_lse_backward_equals_fused(backend, dtype):
    x, y, t, _, _ = _inputs(dtype, seed=9)
    t = np.abs(t) % C
    for loss, labels in [(fx.SoftmaxCrossEntropy(backend=backend), y),
                         (fx.SparseSoftmaxCrossEntropy(backend=backend), t)]:
        lse = np.empty(N, dtype)
        value = loss(labels, x, lse_out=lse)
        _assert_close(lse, [ref._lse(list(map(float, r))) for r in x], dtype)
        _, want = loss.loss_gradient(labels, x)
        np.testing.assert_allclose(loss.gradient(labels, x, lse=lse), want,
                                   rtol=tol(dtype)[0] * 10, atol=tol(dtype)[1] * 10)
        assert np.isfinite(value)
