"""Hypothesis property tests: shift invariance, class permutation, extreme logits, -inf
masking, and layouts/axes, on every backend, float32 and float64."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastxent as fx

from . import _reference as ref

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
DTYPES = st.sampled_from([np.float32, np.float64])


@st.composite
def batches(draw, min_classes=1, elements=None):
    dtype = draw(DTYPES)
    n = draw(st.integers(1, 12))
    c = draw(st.integers(min_classes, 40))
    elements = st.floats(-30, 30, width=32) if elements is None else elements
    x = draw(hnp.arrays(dtype, (n, c), elements=elements))
    t = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    y = draw(hnp.arrays(dtype, (n, c), elements=st.floats(0, 1, width=32)))
    return x, y, t


def _close(a, b, dtype, scale=1.0):
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


@SETTINGS
@given(data=batches(), shift=st.floats(-1e3, 1e3))
def test_adding_a_constant_per_row_changes_nothing(backend, data, shift):
    x, y, t = data
    loss = fx.SparseSoftmaxCrossEntropy(reduction="none", backend=backend)
    dense = fx.SoftmaxCrossEntropy(reduction="none", backend=backend)
    shifts = (np.arange(len(x))[:, None] % 3 - 1) * np.asarray(shift, x.dtype)
    xs = (x + shifts).astype(x.dtype)
    # Shifting loses the low bits of x in floating point; compare to the shifted input's
    # own oracle scale (|shift| ulps).
    scale = 1 + abs(shift) * 40
    _close(loss(t, xs), loss(t, x), x.dtype, scale)
    _close(dense.gradient(y, xs), dense.gradient(y, x), x.dtype, scale)


@SETTINGS
@given(data=batches(min_classes=2), seed=st.integers(0, 2 ** 16))
def test_permuting_classes_permutes_the_gradient(backend, data, seed):
    x, y, t = data
    perm = np.random.default_rng(seed).permutation(x.shape[1])
    inverse = np.argsort(perm)
    loss = fx.SparseSoftmaxCrossEntropy(reduction="none", backend=backend)
    value, grad = loss.loss_gradient(t, x)
    pvalue, pgrad = loss.loss_gradient(inverse[t], x[:, perm])
    _close(pvalue, value, x.dtype)
    _close(pgrad, grad[:, perm], x.dtype)


@SETTINGS
@given(data=batches(elements=st.sampled_from([1e4, -1e4, 0.0, 1e-30, -1e-30, 88.0, -88.0]),
                    min_classes=1))
def test_extreme_logits_stay_finite_and_exact(backend, data):
    x, y, t = data
    loss = fx.SoftmaxCrossEntropy(reduction="none", backend=backend)
    value, grad = loss.loss_gradient(y, x)
    assert np.isfinite(value).all() and np.isfinite(grad).all()
    want, wgrad, _, _ = ref.softmax_batch(x, y)
    _close(value, want, x.dtype, scale=1e4 if x.dtype == np.float32 else 1.0)
    _close(grad, wgrad, x.dtype)


@SETTINGS
@given(data=batches(min_classes=2), mask_seed=st.integers(0, 2 ** 16))
def test_minus_inf_logits_with_zero_label_contribute_exactly_zero(backend, data, mask_seed):
    x, y, t = data
    rng = np.random.default_rng(mask_seed)
    mask = rng.random(x.shape) < 0.4
    mask[np.arange(len(x)), t] = False  # the target is never masked
    xm = np.where(mask, -np.inf, x).astype(x.dtype)
    ym = np.where(mask, 0, y).astype(x.dtype)
    for loss, labels in [(fx.SoftmaxCrossEntropy(reduction="none", backend=backend), ym),
                         (fx.SparseSoftmaxCrossEntropy(reduction="none", backend=backend), t)]:
        value, grad = loss.loss_gradient(labels, xm)
        assert np.all(grad[mask] == 0), "masked classes must get exactly zero gradient"
        assert np.isfinite(value).all() and np.isfinite(grad).all()
        # Same as dropping the masked classes altogether, row by row.
        for i in range(len(x)):
            keep = ~mask[i]
            lab = labels[i][keep] if labels.ndim == 2 else [np.searchsorted(
                np.flatnonzero(keep), t[i])]
            v = fx.SoftmaxCrossEntropy(reduction="none", backend=backend)(
                ym[i][keep][None] if labels.ndim == 2 else np.eye(keep.sum())[lab],
                x[i][keep][None])
            _close(value[i], v[0], x.dtype)


@SETTINGS
@given(data=batches(min_classes=1))
def test_sigmoid_minus_inf_with_zero_label_is_zero(backend, data):
    x, y, _ = data
    xm = x.copy()
    xm[:, 0] = -np.inf
    ym = y.copy()
    ym[:, 0] = 0
    value, grad = fx.SigmoidCrossEntropy(reduction="none", backend=backend).loss_gradient(ym, xm)
    assert np.all(value[:, 0] == 0) and np.all(grad[:, 0] == 0)
    assert np.isfinite(value).all()


@SETTINGS
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5),
       dtype=DTYPES, seed=st.integers(0, 2 ** 16), data=st.data())
def test_any_axis_and_layout_gives_the_same_numbers(backend, shape, dtype, seed, data):
    rng = np.random.default_rng(seed)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    lead = shape[:axis % len(shape)] + shape[axis % len(shape) + 1:]
    t = rng.integers(0, shape[axis], lead)
    loss = fx.SparseSoftmaxCrossEntropy(axis=axis, reduction="none", backend=backend)
    value, grad = loss.loss_gradient(t, x)
    assert value.shape == lead and grad.shape == shape
    # The canonical computation: class axis last, contiguous.
    xc = np.ascontiguousarray(np.moveaxis(x, axis, -1))
    cv, cg = fx.SparseSoftmaxCrossEntropy(reduction="none", backend=backend).loss_gradient(t, xc)
    np.testing.assert_array_equal(value, cv)
    np.testing.assert_array_equal(np.moveaxis(grad, axis, -1), cg)
    layout = data.draw(st.sampled_from(["fortran", "strided", "readonly"]))
    if layout == "fortran":
        xl = np.asfortranarray(x)
    elif layout == "strided":
        xl = np.repeat(x, 2, axis=-1)[..., ::2]
    else:
        xl = x.copy()
        xl.flags.writeable = False
    lv, lg = loss.loss_gradient(t, xl)
    np.testing.assert_array_equal(lv, value)
    np.testing.assert_array_equal(lg, grad)


def test_memory_mapped_input(backend, tmp_path):
    x = np.random.default_rng(0).standard_normal((50, 7)).astype(np.float32)
    path = tmp_path / "logits.npy"
    np.save(path, x)
    mm = np.load(path, mmap_mode="r")
    t = np.arange(50) % 7
    loss = fx.SparseSoftmaxCrossEntropy(backend=backend)
    np.testing.assert_array_equal(loss.gradient(t, mm), loss.gradient(t, x))


def test_nan_propagates_to_its_row_only(backend, dtype):
    x = np.random.default_rng(1).standard_normal((4, 6)).astype(dtype)
    x[1, 2] = np.nan
    value, grad = fx.SparseSoftmaxCrossEntropy(reduction="none", backend=backend).loss_gradient(
        [0, 1, 2, 3], x)
    assert np.isnan(value[1]) and np.isnan(grad[1]).all()
    assert np.isfinite(value[[0, 2, 3]]).all() and np.isfinite(grad[[0, 2, 3]]).all()


def test_fully_masked_padding_row_contributes_nothing(backend, dtype):
    x = np.random.default_rng(2).standard_normal((3, 5)).astype(dtype)
    y = np.eye(5, dtype=dtype)[[0, 1, 2]]
    x[1] = -np.inf
    y[1] = 0
    value, grad = fx.SoftmaxCrossEntropy(reduction="none", backend=backend).loss_gradient(y, x)
    assert value[1] == 0 and np.all(grad[1] == 0)
