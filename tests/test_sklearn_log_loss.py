"""``fastxent.sklearn.log_loss`` against ``sklearn.metrics.log_loss`` (values, clipping,
warnings and error conditions of the installed version) and, from logits, against exact
values."""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.metrics import log_loss as sk_log_loss  # noqa: E402

from fastxent.sklearn import log_loss  # noqa: E402

RNG = np.random.default_rng(7)


def _probs(n, C, dtype=np.float64):
    P = RNG.dirichlet(np.ones(C), n)
    return P.astype(dtype)


def _both(*args, **kwargs):
    """(ours, sklearn's) result or exception type, and the warnings each emitted."""
    out = []
    for f in (log_loss, sk_log_loss):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            try:
                r = f(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the type is what is compared
                r = type(exc)
        out.append((r, sorted({type(x.message).__name__ for x in w
                               if not issubclass(x.category, DeprecationWarning)})))
    return out


CASES = {
    "multiclass": lambda: ([0, 2, 1, 1, 0, 2], _probs(6, 3)),
    "strings": lambda: (["spam", "ham", "ham", "spam"],
                        [[.1, .9], [.9, .1], [.8, .2], [.35, .65]]),
    "binary 1-d": lambda: ([0, 1, 1, 0, 1], RNG.uniform(0, 1, 5)),
    "binary one column": lambda: ([3, 7, 7], RNG.uniform(0, 1, (3, 1))),
    "exact zeros and ones": lambda: ([0, 1, 2], np.eye(3)[[1, 1, 0]]),
    "float32 clipping": lambda: ([0, 1, 2], np.eye(3, dtype=np.float32)[[1, 1, 0]]),
    "float16": lambda: ([0, 1], np.array([[0.2, 0.8], [0.6, 0.4]], np.float16)),
    "unnormalised rows": lambda: ([0, 1], [[0.2, 0.2], [0.1, 0.5]]),
    "indicator matrix": lambda: (np.array([[1, 0, 1], [0, 1, 0]]), _probs(2, 3)),
    "int probabilities": lambda: ([0, 1], [[1, 0], [0, 1]]),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_probabilities_match_sklearn(case, normalize, weighted):
    y, P = CASES[case]()
    sw = RNG.uniform(0.1, 3.0, len(y)) if weighted else None
    (ours, w_ours), (ref, w_ref) = _both(y, P, normalize=normalize, sample_weight=sw)
    assert w_ours == w_ref
    assert ours == pytest.approx(ref, rel=1e-12, abs=0), (ours, ref)


def test_explicit_labels_match_sklearn():
    P = _probs(4, 4)
    (ours, w1), (ref, w2) = _both([1, 1, 2, 2], P, labels=[0, 1, 2, 3])
    assert ours == pytest.approx(ref, rel=1e-12) and w1 == w2 == []
    # labels not in sorted order: both warn, and both use the sorted order
    (ours, w1), (ref, w2) = _both([1, 1, 2, 2], P, labels=[3, 2, 1, 0])
    assert ours == pytest.approx(ref, rel=1e-12) and w1 == w2 == ["UserWarning"]


@pytest.mark.parametrize("args, kwargs", [
    (([0, 1], [[0.5, 1.5], [0.5, 0.5]]), {}),                   # > 1
    (([0, 1], [[-0.1, 1.1], [0.5, 0.5]]), {}),                  # < 0 (and > 1)
    (([0, 1], [[0.0, -0.1], [0.5, 0.5]]), {}),                  # < 0
    (([1, 1, 1], _probs(3, 2)), {}),                            # one class in y_true
    (([1, 1, 1], _probs(3, 2)), {"labels": [1]}),               # one class in labels
    (([0, 1, 2], _probs(3, 2)), {}),                            # 3 classes vs 2 columns
    (([0, 1, 1], _probs(3, 3)), {"labels": [0, 1]}),            # labels vs columns
    (([0, 1, 5], _probs(3, 2)), {"labels": [0, 1]}),            # y_true outside labels
    (([0, 1], _probs(3, 2)), {}),                               # inconsistent lengths
    (([0, 1, 0], _probs(3, 2)), {"sample_weight": [1.0, 2.0]}),  # weights length
    (([0, 1, 0], [[np.nan, 1.0], [0.5, 0.5], [0.5, 0.5]]), {}),  # NaN
])
def test_errors_under_the_same_conditions(args, kwargs):
    (ours, _), (ref, _) = _both(*args, **kwargs)
    assert isinstance(ref, type) and issubclass(ref, Exception)
    assert ours is ref


def test_error_messages_name_the_problem():
    with pytest.raises(ValueError, match="greater than 1"):
        log_loss([0, 1], [[0.5, 1.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match="only one label"):
        log_loss([1, 1], [[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match="different number of classes: 3 vs 2"):
        log_loss([0, 1, 2], _probs(3, 2))


# ------------------------------------------------------------------------- from logits

def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("normalize", [True, False])
def test_from_logits_equals_probabilities_when_these_are_exact(weighted, normalize):
    y = RNG.integers(0, 5, 50)
    Z = RNG.standard_normal((50, 5)) * 2
    sw = RNG.uniform(0.1, 2, 50) if weighted else None
    ours = log_loss(y, Z, from_logits=True, normalize=normalize, sample_weight=sw)
    ref = sk_log_loss(y, _softmax(Z), normalize=normalize, sample_weight=sw)
    assert ours == pytest.approx(ref, rel=1e-12)


def test_from_logits_is_exact_where_probabilities_clip():
    # softmax gives p = 0 for the true class of row 0: probabilities clip at eps (loss 36.04),
    # logits give the true -log p = 800 - log(1 + e^-800) = 800.
    Z = np.array([[0.0, 800.0], [3.0, 0.0]])
    exact = (800.0 + np.log1p(np.exp(-3.0))) / 2
    assert log_loss([0, 0], Z, labels=[0, 1], from_logits=True) == pytest.approx(exact,
                                                                               rel=1e-15)
    assert sk_log_loss([0, 0], _softmax(Z), labels=[0, 1]) == pytest.approx(
        (-np.log(np.finfo(float).eps) + np.log1p(np.exp(-3.0))) / 2, rel=1e-12)


def test_from_logits_binary_log_odds_and_labels():
    z = np.array([2.0, -1.0, 0.5])
    y = ["no", "yes", "yes"]  # sorted classes: "no" = 0, "yes" = 1 (the positive class)
    p1 = 1 / (1 + np.exp(-z))
    ref = sk_log_loss(y, p1)
    assert log_loss(y, z, from_logits=True) == pytest.approx(ref, rel=1e-12)
    assert log_loss(y, z[:, None], from_logits=True) == pytest.approx(ref, rel=1e-12)
    # a class absent from y_true, declared through labels
    Z = RNG.standard_normal((3, 3))
    got = log_loss([0, 1, 1], Z, labels=[0, 1, 2], from_logits=True)
    assert got == pytest.approx(sk_log_loss([0, 1, 1], _softmax(Z), labels=[0, 1, 2]),
                                rel=1e-12)


def test_from_logits_float32_and_multilabel_and_errors():
    y = RNG.integers(0, 4, 100)
    Z = RNG.standard_normal((100, 4)).astype(np.float32)
    got = log_loss(y, Z, from_logits=True)
    assert got == pytest.approx(sk_log_loss(y, _softmax(Z.astype(np.float64))), rel=1e-6)
    T = np.array([[1, 0, 1], [0, 1, 0]])
    Z = RNG.standard_normal((2, 3))
    assert log_loss(T, Z, from_logits=True) == pytest.approx(sk_log_loss(T, _softmax(Z)),
                                                             rel=1e-12)
    # logits are not range-checked, but the label/column consistency is
    assert np.isfinite(log_loss([0, 1], [[5.0, -3.0], [2.0, 7.0]], from_logits=True))
    with pytest.raises(ValueError, match="different number of classes"):
        log_loss([0, 1, 2], RNG.standard_normal((3, 2)), from_logits=True)


def test_argument_names_follow_the_installed_sklearn():
    # Whatever the installed version calls the probabilities (y_proba since 1.9, y_pred
    # before) and however it treats the other name (a FutureWarning, an error when both are
    # given, or an unknown keyword), fastxent's log_loss does the same.
    import inspect
    y, P = [0, 1, 1], _probs(3, 2)
    for kwargs in ({"y_proba": P}, {"y_pred": P}, {"y_proba": P, "y_pred": P}):
        (ours, w_ours), (ref, w_ref) = _both(y, **kwargs)
        assert w_ours == w_ref
        assert ours == ref if isinstance(ref, type) else ours == pytest.approx(ref, rel=1e-12)
    name = list(inspect.signature(sk_log_loss).parameters)[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # the current name warns about nothing
        assert log_loss(y, **{name: P}) == pytest.approx(sk_log_loss(y, P), rel=1e-12)


def test_from_logits_takes_the_logits_once_under_either_name():
    y, Z = [0, 1, 1], RNG.standard_normal((3, 2))
    ref = log_loss(y, Z, from_logits=True)
    assert log_loss(y, y_proba=Z, from_logits=True) == ref
    assert log_loss(y, y_pred=Z, from_logits=True) == ref
    with pytest.raises(TypeError, match="pass the logits once"):
        log_loss(y, Z, y_proba=Z, from_logits=True)
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['eps'\\]"):
        log_loss(y, Z, eps=1e-7, from_logits=True)
