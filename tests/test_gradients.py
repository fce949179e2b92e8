"""Finite-difference checks (4th-order central differences, float64) of gradient,
labels_gradient and hessp, and the identities between loss, gradient and loss_gradient."""

import numpy as np
import pytest

import fastxent as fx

N, C = 6, 5


def _fd(f, x, direction, h=1e-3):
    """4th-order central difference of f along ``direction`` at x."""
    return (f(x - 2 * h * direction) - 8 * f(x - h * direction)
            + 8 * f(x + h * direction) - f(x + 2 * h * direction)) / (12 * h)


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C)) * 2
    y = rng.random((N, C))
    t = rng.integers(0, C, N)
    cw = rng.random(C) + 0.5
    sw = rng.random(N) + 0.5
    d = rng.standard_normal((N, C))
    return x, y, t, cw, sw, d


LOSSES = [
    ("dense", lambda b: fx.SoftmaxCrossEntropy(label_smoothing=0.1, class_weight=[1, 2, 3, .5, 1],
                                               z_loss=0.05, backend=b)),
    ("dense-sum", lambda b: fx.SoftmaxCrossEntropy(reduction="sum", backend=b)),
    ("sparse", lambda b: fx.SparseSoftmaxCrossEntropy(label_smoothing=0.2, z_loss=0.01,
                                                      class_weight=[1, 2, 3, .5, 1],
                                                      ignore_index=2, backend=b)),
    ("sigmoid", lambda b: fx.SigmoidCrossEntropy(pos_weight=[1, 2, 3, .5, 1],
                                                 label_smoothing=0.1, backend=b)),
]


@pytest.mark.parametrize("kind,make", LOSSES, ids=[k for k, _ in LOSSES])
def test_gradient_matches_finite_differences(backend, kind, make):
    x, y, t, _, sw, d = _problem()
    labels = t if kind == "sparse" else y
    loss = make(backend)
    fd = _fd(lambda z: float(loss(labels, z, sample_weight=sw)), x, d)
    analytic = np.sum(loss.gradient(labels, x, sample_weight=sw) * d)
    np.testing.assert_allclose(analytic, fd, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("kind,make", [LOSSES[0], LOSSES[1], LOSSES[3]],
                         ids=["dense", "dense-sum", "sigmoid"])
def test_labels_gradient_matches_finite_differences(backend, kind, make):
    x, y, _, _, sw, d = _problem(1)
    loss = make(backend)
    fd = _fd(lambda z: float(loss(z, x, sample_weight=sw)), y, d)
    analytic = np.sum(loss.labels_gradient(y, x, sample_weight=sw) * d)
    np.testing.assert_allclose(analytic, fd, rtol=1e-7, atol=1e-9)


def test_labels_gradient_is_minus_log_softmax(backend):
    # TF2 backpropagates into labels: d loss / d labels = -log_softmax(logits).
    x, y, *_ = _problem(2)
    loss = fx.SoftmaxCrossEntropy(reduction="sum", backend=backend)
    np.testing.assert_allclose(loss.labels_gradient(y, x), -fx.log_softmax(x), rtol=1e-12)


@pytest.mark.parametrize("kind,make", [LOSSES[0], LOSSES[2]], ids=["dense", "sparse"])
def test_hessp_matches_finite_differences_of_gradient(backend, kind, make):
    x, y, t, _, sw, d = _problem(3)
    labels = t if kind == "sparse" else y
    loss = make(backend)
    v = np.random.default_rng(9).standard_normal((N, C))
    # Directional derivative of the gradient along v equals H v.
    fd = _fd(lambda z: loss.gradient(labels, z, sample_weight=sw), x, v)
    np.testing.assert_allclose(loss.hessp(labels, x, v, sample_weight=sw), fd, rtol=1e-6,
                               atol=1e-9)


def test_soft_labels_not_summing_to_one_give_the_true_gradient(backend):
    # The folklore fused gradient p - y is wrong when sum(y) != 1; ours is sum(y) p - y.
    x, y, *_ = _problem(4)
    y = y * 3
    loss = fx.SoftmaxCrossEntropy(reduction="sum", backend=backend)
    p = fx.softmax(x)
    np.testing.assert_allclose(loss.gradient(y, x), y.sum(1, keepdims=True) * p - y,
                               rtol=1e-12, atol=1e-14)
    assert not np.allclose(loss.gradient(y, x), p - y)


@pytest.mark.parametrize("kind,make", LOSSES, ids=[k for k, _ in LOSSES])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_loss_gradient_equals_loss_and_gradient(backend, dtype, kind, make, reduction):
    x, y, t, _, sw, _ = _problem(5)
    x, y = x.astype(dtype), y.astype(dtype)
    labels = t if kind == "sparse" else y
    loss = make(backend)
    loss.reduction = reduction
    value, grad = loss.loss_gradient(labels, x, sample_weight=sw)
    np.testing.assert_array_equal(value, loss(labels, x, sample_weight=sw))
    np.testing.assert_allclose(grad, loss.gradient(labels, x, sample_weight=sw),
                               rtol=1e-6 if dtype == np.float32 else 1e-14, atol=1e-12)


@pytest.mark.parametrize("kind,make", LOSSES, ids=[k for k, _ in LOSSES])
def test_out_buffers_are_written_in_place(backend, dtype, kind, make):
    x, y, t, _, _, _ = _problem(6)
    x, y = x.astype(dtype), y.astype(dtype)
    labels = t if kind == "sparse" else y
    loss = make(backend)
    want_value, want_grad = loss.loss_gradient(labels, x)

    grad_out = np.empty_like(x)
    loss_out = np.empty((), dtype)
    value, grad = loss.loss_gradient(labels, x, loss_out=loss_out, gradient_out=grad_out)
    assert grad is grad_out and value is loss_out
    np.testing.assert_array_equal(grad_out, want_grad)
    assert loss_out == want_value

    out = np.empty_like(x)
    assert loss.gradient(labels, x, gradient_out=out) is out
    np.testing.assert_allclose(out, want_grad, rtol=1e-6)

    # In place: the gradient overwrites the logits, no other N x C buffer.
    xx = x.copy()
    result = loss.gradient(labels, xx, gradient_out=xx)
    assert np.shares_memory(result, xx)
    np.testing.assert_allclose(xx, want_grad, rtol=1e-6)
    xx = x.copy()
    _, result = loss.loss_gradient(labels, xx, gradient_out=xx)
    assert np.shares_memory(result, xx)
    np.testing.assert_array_equal(xx, want_grad)


def test_in_place_with_moved_axis_is_still_correct(backend):
    x, _, t, _, _, _ = _problem(7)
    loss = fx.SparseSoftmaxCrossEntropy(axis=0, backend=backend)
    xt = np.ascontiguousarray(x.T)
    want = loss.gradient(t, xt)
    result = loss.gradient(t, xt, gradient_out=xt)
    assert result is xt
    np.testing.assert_allclose(xt, want, rtol=1e-13)


def test_loss_out_for_unreduced_losses(backend, dtype):
    x, _, t, _, _, _ = _problem(8)
    out = np.empty(N, dtype)
    got = fx.SparseSoftmaxCrossEntropy(reduction="none", backend=backend).loss(
        t, x.astype(dtype), loss_out=out)
    assert got is out
    np.testing.assert_allclose(out, fx.sparse_softmax_cross_entropy_with_logits(t, x),
                               rtol=1e-6)
