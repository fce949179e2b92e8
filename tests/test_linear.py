"""Fused linear + softmax cross-entropy against the explicit computation: the logits
``inputs @ weight.T + bias`` materialised, then the plain loss (itself tested against the
naive oracle), on every backend, in float64 and float32; gradients by finite differences."""

import doctest
import tracemalloc
import warnings

import numpy as np
import pytest

import fastxent as fx
from fastxent import InputWarning, LinearSoftmaxCrossEntropy, linear_softmax_cross_entropy
from fastxent import linear as linear_module

N, D, V = 23, 6, 9
OPTIONS = {
    "plain": {},
    "ignore": {"ignore_index": 2},
    "smoothing": {"label_smoothing": 0.15},
    "class_weight": {"class_weight": "cw"},
    "z_loss": {"z_loss": 1e-2},
    "softcap": {"logit_softcap": 2.5},
    "everything": {"ignore_index": 2, "label_smoothing": 0.1, "class_weight": "cw",
                   "z_loss": 1e-3, "logit_softcap": 4.0},
}


def _data(dtype=np.float64, seed=0, n=N, d=D, v=V):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(dtype)
    w = (rng.normal(size=(v, d)) * 0.7).astype(dtype)
    b = rng.normal(size=v).astype(dtype)
    t = rng.integers(0, v, n)
    t[::5] = 2  # rows for ignore_index
    return rng, x, w, b, t


def _opts(name, rng, dtype, v=V):
    kw = dict(OPTIONS[name])
    if kw.get("class_weight") == "cw":
        kw["class_weight"] = (rng.random(v) + 0.5).astype(dtype)
    return kw


def _plain(kind, **kw):
    cls = fx.SparseSoftmaxCrossEntropy if kind == "integer" else fx.SoftmaxCrossEntropy
    if kind != "integer":
        kw.pop("ignore_index", None)
    return cls(**kw)


def _close(a, b, dtype, scale=1.0):
    if a is None or b is None:
        assert a is None and b is None
        return
    rtol, atol = (2e-5, 2e-5 * scale) if dtype == np.float32 else (1e-10, 1e-12 * scale)
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                               rtol=rtol, atol=atol)


def _explicit(kind, labels, x, w, b, kw, sample_weight, grad_loss):
    """(loss, grad_inputs, grad_weight, grad_bias) with the logits materialised (float64)."""
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    Z = x64 @ w64.T + (0.0 if b is None else b.astype(np.float64))
    kw = {k: (np.asarray(v, np.float64) if k == "class_weight" else v) for k, v in kw.items()}
    loss, G = _plain(kind, **kw).loss_gradient(labels, Z, sample_weight=sample_weight,
                                               grad_loss=grad_loss)
    return loss, G @ w64, G.T @ x64, (None if b is None else G.sum(axis=0))


# ------------------------------------------------------------------ against the explicit loss

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("option", list(OPTIONS))
def test_integer_labels_equal_the_explicit_computation(backend, dtype, option, reduction):
    rng, x, w, b, t = _data(dtype)
    kw = _opts(option, rng, dtype)
    kw.update(reduction=reduction)
    sw = rng.random(N).astype(dtype) + 0.1
    gl = rng.normal(size=N) if reduction == "none" else 0.7
    want = _explicit("integer", t, x, w, b, kw, sw, gl)
    for chunk in (None, 4, 7, N):
        loss_obj = LinearSoftmaxCrossEntropy(chunk_size=chunk, backend=backend, **kw)
        got = loss_obj.loss_gradient(t, x, w, b, sample_weight=sw, grad_loss=gl)
        assert got[0].dtype == dtype and got[2].dtype == dtype
        for g, e in zip(got, want):
            _close(g, e, dtype)
        _close(loss_obj.loss(t, x, w, b, sample_weight=sw), want[0], dtype)
    _close(linear_softmax_cross_entropy(t, x, w, b, sample_weight=sw, chunk_size=5,
                                        backend=backend, **kw), want[0], dtype)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("option", ["plain", "smoothing", "class_weight", "everything"])
def test_dense_labels_not_summing_to_one(backend, dtype, option, reduction):
    rng, x, w, b, _ = _data(dtype, seed=1)
    kw = _opts(option, rng, dtype)
    kw.pop("ignore_index", None)
    kw.update(reduction=reduction)
    y = rng.random((N, V)).astype(dtype) * 0.4  # rows sum to ~1.8, not 1
    gl = rng.normal(size=N) if reduction == "none" else 1.3
    sw = rng.random(N) + 0.2
    want = _explicit("dense", y, x, w, b, kw, sw, gl)
    got = LinearSoftmaxCrossEntropy(chunk_size=6, backend=backend, check="off",
                                    **kw).loss_gradient(y, x, w, b, sample_weight=sw,
                                                        grad_loss=gl)
    for g, e in zip(got, want):
        _close(g, e, dtype)


