"""Diagnostics (issue 18): ``check=``, ``set_check``, ``checking``, ``FASTXENT_CHECK`` and
:class:`fastxent.InputWarning`.

Three parts: realistic logits never warn (trained scikit-learn and fastxent models on bundled
data, early and late in training, and random normal logits of several scales and class
counts), each mistake gives its warning with the documented text (and ``check="raise"`` the
same text as a ValueError) on every backend, and the controls (mode precedence, thread
locality, the environment variable, bad values).

pyproject's pytest configuration ignores InputWarning globally, so every test here records
warnings with ``simplefilter("always")`` to see them again.
"""

import contextlib
import functools
import os
import re
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

import fastxent as fx
from fastxent import _config

DTYPES = [np.float32, np.float64]


@pytest.fixture(autouse=True)
def _default_mode(monkeypatch):
    """Every test starts with the process mode "warn" (the library's default is "off", see
    test_default_is_off_and_warning_class), whatever the environment."""
    monkeypatch.delenv("FASTXENT_CHECK", raising=False)
    _config.reload_env()
    fx.set_check("warn")
    yield
    fx.set_check(None)
    monkeypatch.delenv("FASTXENT_CHECK", raising=False)
    _config.reload_env()


@contextlib.contextmanager
def recorded():
    """Record every warning (InputWarning is ignored by the suite's configuration)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def input_warnings(caught):
    return [str(w.message) for w in caught if issubclass(w.category, fx.InputWarning)]


def assert_silent(fn, *args, **kwargs):
    with recorded() as caught:
        out = fn(*args, **kwargs)
    texts = input_warnings(caught)
    assert not texts, f"false alarm: {texts}"
    return out


def one_warning(fn, *args, **kwargs):
    """The text of the single InputWarning that fn(*args, **kwargs) gives."""
    with recorded() as caught:
        fn(*args, **kwargs)
    texts = input_warnings(caught)
    assert len(texts) == 1, texts
    return texts[0]


def warns_and_raises(fn, *args, check_kw="check", **kwargs):
    """The warning text of ``check="warn"``; asserts ``check="raise"`` raises ValueError with
    exactly that text and ``check="off"`` is silent."""
    text = one_warning(fn, *args, **{check_kw: "warn"}, **kwargs)
    assert text.startswith("fastxent: ")
    with pytest.raises(ValueError) as err:
        fn(*args, **{check_kw: "raise"}, **kwargs)
    assert str(err.value) == text
    assert_silent(fn, *args, **{check_kw: "off"}, **kwargs)
    return text


# --------------------------------------------------------------------------- helpers

def softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(z):
    return 1 / (1 + np.exp(-np.asarray(z, np.float64)))


def one_hot(t, C):
    return np.eye(C)[t]


def all_losses(logits, t, backend, dtype, rng, **kw):
    """Every softmax and sigmoid loss path on logits (N, C) and integer targets t: asserts
    none warns."""
    x = np.ascontiguousarray(logits, dtype=dtype)
    N, C = x.shape
    oh = one_hot(t, C).astype(dtype)
    smooth = (0.9 * one_hot(t, C) + 0.1 / C).astype(dtype)
    dist = softmax(rng.normal(size=(N, C)) * 2).astype(dtype)  # proper soft labels
    opts = dict(backend=backend, **kw)
    assert_silent(fx.sparse_softmax_cross_entropy_with_logits, t, x, **opts)
    assert_silent(fx.sparse_softmax_cross_entropy_with_logits, t, x, reduction="mean",
                  label_smoothing=0.1, **opts)
    for y in (oh, smooth, dist):
        assert_silent(fx.softmax_cross_entropy_with_logits, y, x, **opts)
        assert_silent(fx.softmax_cross_entropy_with_logits, y, x, reduction="mean", **opts)
        assert_silent(fx.SoftmaxCrossEntropy(**opts).gradient, y, x)
    assert_silent(fx.softmax_cross_entropy_with_logits, oh, x, label_smoothing=0.1, **opts)
    assert_silent(fx.SparseSoftmaxCrossEntropy(**opts).loss_gradient, t, x)
    # the same logits as independent sigmoid (multi-label) logits, and one-vs-rest labels
    for y in (oh, smooth):
        assert_silent(fx.sigmoid_cross_entropy_with_logits, y, x, **opts)
        assert_silent(fx.SigmoidCrossEntropy(**opts).loss_gradient, y, x)
    # Keras spelling, from_logits=True, and from_logits=False on the real probabilities
    with fx.use_backend(backend):
        assert_silent(fx.categorical_crossentropy, oh, x, from_logits=True)
        assert_silent(fx.sparse_categorical_crossentropy, t, x, from_logits=True)
        assert_silent(fx.binary_crossentropy, oh, x, from_logits=True)
        assert_silent(fx.categorical_crossentropy, oh, softmax(x).astype(dtype))
        assert_silent(fx.sparse_categorical_crossentropy, t, softmax(x).astype(dtype))
        assert_silent(fx.binary_crossentropy, oh, sigmoid(x).astype(dtype))


def binary_losses(z, y, backend, dtype):
    """A binary model's decision values z (N,) as sigmoid logits (N, 1) and as softmax
    logits [0, z] (C = 2)."""
    x1 = np.ascontiguousarray(z[:, None], dtype=dtype)
    yy = y[:, None].astype(dtype)
    assert_silent(fx.sigmoid_cross_entropy_with_logits, yy, x1, backend=backend)
    assert_silent(fx.sigmoid_cross_entropy_with_logits, yy, x1, backend=backend,
                  reduction="mean")
    with fx.use_backend(backend):
        assert_silent(fx.binary_crossentropy, yy, x1, from_logits=True)
        assert_silent(fx.binary_crossentropy, yy, sigmoid(x1).astype(dtype))
    x2 = np.ascontiguousarray(np.stack([np.zeros_like(z), z], axis=1), dtype=dtype)
    assert_silent(fx.sparse_softmax_cross_entropy_with_logits, y, x2, backend=backend)
    assert_silent(fx.softmax_cross_entropy_with_logits, one_hot(y, 2).astype(dtype), x2,
                  backend=backend)


# ------------------------------------------------------------------ no false alarms

@functools.lru_cache(maxsize=None)
def trained_logits():
    """(name, logits (N, C), targets) of models on bundled data, early and late in
    training, and binary (name, decision values (N,), targets)."""
    from sklearn.datasets import load_breast_cancer, load_digits, load_iris
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from fastxent.sklearn import SoftmaxRegression

    multi, binary = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", fx.InputWarning)
        for name, loader in (("digits", load_digits), ("iris", load_iris)):
            X, y = loader(return_X_y=True)
            for scaled in (False, True):
                Xs = StandardScaler().fit_transform(X) if scaled else X
                for it in (1, 2, 3, 200):
                    m = SoftmaxRegression(max_iter=it).fit(Xs, y)
                    multi.append((f"{name} fastxent it={it} scaled={scaled}",
                                  Xs @ m.coef_.T + m.intercept_, y))
                    lr = LogisticRegression(max_iter=it).fit(Xs, y)
                    multi.append((f"{name} sklearn it={it} scaled={scaled}",
                                  lr.decision_function(Xs), y))
        X, y = load_breast_cancer(return_X_y=True)
        Xs = StandardScaler().fit_transform(X)
        for it in (1, 2, 3, 200):
            for name, est in (("fastxent", SoftmaxRegression(max_iter=it)),
                              ("sklearn", LogisticRegression(max_iter=it))):
                binary.append((f"breast_cancer {name} it={it}",
                               est.fit(Xs, y).decision_function(Xs), y))
    return multi, binary


def test_trained_model_logits_never_warn(backend, dtype):
    multi, binary = trained_logits()
    rng = np.random.default_rng(0)
    for name, logits, t in multi:
        try:
            all_losses(logits, t, backend, dtype, rng)
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from None
    for name, z, y in binary:
        try:
            binary_losses(z, y, backend, dtype)
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from None


@pytest.mark.parametrize("scale", [0.01, 1.0, 10.0, 100.0])
@pytest.mark.parametrize("C", [2, 3, 10, 1000])
def test_random_normal_logits_never_warn(backend, dtype, scale, C):
    rng = np.random.default_rng(C * 1000 + int(scale * 100))
    N = 64
    logits = rng.normal(size=(N, C)) * scale
    t = rng.integers(0, C, N)
    all_losses(logits, t, backend, dtype, rng)
    # shifted logits (a large common offset) and a model at initialisation (all zero)
    all_losses(logits + 50, t, backend, dtype, rng)
    all_losses(np.zeros((N, C)), t, backend, dtype, rng)
    binary_losses(logits[:, 0], t % 2, backend, dtype)


def test_zero_logits_are_not_sigmoid_outputs(backend, dtype):
    # A zero-initialised model's logits are all 0, inside [0, 1]; sigmoid outputs are never 0.
    # (This used to warn "look like sigmoid outputs" on every backend.)
    y = (np.arange(24).reshape(8, 3) % 2).astype(dtype)
    assert_silent(fx.sigmoid_cross_entropy_with_logits, y, np.zeros((8, 3), dtype),
                  backend=backend, check="raise")


def test_documented_neg_inf_masking_is_silent(backend, dtype):
    rng = np.random.default_rng(3)
    N, C = 16, 5
    x = rng.normal(size=(N, C)).astype(dtype)
    t = rng.integers(0, C, N)
    x[np.arange(N), (t + 1) % C] = -np.inf  # a class masked in every row, never the target
    x[np.arange(0, N, 3), (t[::3] + 2) % C] = -np.inf
    loss = assert_silent(fx.sparse_softmax_cross_entropy_with_logits, t, x, backend=backend,
                         check="raise")
    assert np.isfinite(loss).all()
    y = one_hot(t, C).astype(dtype)
    loss = assert_silent(fx.softmax_cross_entropy_with_logits, y, x, backend=backend,
                         check="raise")
    assert np.isfinite(loss).all()
    g = assert_silent(fx.SoftmaxCrossEntropy(backend=backend, check="raise").gradient, y, x)
    assert np.isfinite(g).all()
    # sigmoid: -inf under label 0 and +inf under label 1 are exact (loss 0)
    ys = (rng.random((N, C)) < 0.5).astype(dtype)
    xs = rng.normal(size=(N, C)).astype(dtype)
    xs[ys == 0] = -np.inf
    xs[:4][ys[:4] == 1] = np.inf
    loss = assert_silent(fx.sigmoid_cross_entropy_with_logits, ys, xs, backend=backend,
                         check="raise")
    assert np.isfinite(loss).all()


# ---------------------------------------------------------------------- each mistake

N, C = 16, 10


def _problem(dtype, seed=0):
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(N, C)) * 3).astype(dtype)
    t = rng.integers(0, C, N)
    return logits, t, one_hot(t, C).astype(dtype)


def test_softmax_outputs_as_logits(backend, dtype):
    logits, t, y = _problem(dtype)
    probs = softmax(logits).astype(dtype)
    expected = ("fastxent: all 16 rows of logits lie in [0, 1] and sum to 1 within 1e-05: "
                "they look like softmax outputs (probabilities), not logits; pass the values "
                "before the softmax, or use from_logits=False (categorical_crossentropy)")
    for fn, labels in ((fx.sparse_softmax_cross_entropy_with_logits, t),
                       (fx.softmax_cross_entropy_with_logits, y)):
        assert warns_and_raises(fn, labels, probs, backend=backend) == expected
    for cls, labels in ((fx.SparseSoftmaxCrossEntropy, t), (fx.SoftmaxCrossEntropy, y)):
        assert warns_and_raises(lambda check: cls(backend=backend, check=check).gradient(
            labels, probs)) == expected
    # Keras names the argument y_pred
    with fx.use_backend(backend):
        text = warns_and_raises(fx.categorical_crossentropy, y, probs, from_logits=True)
        assert text == expected.replace("rows of logits", "rows of y_pred")
        text = warns_and_raises(
            lambda check: fx.CategoricalCrossentropy(from_logits=True, check=check)(y, probs))
        assert text == expected.replace("rows of logits", "rows of y_pred")
    # one row that is not a distribution: no warning (only a whole batch is flagged)
    mixed = probs.copy()
    mixed[7] = logits[7]
    assert_silent(fx.softmax_cross_entropy_with_logits, y, mixed, backend=backend,
                  check="raise")


def test_softmax_outputs_tolerance_wide_rows(backend):
    # float32 softmax outputs of 32768 classes sum to 1 only within ~C u: still caught
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 32768)) * 2
    probs = softmax(x).astype(np.float32)
    t = rng.integers(0, 32768, 4)
    text = one_warning(fx.sparse_softmax_cross_entropy_with_logits, t, probs, backend=backend)
    assert "all 4 rows of logits lie in [0, 1] and sum to 1 within 1e-02" in text


def test_sigmoid_outputs_as_logits(backend, dtype):
    logits, _, y = _problem(dtype)
    probs = sigmoid(logits).astype(dtype)
    expected = ("fastxent: all 160 values of logits lie in (0, 1]: they look like sigmoid "
                "outputs (probabilities), not logits; pass the values before the sigmoid, or "
                "use binary_crossentropy(..., from_logits=False)")
    assert warns_and_raises(fx.sigmoid_cross_entropy_with_logits, y, probs,
                            backend=backend) == expected
    assert warns_and_raises(lambda check: fx.SigmoidCrossEntropy(
        backend=backend, check=check).loss_gradient(y, probs)) == expected
    # binary: one logit per example
    yb, pb = y[:, :1], probs[:, :1]
    text = warns_and_raises(fx.sigmoid_cross_entropy_with_logits, yb, pb, backend=backend)
    assert "all 16 values of logits lie in (0, 1]" in text
    with fx.use_backend(backend):
        text = warns_and_raises(fx.binary_crossentropy, y, probs, from_logits=True)
    assert text == expected.replace("values of logits", "values of y_pred")
    # one real logit among them: silent
    probs[5, 3] = -0.5
    assert_silent(fx.sigmoid_cross_entropy_with_logits, y, probs, backend=backend,
                  check="raise")


def test_logits_as_probabilities_keras(backend, dtype):
    rng = np.random.default_rng(2)
    probs = softmax(rng.normal(size=(N, C))).astype(dtype)
    t = rng.integers(0, C, N)
    y = one_hot(t, C).astype(dtype)
    bad = probs.copy()
    bad[3, 4], bad[3, 6], bad[9, 0] = -1.5, 2.0, 1.25
    expected = ("fastxent: 3 of 160 values of y_pred lie outside [0, 1] (first at [3, 4]): "
                "they look like logits, not probabilities; pass from_logits=True")
    with fx.use_backend(backend):
        assert warns_and_raises(fx.categorical_crossentropy, y, bad) == expected
        assert warns_and_raises(fx.sparse_categorical_crossentropy, t, bad) == expected
        assert warns_and_raises(fx.binary_crossentropy, y, bad) == expected
        for cls, labels in ((fx.CategoricalCrossentropy, y),
                            (fx.SparseCategoricalCrossentropy, t),
                            (fx.BinaryCrossentropy, y)):
            assert warns_and_raises(lambda check: cls(check=check)(labels, bad)) == expected
        # fully logits: every value counted
        logits = (rng.normal(size=(N, C)) * 3).astype(dtype)
        text = one_warning(fx.categorical_crossentropy, y, logits)
        n_out = int(np.count_nonzero((logits < 0) | (logits > 1)))
        assert f"{n_out} of 160 values of y_pred lie outside [0, 1]" in text
        # real probabilities, including exact 0 and 1: silent
        ok = probs.copy()
        ok[0] = one_hot(2, C)
        assert_silent(fx.categorical_crossentropy, y, ok, check="raise")
        assert_silent(fx.binary_crossentropy, y, ok, check="raise")


def test_negative_labels(backend, dtype):
    logits, _, y = _problem(dtype)
    y[3] = 0
    y[3, :2] = [1.25, -0.25]  # still sums to 1: only the sign is wrong
    y[11] = 0
    y[11, :3] = [0.5, 0.75, -0.25]
    expected = ("fastxent: 2 of 16 rows of labels have negative entries, first row [3]: "
                "labels must be a distribution; pass one-hot or probability labels (entries "
                "in [0, 1] summing to 1)")
    assert warns_and_raises(fx.softmax_cross_entropy_with_logits, y, logits,
                            backend=backend) == expected
    assert warns_and_raises(lambda check: fx.SoftmaxCrossEntropy(
        backend=backend, check=check).loss(y, logits)) == expected
    with fx.use_backend(backend):
        text = warns_and_raises(fx.categorical_crossentropy, y, logits, from_logits=True)
    assert text == expected.replace("labels", "y_true")
    # the first offending row in the user's layout: (2, 8, C) logits, class axis first
    y3, x3 = y.reshape(2, 8, C), logits.reshape(2, 8, C)
    text = one_warning(fx.softmax_cross_entropy_with_logits, y3, x3, backend=backend)
    assert "2 of 16 rows of labels have negative entries, first row [0, 3]" in text
    text = one_warning(fx.softmax_cross_entropy_with_logits, np.moveaxis(y3, -1, 0),
                       np.moveaxis(x3, -1, 0), axis=0, backend=backend)
    assert "first row [0, 3]" in text


def test_labels_not_summing_to_one(backend, dtype):
    logits, _, y = _problem(dtype)
    y[5] *= 0.5
    y[9] *= 2.0
    y[12] = 0
    expected = ("fastxent: 3 of 16 rows of labels do not sum to 1 (first row [5]); "
                "fastxent's gradient is right for any label mass, but labels are most likely "
                "meant to be a distribution: normalise them, or pass check='off' if the mass "
                "is deliberate")
    assert warns_and_raises(fx.softmax_cross_entropy_with_logits, y, logits,
                            backend=backend) == expected
    # a sum off by more than rounding, but by little, is still caught; rounding is not
    y2 = _problem(dtype)[2]
    y2[0] = y2[0] * (1 + 1e-3)
    text = one_warning(fx.softmax_cross_entropy_with_logits, y2, logits, backend=backend)
    assert "1 of 16 rows of labels do not sum to 1 (first row [0])" in text
    y3 = softmax(np.random.default_rng(4).normal(size=(N, C))).astype(dtype)
    assert_silent(fx.softmax_cross_entropy_with_logits, y3, logits, backend=backend,
                  check="raise")


def test_labels_that_look_like_logits(backend, dtype):
    logits, t, _ = _problem(dtype)
    rng = np.random.default_rng(5)
    fake = (rng.normal(size=(N, C)) + 0.0).astype(dtype)
    fake[np.arange(N), t] = 3.0  # a score above 1 in every row
    text = warns_and_raises(fx.softmax_cross_entropy_with_logits, fake, logits,
                            backend=backend)
    assert ("every one of the 16 rows of labels has entries above 1: they look like logits, "
            "not a distribution; pass one-hot or probability labels (softmax them first if "
            "they are scores)") in text
    n_neg = int(np.count_nonzero((fake < 0).any(axis=1)))
    first_neg = int(np.flatnonzero((fake < 0).any(axis=1))[0])
    assert f"{n_neg} of 16 rows of labels have negative entries, first row [{first_neg}]" in text
    assert "do not sum to 1" not in text  # the stronger diagnosis replaces it
    # entries above 1 in some rows only: reported as rows not summing to 1
    y = one_hot(t, C).astype(dtype)
    y[2, t[2]] = 2.0
    text = one_warning(fx.softmax_cross_entropy_with_logits, y, logits, backend=backend)
    assert "entries above 1" not in text
    assert "1 of 16 rows of labels do not sum to 1 (first row [2])" in text


def test_nonfinite_logits(backend, dtype):
    logits, t, y = _problem(dtype)
    logits[4, 1] = np.nan
    logits[8, 2] = np.inf
    logits[13, 0] = np.nan
    expected = ("fastxent: 3 of 16 rows of logits hold NaN or +inf (or -inf on a class with a "
                "nonzero target), first row [4]: their losses and gradients are NaN or inf; "
                "find where the logits overflow (a learning rate too high, a log of 0), or "
                "mask a class with -inf only where its target is 0")
    assert warns_and_raises(fx.sparse_softmax_cross_entropy_with_logits, t, logits,
                            backend=backend) == expected
    assert warns_and_raises(fx.softmax_cross_entropy_with_logits, y, logits,
                            backend=backend) == expected
    assert warns_and_raises(lambda check: fx.SparseSoftmaxCrossEntropy(
        backend=backend, check=check).gradient(t, logits)) == expected
    # -inf under the target is a mistake (loss inf), unlike -inf on a class of target 0
    x2 = _problem(dtype)[0]
    x2[6, t[6]] = -np.inf
    x2[7, (t[7] + 1) % C] = -np.inf  # masking: fine
    text = warns_and_raises(fx.sparse_softmax_cross_entropy_with_logits, t, x2,
                            backend=backend)
    assert "1 of 16 rows of logits hold NaN or +inf" in text and "first row [6]" in text
    text = warns_and_raises(fx.softmax_cross_entropy_with_logits, y, x2, backend=backend)
    assert "1 of 16 rows of logits hold NaN or +inf" in text and "first row [6]" in text
    # sigmoid: NaN and +inf under a label 0
    xs = _problem(dtype)[0]
    ys = np.zeros_like(xs)
    xs[10, 3] = np.nan
    xs[12, 5] = np.inf
    text = warns_and_raises(fx.sigmoid_cross_entropy_with_logits, ys, xs, backend=backend)
    assert "2 of 16 rows of logits hold NaN or +inf" in text and "first row [10]" in text


def test_nan_labels(backend, dtype):
    logits, _, y = _problem(dtype)
    y[7, 2] = np.nan
    y[14] = np.nan
    expected = ("fastxent: 2 of 16 rows of labels hold NaN, first row [7]: their losses and "
                "gradients are NaN; find where the labels are made (a division by a zero "
                "sum?), or drop those rows")
    assert warns_and_raises(fx.softmax_cross_entropy_with_logits, y, logits,
                            backend=backend) == expected
    assert warns_and_raises(lambda check: fx.SoftmaxCrossEntropy(
        backend=backend, check=check).gradient(y, logits)) == expected


@pytest.mark.parametrize("path", ["sparse-ignore", "sparse-weight", "dense-weight",
                                  "sigmoid-weight", "object-ignore"])
def test_mean_over_nothing(backend, dtype, path):
    logits, t, y = _problem(dtype)
    zero = np.zeros(N)
    opts = dict(backend=backend, reduction="mean")
    if path == "sparse-ignore":
        call = functools.partial(fx.sparse_softmax_cross_entropy_with_logits,
                                 np.full(N, -100), logits, ignore_index=-100, **opts)
    elif path == "sparse-weight":
        call = functools.partial(fx.sparse_softmax_cross_entropy_with_logits, t, logits,
                                 sample_weight=zero, **opts)
    elif path == "dense-weight":
        call = functools.partial(fx.softmax_cross_entropy_with_logits, y, logits,
                                 sample_weight=zero, **opts)
    elif path == "sigmoid-weight":
        call = functools.partial(fx.sigmoid_cross_entropy_with_logits, y, logits,
                                 sample_weight=zero, **opts)
    else:
        def call(check):
            obj = fx.SparseSoftmaxCrossEntropy(ignore_index=-1, backend=backend, check=check)
            return obj.loss_gradient(np.full(N, -1), logits)
    text = warns_and_raises(call)
    assert text == ("fastxent: reduction='mean' over nothing: every one of the 16 examples is "
                    "ignored (ignore_index) or has weight 0, so the loss is 0 with a zero "
                    "gradient; check the labels and weights of this batch")
    # one example left: silent
    if path.startswith("sparse-ignore"):
        t2 = np.full(N, -100)
        t2[3] = 1
        assert_silent(fx.sparse_softmax_cross_entropy_with_logits, t2, logits,
                      ignore_index=-100, check="raise", **opts)
    # reduction="sum" over nothing is not flagged (it is 0 by definition)
    if path == "sparse-weight":
        assert_silent(fx.sparse_softmax_cross_entropy_with_logits, t, logits,
                      sample_weight=zero, backend=backend, reduction="sum", check="raise")


def test_several_mistakes_in_one_message(backend):
    logits, _, y = _problem(np.float64)
    logits[2, 0] = np.nan
    y[5, 1] = -0.5
    text = one_warning(fx.softmax_cross_entropy_with_logits, y, logits, backend=backend)
    # in order of seriousness, one warning
    assert text.index("rows of logits hold NaN") < text.index("negative entries")


# -------------------------------------------------------------------------- controls

def _mistake(backend="numpy", **kw):
    """A call that warns (softmax outputs as logits)."""
    logits, t, _ = _problem(np.float64)
    return fx.sparse_softmax_cross_entropy_with_logits(t, softmax(logits), backend=backend,
                                                       **kw)


def _mode_seen(**kw):
    """"off", "warn" or "raise": what _mistake(**kw) does now in this thread."""
    try:
        with recorded() as caught:
            _mistake(**kw)
    except ValueError as e:
        assert "look like softmax outputs" in str(e)
        return "raise"
    return "warn" if input_warnings(caught) else "off"


def test_default_is_off_and_warning_class():
    # "off" by default: "warn" costs more than issue 18's bar (README, "Diagnostics")
    fx.set_check(None)
    assert fx.get_check() == "off" and _mode_seen() == "off"
    fx.set_check("warn")
    assert issubclass(fx.InputWarning, UserWarning)
    assert fx.get_check() == "warn"
    assert _mode_seen() == "warn"
    with recorded() as caught:
        _mistake()
    assert caught[0].category is fx.InputWarning
    assert caught[0].filename == __file__  # points at the caller's line, whatever the path
    logits, t, y = _problem(np.float64)
    for call in (lambda: fx.SparseSoftmaxCrossEntropy().gradient(t, softmax(logits)),
                 lambda: fx.categorical_crossentropy(y, logits),
                 lambda: fx.CategoricalCrossentropy()(y, logits),
                 lambda: fx.sparse_softmax_cross_entropy_with_logits(
                     t, logits, sample_weight=np.zeros(N), reduction="mean")):
        with recorded() as caught:
            call()
        assert [w.filename for w in caught] == [__file__]


def test_check_off_silences_every_mistake(backend):
    logits, t, y = _problem(np.float64)
    bad = logits.copy()
    bad[0, 0] = np.nan
    ybad = y.copy()
    ybad[1, 0] = -1
    ybad[2] = np.nan
    with fx.checking("raise"):
        assert_silent(fx.sparse_softmax_cross_entropy_with_logits, t, softmax(logits),
                      backend=backend, check="off")
        assert_silent(fx.softmax_cross_entropy_with_logits, ybad, bad, backend=backend,
                      check="off")
        assert_silent(fx.sigmoid_cross_entropy_with_logits, y, sigmoid(logits),
                      backend=backend, check="off")
        assert_silent(fx.sparse_softmax_cross_entropy_with_logits, t, logits,
                      sample_weight=np.zeros(N), reduction="mean", backend=backend,
                      check="off")
        assert_silent(fx.categorical_crossentropy, y, logits, check="off")
        assert_silent(fx.SoftmaxCrossEntropy(backend=backend, check="off").gradient, ybad, bad)


def test_set_check_and_checking_precedence():
    assert _mode_seen() == "warn"
    fx.set_check("off")
    assert fx.get_check() == "off" and _mode_seen() == "off"
    assert _mode_seen(check="warn") == "warn"  # per call beats the process default
    assert _mode_seen(check="raise") == "raise"
    with fx.checking("raise"):  # a with-block beats the process default
        assert fx.get_check() == "raise" and _mode_seen() == "raise"
        assert _mode_seen(check="off") == "off"  # per call beats the with-block
        with fx.checking("warn"):  # nesting
            assert _mode_seen() == "warn"
        assert _mode_seen() == "raise"
    assert _mode_seen() == "off"  # restored on exit
    fx.set_check("raise")
    assert _mode_seen() == "raise"
    with pytest.raises(RuntimeError):
        with fx.checking("off"):
            assert _mode_seen() == "off"
            raise RuntimeError
    assert _mode_seen() == "raise"  # restored after an exception
    fx.set_check(None)
    assert fx.get_check() == "off" and _mode_seen() == "off"


def test_loss_objects_keep_their_mode_and_follow_the_default():
    logits, t, _ = _problem(np.float64)
    probs = softmax(logits)
    pinned = fx.SparseSoftmaxCrossEntropy(check="off")
    follows = fx.SparseSoftmaxCrossEntropy()
    with fx.checking("raise"):
        assert_silent(pinned.loss, t, probs)
        with pytest.raises(ValueError, match="look like softmax outputs"):
            follows.loss(t, probs)
    keras_pinned = fx.CategoricalCrossentropy(check="raise")
    with fx.checking("off"):
        with pytest.raises(ValueError, match="values of y_pred lie outside"):
            keras_pinned(one_hot(t, C), logits)


def test_checking_is_thread_local():
    inside, done = threading.Event(), threading.Event()
    seen = {}

    def worker():
        with fx.checking("raise"):
            seen["worker"] = (fx.get_check(), _mode_seen())
            inside.set()
            done.wait(10)
        seen["worker after"] = _mode_seen()

    th = threading.Thread(target=worker)
    th.start()
    assert inside.wait(10)
    try:
        # the worker is inside its with-block now: this thread keeps the default
        assert fx.get_check() == "warn" and _mode_seen() == "warn"
        with fx.checking("off"):
            assert _mode_seen() == "off"
    finally:
        done.set()
        th.join(10)
    assert seen == {"worker": ("raise", "raise"), "worker after": "warn"}
    # set_check is process-wide: a new thread sees it
    fx.set_check("off")
    out = []
    th = threading.Thread(target=lambda: out.append(_mode_seen()))
    th.start()
    th.join(10)
    assert out == ["off"]


_ENV_SCRIPT = r"""
import warnings, numpy as np, fastxent as fx
warnings.simplefilter("always")
x = np.full((4, 5), 0.2)
t = np.arange(4)
def seen(**kw):
    try:
        with warnings.catch_warnings(record=True) as c:
            warnings.simplefilter("always")
            fx.sparse_softmax_cross_entropy_with_logits(t, x, backend="numpy", **kw)
    except ValueError as e:
        return "raise" if "softmax outputs" in str(e) else "error: " + str(e)
    return "warn" if any(w.category is fx.InputWarning for w in c) else "off"
