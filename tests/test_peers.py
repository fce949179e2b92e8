"""Where the peers' own test suites disagreed with fastxent 0.1 (issue 14): signed class
weights (PyTorch), mixed-precision buffers (scikit-learn's loss protocol), bfloat16 (JAX's
ml_dtypes), broadcast labels (TensorFlow, Keras on torch). Expected values are written from
the peers' documented formulas, in float64, not taken from fastxent."""

import numpy as np
import pytest

import fastxent as fx

RNG = np.random.default_rng(14)


def _log_softmax(x):
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


# ------------------------------------------------------------ 1. signed class weights

@pytest.mark.parametrize("weights", ["mixed", "non-positive"])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_signed_class_weights_follow_pytorch(backend, weights, reduction):
    # torch.nn.functional.cross_entropy(x, t, weight=w): l_i = -w[t_i] log p[i, t_i]; "mean"
    # divides by sum_i w[t_i] (which may be negative); PyTorch's samplers draw w from [-9, 9].
    n, c = 40, 5
    x = RNG.standard_normal((n, c))
    t = RNG.integers(0, c, n)
    w = RNG.uniform(-9, 9, c) if weights == "mixed" else -RNG.uniform(0.5, 9, c)
    lp = _log_softmax(x)
    per_row = -w[t] * lp[np.arange(n), t]
    dz = np.exp(lp) - np.eye(c)[t]
    want = {"none": per_row, "sum": per_row.sum(), "mean": per_row.sum() / w[t].sum()}
    div = {"none": 1.0, "sum": 1.0, "mean": w[t].sum()}[reduction]
    loss = fx.SparseSoftmaxCrossEntropy(class_weight=w, reduction=reduction, backend=backend)
    value, grad = loss.loss_gradient(t, x)
    np.testing.assert_allclose(value, want[reduction], rtol=1e-12)
    if reduction == "none":
        np.testing.assert_allclose(grad, w[t, None] * dz, rtol=1e-12, atol=1e-15)
    else:
        np.testing.assert_allclose(grad, w[t, None] * dz / div, rtol=1e-12, atol=1e-15)


def test_class_weights_must_still_be_finite():
    with pytest.raises(ValueError, match="class_weight"):
        fx.sparse_softmax_cross_entropy_with_logits([0], [[1.0, 2.0]], class_weight=[1, np.nan])


# ------------------------------------------------------ 2. mixed-precision buffers

@pytest.mark.parametrize("x_dtype, buf_dtype", [(np.float32, np.float64),
                                                (np.float64, np.float32)])
@pytest.mark.parametrize("cls", ["softmax", "sparse", "sigmoid"])
def test_protocol_methods_store_into_buffers_of_either_precision(backend, x_dtype, buf_dtype,
                                                                 cls):
    # scikit-learn's HistGradientBoosting: float64 raw predictions, float32 gradient and
    # hessian buffers. Computed in the logits' precision, stored in the buffer's.
    n, c = 30, 4
    x = RNG.standard_normal((n, c)).astype(x_dtype)
    if cls == "sparse":
        y, loss = RNG.integers(0, c, n), fx.SparseSoftmaxCrossEntropy
    elif cls == "softmax":
        y, loss = RNG.dirichlet(np.ones(c), n).astype(x_dtype), fx.SoftmaxCrossEntropy
    else:
        y, loss = (RNG.uniform(size=(n, c)) < 0.5).astype(x_dtype), fx.SigmoidCrossEntropy
    obj = loss(reduction="none", backend=backend)
    shape = (n,) if cls != "sigmoid" else (n, c)
    ref_l, ref_g = obj.loss_gradient(y, x)
    _, ref_h = obj.gradient_hessian(y, x)
    lo, go, ho = np.empty(shape, buf_dtype), np.empty((n, c), buf_dtype), np.empty((n, c),
                                                                                   buf_dtype)
    l, g = obj.loss_gradient(y, x, loss_out=lo, gradient_out=go)
    assert l is lo and g is go
    np.testing.assert_array_equal(lo, ref_l.astype(buf_dtype))
    np.testing.assert_array_equal(go, ref_g.astype(buf_dtype))
    g, h = obj.gradient_hessian(y, x, gradient_out=go, hessian_out=ho)
    assert g is go and h is ho
    np.testing.assert_array_equal(ho, ref_h.astype(buf_dtype))
    assert obj.loss(y, x, loss_out=lo) is lo
    assert obj.gradient(y, x, gradient_out=go) is go
    np.testing.assert_array_equal(go, ref_g.astype(buf_dtype))