def test_one_dense_label_row_for_every_example(backend):
    rng, x, w, b, _ = _data()
    y = rng.random((1, V))
    y /= y.sum()
    want = _explicit("dense", np.repeat(y, N, axis=0), x, w, b, {}, None, None)
    got = LinearSoftmaxCrossEntropy(chunk_size=5, backend=backend).loss_gradient(y, x, w, b)
    for g, e in zip(got, want):
        _close(g, e, np.float64)


def test_without_bias_and_with_column_labels(backend, dtype):
    rng, x, w, _, t = _data(dtype)
    want = _explicit("integer", t, x, w, None, {}, None, None)
    got = LinearSoftmaxCrossEntropy(chunk_size=8, backend=backend).loss_gradient(
        t.reshape(-1, 1), x, w)
    assert got[3] is None
    for g, e in zip(got, want):
        _close(g, e, dtype)


def test_fortran_ordered_weight_and_mixed_dtypes(backend):
    rng, x, w, b, t = _data()
    b32 = b.astype(np.float32)
    want = _explicit("integer", t, x, w, b32, {}, None, None)
    got = LinearSoftmaxCrossEntropy(chunk_size=8, backend=backend).loss_gradient(
        t, x, np.asfortranarray(w), b32)
    assert got[1].dtype == np.float64  # float32 bias promoted to the inputs' float64
    for g, e in zip(got, want):
        _close(g, e, np.float64)


def test_sparse_inputs_equal_dense(backend, dtype):
    sp = pytest.importorskip("scipy.sparse")
    rng, x, w, b, t = _data(dtype)
    x[rng.random(x.shape) < 0.6] = 0
    loss_obj = LinearSoftmaxCrossEntropy(chunk_size=5, backend=backend)
    want = loss_obj.loss_gradient(t, x, w, b)
    got = loss_obj.loss_gradient(t, sp.csr_matrix(x), w, b)
    assert isinstance(got[1], np.ndarray)
    for g, e in zip(got, want):
        _close(g, e, dtype)


# ------------------------------------------------------------------ gradients by differences

def _fd_check(f, arrays, grads, h=1e-5, n_probe=6, seed=0):
    """Central differences of the scalar f along random directions in every array."""
    rng = np.random.default_rng(seed)
    for a, g in zip(arrays, grads):
        for _ in range(n_probe):
            d = rng.normal(size=a.shape)
            a += h * d
            fp = f()
            a -= 2 * h * d
            fm = f()
            a += h * d
            fd = (fp - fm) / (2 * h)
            assert abs(fd - float(np.sum(g * d))) <= 1e-6 * max(1.0, abs(fd)), (fd, np.sum(g * d))


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("option", ["plain", "everything"])
def test_gradients_match_finite_differences(backend, option, reduction):
    rng, x, w, b, t = _data(seed=3)
    kw = _opts(option, rng, np.float64)
    loss_obj = LinearSoftmaxCrossEntropy(chunk_size=7, reduction=reduction, backend=backend,
                                         **kw)
    sw = rng.random(N) + 0.1
    # "none" with a per-example upstream gradient: d/dtheta sum_i g_i loss_i (Liger's
    # issues 678 and 968 got this wrong)
    gl = rng.normal(size=N) if reduction == "none" else 0.8

    def f():
        value = loss_obj.loss(t, x, w, b, sample_weight=sw)
        return float(np.sum(gl * value))

    _, gx, gw, gb = loss_obj.loss_gradient(t, x, w, b, sample_weight=sw, grad_loss=gl)
    _fd_check(f, [x, w, b], [gx, gw, gb])


def test_dense_gradients_match_finite_differences(backend):
    rng, x, w, b, _ = _data(seed=4)
    y = rng.random((N, V)) * 0.3
    loss_obj = LinearSoftmaxCrossEntropy(chunk_size=4, reduction="sum", z_loss=1e-2,
                                         logit_softcap=3.0, backend=backend, check="off")
    _, gx, gw, gb = loss_obj.loss_gradient(y, x, w, b)
    _fd_check(lambda: float(loss_obj.loss(y, x, w, b)), [x, w, b], [gx, gw, gb])


# ------------------------------------------------------------------ the other entry points

