"""Keras-style functions against the values in Keras' documentation and Keras' formulas."""

import numpy as np
import pytest

import fastxent as fx

Y_TRUE = [[0, 1, 0], [0, 0, 1]]
Y_PRED = [[0.05, 0.95, 0], [0.1, 0.8, 0.1]]


def test_categorical_crossentropy_documented_values():
    # keras.losses.CategoricalCrossentropy docs: per example [0.0513, 2.3026], mean 1.177.
    got = fx.categorical_crossentropy(Y_TRUE, Y_PRED)
    np.testing.assert_allclose(got, [0.0513, 2.3026], atol=1e-4)
    assert abs(got.mean() - 1.177) < 1e-3


def test_sparse_categorical_crossentropy_documented_values():
    got = fx.sparse_categorical_crossentropy([1, 2], Y_PRED)
    assert abs(got.mean() - 1.177) < 1e-3
    ignored = fx.sparse_categorical_crossentropy([1, -1], Y_PRED, ignore_class=-1)
    np.testing.assert_allclose(ignored, [got[0], 0.0])


def test_binary_crossentropy_documented_values():
    # keras.losses.BinaryCrossentropy docs.
    got = fx.binary_crossentropy([[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]])
    np.testing.assert_allclose(got, [0.916, 0.714], atol=1e-3)
    logits = fx.binary_crossentropy([0, 1, 0, 0], [-18.6, 0.51, 2.94, -12.8], from_logits=True)
    assert abs(float(logits) - 0.865) < 1e-3


def test_probabilities_are_renormalised_and_clipped_as_keras():
    y = np.array([[0.0, 1.0, 0.0]])
    p = np.array([[2.0, 0.0, 2.0]])  # unnormalised, with an exact zero on the target
    want = -np.log(1e-7)  # renormalised to [0.5, 0, 0.5], the 0 clipped to 1e-7
    np.testing.assert_allclose(fx.categorical_crossentropy(y, p), [want], rtol=1e-6)
    np.testing.assert_allclose(fx.sparse_categorical_crossentropy([1], p), [want], rtol=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_from_logits_equals_tf_style(backend, eps):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4))
    y = np.eye(4)[rng.integers(0, 4, 5)]
    with fx.use_backend(backend):
        np.testing.assert_allclose(
            fx.categorical_crossentropy(y, x, from_logits=True, label_smoothing=eps),
            fx.softmax_cross_entropy_with_logits(y, x, label_smoothing=eps))
        probs = fx.softmax(x)
        np.testing.assert_allclose(fx.categorical_crossentropy(y, probs, label_smoothing=eps),
                                   fx.softmax_cross_entropy_with_logits(
                                       y, x, label_smoothing=eps), rtol=1e-6)
        np.testing.assert_allclose(
            fx.binary_crossentropy(y, x, from_logits=True, label_smoothing=eps),
            fx.sigmoid_cross_entropy_with_logits(y, x, label_smoothing=eps).mean(-1))
        sig = 1 / (1 + np.exp(-x))
        np.testing.assert_allclose(fx.binary_crossentropy(y, sig, label_smoothing=eps),
                                   fx.binary_crossentropy(y, x, from_logits=True,
                                                          label_smoothing=eps), rtol=1e-6)


def test_softmax_probabilities_fed_as_logits_give_a_different_loss():
    # Seed 004's mistake: feeding softmax outputs to a from_logits loss computes
    # softmax(softmax(x)); the result is not the cross-entropy of the model.
    x = np.array([[2.0, 1.0, 0.1]])
    y = np.array([[1.0, 0.0, 0.0]])
    right = fx.categorical_crossentropy(y, x, from_logits=True)
    wrong = fx.categorical_crossentropy(y, fx.softmax(x), from_logits=True)
    assert abs(right[0] - 0.4170299) < 1e-6 and abs(wrong[0] - right[0]) > 0.3


def test_axis_argument():
    rng = np.random.default_rng(1)
    p = rng.random((3, 4, 2))
    y = np.eye(4)[rng.integers(0, 4, (3, 2))].transpose(0, 2, 1)
    np.testing.assert_allclose(fx.categorical_crossentropy(y, p, axis=1),
                               fx.categorical_crossentropy(np.moveaxis(y, 1, -1),
                                                           np.moveaxis(p, 1, -1)))
    np.testing.assert_allclose(fx.binary_crossentropy(y, p, axis=0),
                               np.mean(-(y * np.log(np.clip(p, 1e-7, 1 - 1e-7))
                                         + (1 - y) * np.log(1 - np.clip(p, 1e-7, 1 - 1e-7))),
                                       axis=0), rtol=1e-6)


# ------------------------------------------------------------------ Keras 3 loss classes

def test_categorical_crossentropy_class_documented_values(backend):
    # keras.losses.CategoricalCrossentropy docstring: 1.177, weighted [0.3, 0.7] 0.814,
    # "sum" 2.354, None [0.0513, 2.303].
    with fx.use_backend(backend):
        assert fx.CategoricalCrossentropy()(Y_TRUE, Y_PRED) == pytest.approx(1.177, abs=1e-3)
        assert fx.CategoricalCrossentropy()(Y_TRUE, Y_PRED, sample_weight=[0.3, 0.7]) == \
            pytest.approx(0.814, abs=1e-3)
        assert fx.CategoricalCrossentropy(reduction="sum")(Y_TRUE, Y_PRED) == \
            pytest.approx(2.354, abs=1e-3)
        np.testing.assert_allclose(fx.CategoricalCrossentropy(reduction=None)(Y_TRUE, Y_PRED),
                                   [0.0513, 2.303], atol=1e-3)


def test_sparse_categorical_crossentropy_class_documented_values(backend):
    # keras.losses.SparseCategoricalCrossentropy docstring: same values with y_true [1, 2]
    with fx.use_backend(backend):
        loss = fx.SparseCategoricalCrossentropy()
        assert loss([1, 2], Y_PRED) == pytest.approx(1.177, abs=1e-3)
        assert loss([1, 2], Y_PRED, sample_weight=[0.3, 0.7]) == pytest.approx(0.814, abs=1e-3)
        # Keras 3 masks ignored entries and "sum_over_batch_size" then divides by the
        # valid ones (keras.src.losses.loss.apply_mask: weight total / valid)
        ignored = fx.SparseCategoricalCrossentropy(ignore_class=-1)([1, -1], Y_PRED)
        assert ignored == pytest.approx(-np.log(0.95), rel=1e-5)


def test_binary_crossentropy_class_documented_values(backend):
    # keras.losses.BinaryCrossentropy docstring (from_logits=True): 0.865, and with
    # label_smoothing=0.1 0.6 ... (the probability example: 0.815 and 0.458 weighted)
    with fx.use_backend(backend):
        bce = fx.BinaryCrossentropy(from_logits=True)
        assert bce([0, 1, 0, 0], [-18.6, 0.51, 2.94, -12.8]) == pytest.approx(0.865, abs=1e-3)
        probs = fx.BinaryCrossentropy()
        assert probs([[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]]) == pytest.approx(0.815,
                                                                                  abs=1e-3)
        assert probs([[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]], sample_weight=[1, 0]) == \
            pytest.approx(0.458, abs=1e-3)


def test_keras_classes_word_errors_in_keras_terms():
    with pytest.raises(ValueError, match="y_true"):
        fx.CategoricalCrossentropy()([[0, 1]], Y_PRED)
    with pytest.raises(ValueError, match="reduction"):
        fx.CategoricalCrossentropy(reduction="average")