def test_integer_buffers_are_still_refused():
    with pytest.raises(ValueError, match="gradient_out"):
        fx.SparseSoftmaxCrossEntropy().gradient([0], np.zeros((1, 2)),
                                                gradient_out=np.empty((1, 2), np.int64))


# ------------------------------------------------------------------------ 4. bfloat16

def test_bfloat16_is_computed_in_float32():
    ml_dtypes = pytest.importorskip("ml_dtypes")  # in the test extra: runs in CI
    bf16 = ml_dtypes.bfloat16
    x = RNG.standard_normal((8, 6)).astype(bf16)
    t = RNG.integers(0, 6, 8)
    want = -_log_softmax(x.astype(np.float64))[np.arange(8), t]
    got = fx.sparse_softmax_cross_entropy_with_logits(t, x)
    assert got.dtype == np.float32  # as for float16: the compute dtype comes back
    np.testing.assert_allclose(got, want, rtol=1e-6)
    y = np.eye(6, dtype=bf16)[t]
    np.testing.assert_allclose(fx.softmax_cross_entropy_with_logits(y, x), want, rtol=1e-6)
    s = fx.sigmoid_cross_entropy_with_logits(y, x)
    xd = x.astype(np.float64)
    np.testing.assert_allclose(s, np.logaddexp(0, xd) - xd * np.eye(6)[t], rtol=1e-6)
    # bfloat16 labels holding whole numbers are class indices; others are named
    np.testing.assert_allclose(
        fx.sparse_softmax_cross_entropy_with_logits(t.astype(bf16), x), want, rtol=1e-6)
    with pytest.raises(TypeError, match="labels\\[0\\] = 0.5 is not a whole number"):
        fx.sparse_softmax_cross_entropy_with_logits(np.array([0.5], bf16), x[:1])


# ------------------------------------------------------------------- 6. broadcast labels

def test_dense_labels_broadcast_as_tensorflow(backend):
    # tf.nn.softmax_cross_entropy_with_logits broadcasts labels against logits.
    x = RNG.standard_normal((7, 5))
    row = RNG.dirichlet(np.ones(5))[None, :]
    want = -(row * _log_softmax(x)).sum(axis=1)
    loss = fx.SoftmaxCrossEntropy(reduction="none", backend=backend)
    np.testing.assert_allclose(loss.loss(row, x), want, rtol=1e-12)
    l, g = loss.loss_gradient(row, x)
    np.testing.assert_allclose(g, np.exp(_log_softmax(x)) * row.sum() - row, rtol=1e-12,
                               atol=1e-15)
    col = np.full((7, 1), 0.2)  # a column broadcasts too
    np.testing.assert_allclose(loss.loss(col, x), -(0.2 * _log_softmax(x)).sum(axis=1),
                               rtol=1e-12)
    with pytest.raises(ValueError, match="labels"):
        loss.loss(np.ones((2, 5)) / 5, x)


def test_keras_squeezes_a_size_one_label_axis_at_the_class_axis():
    # keras (torch backend) sparse_categorical_crossentropy(axis=1): targets (N, 1, L)
    x = RNG.standard_normal((4, 3, 5))
    t = RNG.integers(0, 3, (4, 1, 5))
    lp = _log_softmax(np.moveaxis(x, 1, -1))
    want = -np.take_along_axis(lp, t[:, 0, :, None], axis=-1)[..., 0]
    got = fx.sparse_categorical_crossentropy(t, x, from_logits=True, axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-12)
