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
