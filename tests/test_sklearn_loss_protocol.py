"""``gradient_hessian`` (the diagonal Hessian) against finite differences and closed forms,
and fastxent's loss objects against scikit-learn's private ``_loss`` protocol (the mapping
documented in ``fastxent.sklearn``)."""

import numpy as np
import pytest

import fastxent as fx

RNG = np.random.default_rng(12345)


def _fd_diag(loss_obj, labels, logits, sample_weight, h=1e-6):
    """d/dx_ic of the gradient's own (i, c) entry by central differences: the Hessian's
    diagonal, to ~1e-10 (the gradient is checked against the loss itself in test_gradients)."""
    x = np.array(logits, dtype=np.float64)
    out = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        gp = loss_obj.gradient(labels, xp, sample_weight=sample_weight)
        gm = loss_obj.gradient(labels, xm, sample_weight=sample_weight)
        out[idx] = (gp[idx] - gm[idx]) / (2 * h)
    return out


def _second_difference(loss_obj, labels, logits, idx, h=1e-3):
    """d^2 loss_i / dx_ic^2 from row i's loss values alone (reduction="none")."""
    def f(x):
        return float(loss_obj.loss(labels, x)[idx[0]])
    x = np.array(logits, dtype=np.float64)
    xp, xm = x.copy(), x.copy()
    xp[idx] += h
    xm[idx] -= h
    return (f(xp) - 2 * f(x) + f(xm)) / h**2


SOFTMAX_CASES = [
    ("sparse", {}),
    ("sparse", {"label_smoothing": 0.2}),
    ("sparse", {"class_weight": [0.5, 2.0, 1.0, 3.0]}),
    ("sparse", {"z_loss": 0.05, "label_smoothing": 0.1, "class_weight": [1.0, 2.0, 0.5, 1.5]}),
    ("sparse", {"ignore_index": -1, "z_loss": 0.1}),
    ("dense", {}),
    ("dense", {"label_smoothing": 0.3, "class_weight": [1.0, 0.2, 2.0, 1.0]}),
    ("dense", {"z_loss": 0.1}),
]


@pytest.mark.parametrize("kind, options", SOFTMAX_CASES)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_hessian_matches_finite_differences(kind, options, reduction, weighted):
    n, C = 7, 4
    logits = RNG.standard_normal((n, C)) * 2
    if kind == "sparse":
        labels = RNG.integers(0, C, n)
        if "ignore_index" in options:
            labels[2] = -1
        loss = fx.SparseSoftmaxCrossEntropy(reduction=reduction, **options)
    else:
        labels = RNG.dirichlet(np.ones(C), n) * RNG.uniform(0.5, 1.5, (n, 1))  # S != 1
        loss = fx.SoftmaxCrossEntropy(reduction=reduction, **options)
    sw = RNG.uniform(0.2, 2.0, n) if weighted else None
    grad, hess = loss.gradient_hessian(labels, logits, sample_weight=sw)
    np.testing.assert_allclose(grad, loss.gradient(labels, logits, sample_weight=sw),
                               rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(hess, _fd_diag(loss, labels, logits, sw), rtol=1e-6,
                               atol=1e-9)
    if sw is None and reduction == "none":
        for idx in [(0, 0), (1, 2), (3, 1)]:
            assert hess[idx] == pytest.approx(_second_difference(loss, labels, logits, idx),
                                              rel=1e-5, abs=1e-7)
    if "ignore_index" in options:
        assert np.all(hess[2] == 0) and np.all(grad[2] == 0)


def test_softmax_hessian_is_the_diagonal_of_hessp():
    # e_c^T H e_c, with H applied by the loss's own hessp, for every c.
    n, C = 5, 6
    logits = RNG.standard_normal((n, C))
    labels = RNG.integers(0, C, n)
    loss = fx.SparseSoftmaxCrossEntropy(reduction="mean", z_loss=0.2, label_smoothing=0.1)
    _, hess = loss.gradient_hessian(labels, logits)
    for c in range(C):
        v = np.zeros((n, C))
        v[:, c] = 1.0
        np.testing.assert_allclose(hess[:, c], loss.hessp(labels, logits, v)[:, c],
                                   rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.2}, {"pos_weight": 3.0},
                                     {"pos_weight": [0.5, 2.0, 1.0], "label_smoothing": 0.1}])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weights", [None, "per_example", "per_element"])
