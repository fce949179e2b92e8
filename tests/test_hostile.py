"""Hostile inputs, by class (issue 13), on every backend: non-native byte order, outputs that
overlap inputs or each other, missing labels, what ``lse_out`` produced fed back, integers
past int64, loose option types. Each test states the rule; expected values come from the
same call on clean inputs, itself checked against the float64 oracle elsewhere."""

import subprocess
import sys

import numpy as np
import pytest

import fastxent as fx

RNG = np.random.default_rng(13)
N, C = 12, 5


def _data(dtype=np.float64):
    x = RNG.standard_normal((N, C)).astype(dtype)
    t = RNG.integers(0, C, N)
    y = RNG.dirichlet(np.ones(C), N).astype(dtype)
    return x, t, y


# ---------------------------------------------------------- 1. non-native byte order

def _swapped(a):
    a = np.asarray(a)
    return a.astype(a.dtype.newbyteorder(">" if sys.byteorder == "little" else "<"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_array_argument_in_non_native_byte_order_gives_the_native_result(backend,
                                                                               dtype):
    x, t, y = _data(dtype)
    sw, cw = RNG.uniform(0.5, 2, N), RNG.uniform(0.5, 2, C)
    v = RNG.standard_normal((N, C)).astype(dtype)
    sparse = fx.SparseSoftmaxCrossEntropy(class_weight=cw, reduction="none", backend=backend)
    dense = fx.SoftmaxCrossEntropy(reduction="none", backend=backend)
    sig = fx.SigmoidCrossEntropy(pos_weight=cw, reduction="none", backend=backend)
    S = _swapped
    cases = [
        (lambda a, b, w: sparse.loss_gradient(a, b, sample_weight=w), (t, x, sw)),
        (lambda a, b, w: dense.loss_gradient(a, b, sample_weight=w), (y, x, sw)),
        (lambda a, b, w: sig.loss_gradient(a, b, sample_weight=w), (y, x, sw)),
        (lambda a, b, w: dense.hessp(a, b, w), (y, x, v)),
        (lambda a, b, w: fx.SparseSoftmaxCrossEntropy(class_weight=S(cw), backend=backend)
         .loss(a, b, sample_weight=w), (t, x, sw)),
    ]
    for f, (a, b, w) in cases:
        want = f(a, b, w)
        got = f(S(a), S(b), S(w))
        for g, r in zip(np.atleast_1d(got) if not isinstance(got, tuple) else got,
                        np.atleast_1d(want) if not isinstance(want, tuple) else want):
            np.testing.assert_array_equal(g, r)
    np.testing.assert_array_equal(fx.softmax(S(x), backend=backend),
                                  fx.softmax(x, backend=backend))
    np.testing.assert_array_equal(fx.logsumexp(S(x), axis=-1, backend=backend),
                                  fx.logsumexp(x, axis=-1, backend=backend))
    lse = fx.logsumexp(x, axis=-1)
    np.testing.assert_array_equal(dense.gradient(y, x, lse=S(lse)), dense.gradient(y, x, lse=lse))


def test_an_output_buffer_in_non_native_byte_order_is_refused(backend):
    x, t, _ = _data()
    out = np.empty(N, np.dtype(">f8") if sys.byteorder == "little" else np.dtype("<f8"))
    with pytest.raises(ValueError, match="loss_out.*byte order"):
        fx.SparseSoftmaxCrossEntropy(reduction="none", backend=backend).loss(t, x,
                                                                              loss_out=out)
    with pytest.raises(ValueError, match="out.*byte order"):
        fx.softmax(x, out=_swapped(np.empty_like(x)), backend=backend)


# ------------------------------------------------------ 2. overlapping outputs

def _overlap_cases(backend, x, t, y, sw):
    """(name, call with an overlapping output, the clean result) for every kind of overlap
    the issue lists."""
    none = fx.SparseSoftmaxCrossEntropy(reduction="none", backend=backend)
    dense = fx.SoftmaxCrossEntropy(reduction="none", backend=backend)
    mean = fx.SparseSoftmaxCrossEntropy(reduction="mean", backend=backend)
    ref_l, ref_g = none.loss_gradient(t, x, sample_weight=sw)

    def loss_into_weights():
        w = sw.copy()
        return none.loss(t, x, sample_weight=w, loss_out=w)

    def loss_inside_gradient():
        g = np.empty((N + 1, C))
        return none.loss_gradient(t, x, sample_weight=sw, gradient_out=g[:N],
                                  loss_out=g[N:].reshape(-1)[:N] if C >= N else
                                  g.reshape(-1)[:N])

    def out_inside_logits():
        z = np.concatenate([x.reshape(-1), np.zeros(C)]).reshape(N + 1, C)
        return fx.softmax(z[:N], out=z[1:], backend=backend)

    def dense_loss_inside_labels():
        yy = y.copy()
        return dense.loss(yy, x, loss_out=yy.reshape(-1)[:N])

    def loss_equal_grad_loss():
        gl = np.ones(N)
        return none.loss_gradient(t, x, grad_loss=gl, loss_out=gl)[0]

    def lse_inside_logits():
        z = x.copy()
        lse = z.reshape(-1)[:N]
        none.loss(t, z, lse_out=lse)
        return lse

    def lse_equal_out():
        buf = np.empty(N)
        return none.loss(t, x, loss_out=buf, lse_out=buf)

    def gradient_shifted_over_logits():  # gradient_out alone: the boundary's quick check
        z = np.concatenate([x.reshape(-1), np.zeros(C)]).reshape(N + 1, C)
        return none.loss_gradient(t, z[:N], gradient_out=z[1:])

    def mean_gradient_shifted_over_logits():  # the engine's direct path for reduced losses
        z = np.concatenate([x.reshape(-1), np.zeros(C)]).reshape(N + 1, C)
        return mean.loss_gradient(t, z[:N], gradient_out=z[1:])

    def dense_gradient_is_labels():
        yy = y.copy()
        return dense.loss_gradient(yy, x, gradient_out=yy)

    clean_lse = fx.logsumexp(x, axis=-1)
    return [
        ("gradient_out shifted over logits", gradient_shifted_over_logits,
         none.loss_gradient(t, x)),
        ("mean gradient_out shifted over logits", mean_gradient_shifted_over_logits,
         mean.loss_gradient(t, x)),
        ("dense gradient_out is labels", dense_gradient_is_labels, dense.loss_gradient(y, x)),
        ("loss_out is sample_weight", loss_into_weights, ref_l),
        ("loss_out inside gradient_out", loss_inside_gradient, (ref_l, ref_g)),
        ("out inside logits", out_inside_logits, fx.softmax(x)),
        ("dense loss_out inside labels", dense_loss_inside_labels, dense.loss(y, x)),
        ("loss_out is grad_loss", loss_equal_grad_loss, none.loss(t, x)),
        ("lse_out inside logits", lse_inside_logits, clean_lse),
        ("lse_out is loss_out", lse_equal_out, none.loss(t, x)),
    ]


def test_the_quick_overlap_test_agrees_with_numpy():
    # arrays that own their memory are told apart in two flag reads; views go to NumPy
    from fastxent._boundary import may_overlap
    a, b = np.zeros((4, 5)), np.zeros((4, 5))
    cases = [(a, b), (a, a), (a, a[1:]), (a[1:], a), (a[:2], a[2:]), (a.T, a), (a[:, 1], b),
             (a.reshape(-1)[3:7], a[1]), (np.frombuffer(a.tobytes()), a)]
    for p, q in cases:
        assert may_overlap(p, q) == np.may_share_memory(p, q), (p.shape, q.shape)


def test_square_logits_with_the_class_axis_first_get_their_own_layout(backend):
    # (C, C) logits, axis=0: the kernel rows are the transpose, with the same shape; the
    # gradient (new or in a caller's buffer) must come back in the caller's layout
    x = RNG.standard_normal((C, C))
    t = RNG.integers(0, C, C)
    want_l, want_g = fx.SparseSoftmaxCrossEntropy(reduction="mean", backend=backend) \
        .loss_gradient(t, x.T.copy())
    loss = fx.SparseSoftmaxCrossEntropy(axis=0, reduction="mean", backend=backend)
    got_l, got_g = loss.loss_gradient(t, x)
    buf = np.empty_like(x)
    loss.loss_gradient(t, x, gradient_out=buf)
    np.testing.assert_allclose(got_l, want_l, rtol=1e-13)
    np.testing.assert_allclose(got_g, want_g.T, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(buf, want_g.T, rtol=1e-13, atol=1e-16)


def test_gradient_out_shaped_like_the_rows_of_nd_logits_is_refused(backend):
    # (2, 3, C) logits have (6, C) kernel rows: a (6, C) buffer is not logits' shape
    x = RNG.standard_normal((2, 3, C))
    loss = fx.SparseSoftmaxCrossEntropy(backend=backend)
    with pytest.raises(ValueError, match=r"gradient_out has shape \(6, %d\)" % C):
        loss.loss_gradient(np.zeros((2, 3), int), x, gradient_out=np.empty((6, C)))
    g = np.empty_like(x)  # the logits' own shape is taken, and filled
    _, got = loss.loss_gradient(np.zeros((2, 3), int), x, gradient_out=g)
    assert got is g
    np.testing.assert_allclose(g, loss.gradient(np.zeros((2, 3), int), x), rtol=1e-13)


def test_overlapping_outputs_give_the_right_answer_or_a_clear_error(backend):
    # Either exact (a scratch buffer) or a ValueError naming both arguments and "overlap":
    # never the silently wrong values 0.1 returned.
    x, t, y = _data()
    sw = RNG.uniform(0.5, 2, N)
    for name, call, want in _overlap_cases(backend, x, t, y, sw):
        try:
            got = call()
        except ValueError as exc:
            assert "overlap" in str(exc), (name, exc)
            continue
        if isinstance(want, tuple):
            for g, w in zip(got, want):
                np.testing.assert_allclose(g, w, rtol=1e-13, err_msg=name)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-13, err_msg=name)


def test_the_documented_in_place_gradient_still_works(backend):
    x, t, _ = _data()
    want = fx.SparseSoftmaxCrossEntropy(backend=backend).gradient(t, x)
    z = x.copy()
    got = fx.SparseSoftmaxCrossEntropy(backend=backend).gradient(t, z, gradient_out=z)
    assert got is z
    np.testing.assert_allclose(z, want, rtol=1e-15)


# --------------------------------------------------------------- 4. missing labels

def test_labels_are_required_with_one_message(backend):
    x, _, _ = _data()
    for obj in (fx.SoftmaxCrossEntropy(backend=backend), fx.SigmoidCrossEntropy(backend=backend),
                fx.SparseSoftmaxCrossEntropy(backend=backend)):
        for method in (obj.loss, obj.gradient, obj.loss_gradient):
            with pytest.raises(TypeError, match="labels is required"):
                method(None, x)
    # labels_gradient needs no labels for softmax: d/dy = -log_softmax(x)
    np.testing.assert_allclose(
        fx.SoftmaxCrossEntropy(reduction="none", backend=backend).labels_gradient(None, x),
        -(x - fx.logsumexp(x, axis=-1, keepdims=True)), rtol=1e-13)


# ------------------------------------------------ 5. what lse_out produced, fed back

def test_a_saved_lse_with_nan_and_ignored_rows_gives_the_two_pass_results(backend):
    x, t, _ = _data()
    x[2, 1] = np.nan            # a NaN row: lse NaN, the row's gradient NaN
    x[5] = -np.inf              # an all -inf row, ignored: lse -inf, gradient 0
    t[5] = -100
    loss = fx.SparseSoftmaxCrossEntropy(ignore_index=-100, backend=backend)
    lse = np.empty(N)
    loss.loss(t, x, lse_out=lse)
    assert np.isnan(lse[2]) and lse[5] == -np.inf
    np.testing.assert_allclose(loss.gradient(t, x, lse=lse), loss.gradient(t, x), rtol=1e-13,
                               atol=1e-16)


# ------------------------------------------------------------- 6. huge integers

@pytest.mark.parametrize("value", [2**63, -2**63 - 1, 2**100])
def test_ignore_index_outside_int64_is_a_clear_error_on_every_backend(backend, value):
    x, t, _ = _data()
    with pytest.raises(ValueError, match="ignore_index.*int64"):
        fx.sparse_softmax_cross_entropy_with_logits(t, x, ignore_index=value, backend=backend)


def test_huge_thread_counts_are_clamped_to_the_usable_cores(backend):
    x = RNG.standard_normal((4096, 300))
    t = RNG.integers(0, 300, 4096)
    want = fx.sparse_softmax_cross_entropy_with_logits(t, x, backend=backend, n_threads=1)
    got = fx.sparse_softmax_cross_entropy_with_logits(t, x, backend=backend, n_threads=2**31)
    np.testing.assert_array_equal(got, want)
    with fx.threads(2**40):
        assert fx.get_num_threads() >= 1
        np.testing.assert_array_equal(
            fx.sparse_softmax_cross_entropy_with_logits(t, x, backend=backend), want)


# ----------------------------------------------------------- 8. loose option types

@pytest.mark.parametrize("option, value", [
    ("label_smoothing", "0.1"), ("label_smoothing", True), ("z_loss", "1e-4"),
    ("z_loss", False), ("ignore_index", "3"), ("ignore_index", True), ("ignore_index", 1.5),
    ("axis", "1"), ("axis", True)])
def test_strings_and_bools_for_numeric_options_are_type_errors(option, value):
    x, t, _ = _data()
    with pytest.raises(TypeError, match=option):
        fx.sparse_softmax_cross_entropy_with_logits(t, x, **{option: value})


@pytest.mark.parametrize("value", ["1.0", True, None])
def test_grad_loss_must_be_numeric(value):
    x, t, _ = _data()
    if value is None:  # None means "no upstream gradient": the plain gradient
        fx.SparseSoftmaxCrossEntropy().gradient(t, x, grad_loss=None)
        return
    with pytest.raises(TypeError, match="grad_loss"):
        fx.SparseSoftmaxCrossEntropy().gradient(t, x, grad_loss=value)


def test_float16_integer_labels_make_no_overflow_warning():
    import warnings
    x, t, _ = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = fx.sparse_softmax_cross_entropy_with_logits(t.astype(np.float16), x)
    np.testing.assert_array_equal(got, fx.sparse_softmax_cross_entropy_with_logits(t, x))


def test_softmax_sample_weight_of_shape_n_by_1_as_sigmoid_and_keras(backend):
    x, t, _ = _data()
    sw = RNG.uniform(0.5, 2, N)
    loss = fx.SparseSoftmaxCrossEntropy(backend=backend)
    assert loss(t, x, sample_weight=sw[:, None]) == pytest.approx(loss(t, x, sample_weight=sw),
                                                                  rel=1e-15)


def test_the_numpy_backend_does_not_import_numba():
    code = ("import sys, numpy as np, fastxent as fx;"
            "fx.softmax_cross_entropy_with_logits(np.full((3, 4), .25), np.zeros((3, 4)),"
            " backend='numpy');"
            "fx.sparse_softmax_cross_entropy_with_logits([0, 1], np.zeros((2, 4)),"
            " backend='numpy');"
            "print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