@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradient_from_saved_lse_equals_loss_gradient(backend, dtype, reduction):
    rng, x, w, b, t = _data(dtype, seed=5)
    loss_obj = LinearSoftmaxCrossEntropy(chunk_size=6, reduction=reduction, ignore_index=2,
                                         logit_softcap=3.0, z_loss=1e-3, backend=backend)
    gl = rng.normal(size=N).astype(dtype) if reduction == "none" else 2.0
    lse = np.empty(N, dtype)
    loss = loss_obj.loss(t, x, w, b, lse_out=lse)
    want = loss_obj.loss_gradient(t, x, w, b, grad_loss=gl)
    _close(loss, want[0], dtype)
    for saved in (lse, None):
        got = loss_obj.gradient(t, x, w, b, grad_loss=gl, lse=saved)
        for g, e in zip(got, want[1:]):
            _close(g, e, dtype)


def test_wrt_skips_gradients(backend):
    _, x, w, b, t = _data()
    loss_obj = LinearSoftmaxCrossEntropy(chunk_size=5, backend=backend)
    full = loss_obj.loss_gradient(t, x, w, b)
    got = loss_obj.loss_gradient(t, x, w, b, wrt=("weight", "bias"))
    assert got[1] is None
    np.testing.assert_array_equal(got[2], full[2])
    got = loss_obj.loss_gradient(t, x, w, b, wrt="inputs")
    assert got[2] is None and got[3] is None
    np.testing.assert_array_equal(got[1], full[1])


def test_output_buffers_are_written_in_place(backend, dtype):
    _, x, w, b, t = _data(dtype)
    loss_obj = LinearSoftmaxCrossEntropy(chunk_size=5, reduction="none", backend=backend)
    want = loss_obj.loss_gradient(t, x, w, b)
    other = np.float64 if dtype == np.float32 else np.float32
    for buf_dtype in (dtype, other):
        outs = dict(loss_out=np.empty(N, buf_dtype), grad_inputs_out=np.empty((N, D), buf_dtype),
                    grad_weight_out=np.full((V, D), 7.0, buf_dtype),
                    grad_bias_out=np.full(V, 7.0, buf_dtype))
        got = loss_obj.loss_gradient(t, x, w, b, **outs)
        for g, (name, o), e in zip(got, outs.items(), want):
            assert g is o, name
            _close(g, e, np.float32)


def test_linear_softmax_cross_entropy_has_the_issue_signature():
    import inspect
    params = inspect.signature(linear_softmax_cross_entropy).parameters
    for name in ("labels", "inputs", "weight", "bias", "ignore_index", "label_smoothing",
                 "class_weight", "sample_weight", "z_loss", "logit_softcap", "reduction",
                 "chunk_size", "backend", "n_threads"):
        assert name in params
    assert params["reduction"].default == "mean"


# ------------------------------------------------------------------ reductions over chunks

def test_empty_mean_is_zero_with_zero_gradients_as_the_plain_loss(backend):
    _, x, w, b, t = _data()
    t[:] = -100
    loss_obj = LinearSoftmaxCrossEntropy(ignore_index=-100, chunk_size=4, check="warn",
                                         backend=backend)
    with pytest.warns(InputWarning, match="mean' over nothing"):
        loss, gx, gw, gb = loss_obj.loss_gradient(t, x, w, b)
    want = _explicit("integer", t, x, w, b, {"ignore_index": -100}, None, None)
    assert loss == 0 and want[0] == 0
    for g in (gx, gw, gb):
        assert not g.any()


def test_mean_denominator_is_global_not_per_chunk(backend):
    _, x, w, b, t = _data()
    t[:20] = 2  # the first chunks are almost all ignored: a per-chunk mean would differ
    kw = {"ignore_index": 2}
    want = _explicit("integer", t, x, w, b, kw, None, None)
    got = LinearSoftmaxCrossEntropy(chunk_size=4, backend=backend, **kw).loss_gradient(t, x, w, b)
    for g, e in zip(got, want):
        _close(g, e, np.float64)


def test_no_rows(backend):
    _, x, w, b, t = _data()
    loss_obj = LinearSoftmaxCrossEntropy(reduction="sum", backend=backend)
    loss, gx, gw, gb = loss_obj.loss_gradient(t[:0], x[:0], w, b)
    assert loss == 0 and gx.shape == (0, D) and not gw.any() and not gb.any()


def test_diagnostics_name_the_row_of_the_whole_batch(backend):
    _, x, w, b, t = _data()
    x[13, 0] = np.nan
    loss_obj = LinearSoftmaxCrossEntropy(chunk_size=4, check="raise", backend=backend)
    with pytest.raises(ValueError, match=r"1 of 23 rows of logits hold NaN.*first row \[13\]"):
        loss_obj.loss(t, x, w, b)