def test_sigmoid_hessian_matches_finite_differences(options, reduction, weights):
    n, C = 6, 3
    logits = RNG.standard_normal((n, C)) * 3
    labels = RNG.uniform(0, 1, (n, C))
    sw = {None: None, "per_example": RNG.uniform(0.2, 2, n),
          "per_element": RNG.uniform(0.2, 2, (n, C))}[weights]
    loss = fx.SigmoidCrossEntropy(reduction=reduction, **options)
    grad, hess = loss.gradient_hessian(labels, logits, sample_weight=sw)
    np.testing.assert_allclose(grad, loss.gradient(labels, logits, sample_weight=sw),
                               rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(hess, _fd_diag(loss, labels, logits, sw), rtol=1e-6,
                               atol=1e-9)


def test_closed_forms_and_extremes():
    loss = fx.SparseSoftmaxCrossEntropy(reduction="sum")
    # Two equal logits: p = 1/2, p (1 - p) = 1/4 whatever the label.
    _, h = loss.gradient_hessian([1], np.zeros((1, 2)))
    np.testing.assert_array_equal(h, [[0.25, 0.25]])
    # Huge logits: no overflow, the curvature of a saturated softmax is ~0, not NaN.
    _, h = loss.gradient_hessian([0, 1], np.array([[1e4, 0.0, -1e4], [800.0, 0.0, 0.0]]))
    assert np.isfinite(h).all() and h.max() < 1e-300
    sig = fx.SigmoidCrossEntropy(reduction="none")
    _, h = sig.gradient_hessian([[1.0, 0.0]], np.array([[1000.0, -1000.0]]))
    np.testing.assert_array_equal(h, [[0.0, 0.0]])
    _, h = sig.gradient_hessian([[1.0]], [[0.0]])
    np.testing.assert_array_equal(h, [[0.25]])


def test_float32_buffers_and_in_place():
    logits = RNG.standard_normal((50, 5)).astype(np.float32)
    labels = RNG.integers(0, 5, 50)
    loss = fx.SparseSoftmaxCrossEntropy(z_loss=0.1)
    g_ref, h_ref = loss.gradient_hessian(labels, logits.astype(np.float64))
    g, h = loss.gradient_hessian(labels, logits)
    assert g.dtype == h.dtype == np.float32
    np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-8)
    # Caller's buffers, and each result written over the logits in turn.
    gb, hb = np.empty_like(logits), np.empty_like(logits)
    g2, h2 = loss.gradient_hessian(labels, logits, gradient_out=gb, hessian_out=hb)
    assert g2 is gb and h2 is hb
    np.testing.assert_array_equal(h2, h)
    x = logits.copy()
    g3, h3 = loss.gradient_hessian(labels, x, gradient_out=x)
    assert g3 is x
    np.testing.assert_allclose(g3, g, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(h3, h, rtol=1e-6, atol=1e-9)
    x = logits.copy()
    g4, h4 = loss.gradient_hessian(labels, x, hessian_out=x)
    assert h4 is x
    np.testing.assert_allclose(g4, g, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(h4, h, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="overlap"):
        loss.gradient_hessian(labels, logits, gradient_out=gb, hessian_out=gb)


def test_bad_labels_raise_the_loss_error():
    with pytest.raises(ValueError, match="not a class index"):
        fx.SparseSoftmaxCrossEntropy().gradient_hessian([0, 5], np.zeros((2, 3)))


# ------------------------------------------------------- scikit-learn's _loss protocol

sk_loss = pytest.importorskip("sklearn._loss.loss")


@pytest.mark.parametrize("weighted", [False, True])
def test_sparse_softmax_is_half_multinomial_loss(weighted):
    n, C = 200, 5
    raw = RNG.standard_normal((n, C)) * 3
    y_true = RNG.integers(0, C, n).astype(np.float64)  # sklearn's class indices as floats
    sw = RNG.uniform(0.1, 2.0, n) if weighted else None
    ref = sk_loss.HalfMultinomialLoss(n_classes=C)
    ours = fx.SparseSoftmaxCrossEntropy(reduction="none")
    np.testing.assert_allclose(ours.loss(y_true, raw, sample_weight=sw),
                               ref.loss(y_true, raw, sample_weight=sw), rtol=1e-12)
    np.testing.assert_allclose(ours.gradient(y_true, raw, sample_weight=sw),
                               ref.gradient(y_true, raw, sample_weight=sw), rtol=1e-12,
                               atol=1e-15)
    loss_out, grad_out = np.empty(n), np.empty((n, C))
    l1, g1 = ours.loss_gradient(y_true, raw, sample_weight=sw, loss_out=loss_out,
                                gradient_out=grad_out)
    l2, g2 = ref.loss_gradient(y_true, raw, sample_weight=sw)
    assert l1 is loss_out and g1 is grad_out
    np.testing.assert_allclose(l1, l2, rtol=1e-12)
    np.testing.assert_allclose(g1, g2, rtol=1e-12, atol=1e-15)
    g1, h1 = ours.gradient_hessian(y_true, raw, sample_weight=sw)
    g2, h2 = ref.gradient_hessian(y_true, raw, sample_weight=sw)
    np.testing.assert_allclose(g1, g2, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(h1, h2, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(fx.softmax(raw), ref.predict_proba(raw), rtol=1e-12)


def test_sigmoid_is_half_binomial_loss():
    n = 300
    raw = RNG.standard_normal(n) * 4
    y_true = RNG.integers(0, 2, n).astype(np.float64)
    sw = RNG.uniform(0.1, 2.0, n)
    ref = sk_loss.HalfBinomialLoss()
    ours = fx.SigmoidCrossEntropy(reduction="none")
    col = (y_true[:, None], raw[:, None])  # one logit per example: shape (n, 1)
    # sklearn's log1p(exp(x)) uses piecewise approximations good to ~1e-10 relative.
    np.testing.assert_allclose(ours.loss(*col, sample_weight=sw)[:, 0],
                               ref.loss(y_true, raw, sample_weight=sw), rtol=1e-9)
    g1, h1 = ours.gradient_hessian(*col, sample_weight=sw)
    g2, h2 = ref.gradient_hessian(y_true, raw, sample_weight=sw)
    np.testing.assert_allclose(g1[:, 0], g2, rtol=1e-9, atol=1e-16)
    np.testing.assert_allclose(h1[:, 0], h2, rtol=1e-9, atol=1e-16)