out = [fx.get_check() if {get} else "", seen(), seen(check="warn")]
fx.set_check("warn")
out.append(seen())
print(" ".join(out))
"""


@pytest.mark.parametrize("env,expected", [
    ("off", "off off warn warn"),
    ("raise", "raise raise warn warn"),
    ("warn", "warn warn warn warn"),
    ("Loud", "error error warn warn"),
])
def test_fastxent_check_environment(env, expected):
    bad = env == "Loud"
    script = _ENV_SCRIPT.replace("{get}", "False" if bad else "True")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "FASTXENT_CHECK": env}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    words = proc.stdout.split()
    if bad:
        # a bad FASTXENT_CHECK is an error naming the variable at the first call that reads
        # it; a per-call check= or set_check does not read it
        assert proc.stdout.startswith(" error: FASTXENT_CHECK='Loud' is not one of 'off', "
                                      "'warn', 'raise'"), proc.stdout
        assert words[-2:] == ["warn", "warn"]
    else:
        assert " ".join(words) == expected


@pytest.mark.parametrize("bad", ["loud", "OFF", "", 1, True])
def test_bad_mode_names_the_option(bad):
    msg = re.escape(f"check={bad!r} is not one of 'off', 'warn', 'raise'")
    logits, t, y = _problem(np.float64)
    with pytest.raises(ValueError, match=msg):
        fx.set_check(bad)
    with pytest.raises(ValueError, match=msg):
        fx.checking(bad)
    with pytest.raises(ValueError, match=msg):
        fx.sparse_softmax_cross_entropy_with_logits(t, logits, check=bad)
    with pytest.raises(ValueError, match=msg):
        fx.softmax_cross_entropy_with_logits(y, logits, check=bad)
    with pytest.raises(ValueError, match=msg):
        fx.sigmoid_cross_entropy_with_logits(y, logits, check=bad)
    with pytest.raises(ValueError, match=msg):
        fx.SoftmaxCrossEntropy(check=bad)
    with pytest.raises(ValueError, match=msg):
        fx.categorical_crossentropy(y, softmax(logits), check=bad)
    with pytest.raises(ValueError, match=msg):
        fx.binary_crossentropy(y, sigmoid(logits), check=bad)
    with pytest.raises(ValueError, match=msg):
        fx.CategoricalCrossentropy(check=bad)(y, softmax(logits))
    assert fx.get_check() == "warn"  # nothing was set