def test_chunks_never_hold_the_whole_logits():
    n, d, v = 512, 8, 4096
    _, x, w, b, t = _data(np.float32, n=n, d=d, v=v)
    loss_obj = LinearSoftmaxCrossEntropy(chunk_size=32)
    loss_obj.loss_gradient(t, x, w, b)  # warm-up (imports, compiled kernels)
    tracemalloc.start()
    try:
        loss_obj.loss_gradient(t, x, w, b)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    outputs = x.nbytes + w.nbytes + b.nbytes * 2
    logits = n * v * 4
    # one 32-row chunk (0.5 MiB) and the outputs, far from the 8 MiB of logits
    assert peak < outputs + logits // 8, (peak, outputs, logits)


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("args, match", [
    ((np.zeros(4, int), np.zeros((4, 3)), np.zeros((5, 2))),
     r"inputs has shape \(4, 3\) but weight has shape \(5, 2\)"),
    ((np.zeros(4, int), np.zeros((4, 3)), np.zeros((5, 3)), np.zeros(4)),
     r"bias has shape \(4,\) but weight has shape \(5, 3\)"),
    ((np.zeros(3, int), np.zeros((4, 3)), np.zeros((5, 3))),
     r"labels has shape \(3,\) but inputs has shape \(4, 3\)"),
    ((np.zeros((4, 4)), np.zeros((4, 3)), np.zeros((5, 3))),
     r"labels has shape \(4, 4\) but inputs has shape \(4, 3\) and weight \(5, 3\)"),
    ((np.zeros(4, int), np.zeros(4), np.zeros((5, 3))), r"inputs has shape \(4,\); expected"),
    ((np.array([0, 1, 5, 2]), np.zeros((4, 3)), np.zeros((5, 3))),
     r"labels\[2\] = 5 is not a class index: labels must be in \[0, 5\)"),
    ((np.array([0, -1, 4, 2]), np.zeros((4, 3)), np.zeros((5, 3))),
     r"labels\[1\] = -1 is not a class index"),
])
def test_bad_input_is_named(args, match):
    with pytest.raises(ValueError, match=match):
        linear_softmax_cross_entropy(*args)


def test_bad_options():
    with pytest.raises(ValueError, match="chunk_size=0 must be a positive"):
        LinearSoftmaxCrossEntropy(chunk_size=0)
    with pytest.raises(ValueError, match="'grads' is not one of"):
        LinearSoftmaxCrossEntropy().loss_gradient([0], np.zeros((1, 2)), np.zeros((3, 2)),
                                                  wrt="grads")
    with pytest.raises(TypeError, match="inputs has dtype int64"):
        linear_softmax_cross_entropy([0], np.zeros((1, 2), int), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"grad_weight_out has shape \(2, 3\); expected \(3, 2\)"):
        LinearSoftmaxCrossEntropy().loss_gradient([0], np.zeros((1, 2)), np.zeros((3, 2)),
                                                  grad_weight_out=np.zeros((2, 3)))
    w = np.zeros((3, 2))
    with pytest.raises(ValueError, match="grad_weight_out overlaps weight"):
        LinearSoftmaxCrossEntropy().loss_gradient([0], np.zeros((1, 2)), w, grad_weight_out=w)
    with pytest.raises(ValueError, match="label_smoothing=2.0 is outside"):
        LinearSoftmaxCrossEntropy(label_smoothing=2.0)


def test_docstring_examples():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = doctest.testmod(linear_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


def test_fortran_grad_weight_out_is_accumulated_in_place(backend):
    _, x, w, _, t = _data()
    loss_obj = LinearSoftmaxCrossEntropy(chunk_size=5, backend=backend)
    want = loss_obj.loss_gradient(t, x, w)
    gw = np.full((D, V), 3.0).T  # Fortran-ordered (V, D): BLAS's own layout, no copy
    got = loss_obj.loss_gradient(t, x, w, grad_weight_out=gw)
    assert got[2] is gw
    _close(gw, want[2], np.float64)


def test_without_scipy_blas_the_numpy_path_agrees(backend, dtype, monkeypatch):
    rng, x, w, b, t = _data(dtype)
    loss_obj = LinearSoftmaxCrossEntropy(chunk_size=6, backend=backend)
    want = loss_obj.loss_gradient(t, x, w, b)
    from fastxent import _linear
    monkeypatch.setattr(_linear, "_GEMM", {np.dtype(dtype): None})
    got = loss_obj.loss_gradient(t, x, w, b)
    for g, e in zip(got, want):
        _close(g, e, dtype)
