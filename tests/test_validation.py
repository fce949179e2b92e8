"""Every bad input gets a clear exception naming the argument, the value and the fix."""

import numpy as np
import pytest

import fastxent as fx

X = np.random.default_rng(0).standard_normal((4, 3))
Y = np.eye(3)[[0, 1, 2, 0]]
T = np.array([0, 1, 2, 0])


def test_integer_logits_are_a_type_error():
    with pytest.raises(TypeError, match=r"logits has dtype int64 \(integer\).*astype\(np.float32\)"):
        fx.softmax_cross_entropy_with_logits(Y, np.ones((4, 3), int))
    for bad in [np.ones((2, 2), bool), np.ones((2, 2), complex), np.array([["a", "b"]])]:
        with pytest.raises(TypeError, match="logits has dtype"):
            fx.sparse_softmax_cross_entropy_with_logits([0, 1][:len(bad)], bad)


def test_float16_logits_are_computed_in_float32():
    got = fx.softmax_cross_entropy_with_logits(Y, X.astype(np.float16))
    assert got.dtype == np.float32


def test_integer_labels_to_the_dense_function_point_to_sparse():
    with pytest.raises(ValueError, match=r"labels has shape \(4,\) but logits has shape \(4, 3\).*"
                                         r"sparse_softmax_cross_entropy_with_logits"):
        fx.softmax_cross_entropy_with_logits(T, X)


def test_one_hot_labels_to_the_sparse_function_point_to_dense():
    with pytest.raises(ValueError, match=r"shape of logits.*softmax_cross_entropy_with_logits"):
        fx.sparse_softmax_cross_entropy_with_logits(Y, X)


def test_integer_one_hot_labels_are_cast():
    np.testing.assert_allclose(fx.softmax_cross_entropy_with_logits(Y.astype(int), X),
                               fx.softmax_cross_entropy_with_logits(Y, X))


def test_trailing_size_one_label_axis_is_accepted():
    np.testing.assert_array_equal(fx.sparse_softmax_cross_entropy_with_logits(T[:, None], X),
                                  fx.sparse_softmax_cross_entropy_with_logits(T, X))


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"labels has shape \(4, 2\) but logits has shape \(4, 3\)"):
        fx.softmax_cross_entropy_with_logits(np.ones((4, 2)), X)
    with pytest.raises(ValueError, match=r"labels has shape \(5,\) but logits has shape \(4, 3\)"):
        fx.sparse_softmax_cross_entropy_with_logits(np.zeros(5, int), X)
    with pytest.raises(ValueError, match=r"labels has shape \(4, 2\) but logits has shape \(4, 3\)"):
        fx.sigmoid_cross_entropy_with_logits(np.ones((4, 2)), X)


def test_zero_d_and_zero_class_logits():
    with pytest.raises(ValueError, match="logits is a 0-d array"):
        fx.softmax_cross_entropy_with_logits(1.0, 1.0)
    with pytest.raises(ValueError, match=r"zero classes along axis 1"):
        fx.sparse_softmax_cross_entropy_with_logits(np.zeros(4, int), np.ones((4, 0)))


def test_labels_out_of_range_name_position_value_and_count(backend):
    labels = np.array([[0, 1], [7, -3]])
    x = np.zeros((2, 2, 3))
    with pytest.raises(ValueError, match=r"labels\[1, 0\] = 7 is not a class index: labels "
                                         r"must be in \[0, 3\).*\(2 bad labels in all\)"):
        fx.sparse_softmax_cross_entropy_with_logits(labels, x, backend=backend)
    loss = fx.SparseSoftmaxCrossEntropy(ignore_index=-3, backend=backend)
    with pytest.raises(ValueError, match=r"labels\[1, 0\] = 7 .*or equal ignore_index=-3 "
                                         r"\(1 bad label in all\)"):
        loss.loss_gradient(labels, x)
    with pytest.raises(ValueError, match=r"labels\[0\] = 3 is not a class index"):
        fx.SparseSoftmaxCrossEntropy(class_weight=[1, 2, 3], backend=backend).gradient(
            [3, 0, 0, 0], X)


def test_non_integer_float_labels_are_a_type_error():
    with pytest.raises(TypeError, match=r"labels\[1\] = 0.5 is not a whole number"):
        fx.sparse_softmax_cross_entropy_with_logits([0.0, 0.5, 1.0, 2.0], X)
    np.testing.assert_array_equal(
        fx.sparse_softmax_cross_entropy_with_logits(T.astype(float), X),
        fx.sparse_softmax_cross_entropy_with_logits(T, X))


def test_weights_of_the_wrong_length():
    with pytest.raises(ValueError, match=r"class_weight has shape \(2,\) but logits have 3 "
                                         r"classes.*shape \(3,\)"):
        fx.softmax_cross_entropy_with_logits(Y, X, class_weight=[1, 2])
    with pytest.raises(ValueError, match=r"pos_weight has shape \(4,\) but logits have 3"):
        fx.sigmoid_cross_entropy_with_logits(Y, X, pos_weight=[1, 2, 3, 4])
    with pytest.raises(ValueError, match=r"class_weight\[1\] = nan; weights must be finite"):
        fx.softmax_cross_entropy_with_logits(Y, X, class_weight=[1, np.nan, 1])
    with pytest.raises(ValueError, match="sample_weight has shape \\(3,\\), which does not"):
        fx.softmax_cross_entropy_with_logits(Y, X, sample_weight=[1, 2, 3])
    with pytest.raises(ValueError, match="sample_weight holds a non-finite value"):
        fx.softmax_cross_entropy_with_logits(Y, X, sample_weight=[1, np.nan, 1, 1])


@pytest.mark.parametrize("value", [-0.1, 1.5, np.nan])
def test_label_smoothing_outside_unit_interval(value):
    with pytest.raises(ValueError, match=r"label_smoothing=.* is outside \[0, 1\]"):
        fx.softmax_cross_entropy_with_logits(Y, X, label_smoothing=value)
    with pytest.raises(ValueError, match=r"label_smoothing=.* is outside \[0, 1\]"):
        fx.SigmoidCrossEntropy(label_smoothing=value)


def test_unknown_reduction_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"reduction='avg' is not one of 'none', 'sum', 'mean'"):
        fx.softmax_cross_entropy_with_logits(Y, X, reduction="avg")
    with pytest.raises(ValueError, match=r"reduction='avg'"):
        fx.SparseSoftmaxCrossEntropy(reduction="avg")


def test_bad_out_buffers():
    loss = fx.SoftmaxCrossEntropy()
    with pytest.raises(ValueError, match=r"gradient_out has shape \(3, 4\); expected \(4, 3\)"):
        loss.gradient(Y, X, gradient_out=np.empty((3, 4)))
    with pytest.raises(ValueError, match=r"out has dtype int64; expected float64.*float32 and "
                                         r"float64 buffers are both accepted"):
        loss.gradient(Y, X, gradient_out=np.empty((4, 3), np.int64))
    with pytest.raises(ValueError, match=r"out has dtype float32; expected float64"):
        fx.softmax(X, out=np.empty((4, 3), np.float32))
    ro = np.empty((4, 3))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="gradient_out is read-only"):
        loss.gradient(Y, X, gradient_out=ro)
    with pytest.raises(ValueError, match=r"gradient_out has shape"):
        loss.loss_gradient(Y, X, gradient_out=np.empty(3))
    with pytest.raises(TypeError, match="gradient_out must be a numpy array"):
        loss.gradient(Y, X, gradient_out=[[0.0] * 3] * 4)


def test_bad_thread_counts():
    with pytest.raises(ValueError, match=r"n_threads=0 is not a thread count.*-1 for all"):
        fx.softmax_cross_entropy_with_logits(Y, X, n_threads=0)
    with pytest.raises(ValueError, match=r"n_threads=-2"):
        fx.SoftmaxCrossEntropy(n_threads=-2)
    with pytest.raises(TypeError, match="n_threads must be an int"):
        fx.set_num_threads(1.5)


def test_bad_axis_and_grad_loss():
    with pytest.raises(ValueError, match=r"axis=2 is out of range for logits with 2 dimensions"):
        fx.softmax_cross_entropy_with_logits(Y, X, axis=2)
    with pytest.raises(ValueError, match=r"grad_loss has shape \(4,\), but reduction='mean'"):
        fx.SoftmaxCrossEntropy().gradient(Y, X, grad_loss=np.ones(4))


def test_unknown_and_unavailable_backends():
    with pytest.raises(ValueError, match=r"backend='torch' is not a known backend; use one of "
                                         r"'auto', 'numpy', 'numba', 'cython'"):
        fx.softmax_cross_entropy_with_logits(Y, X, backend="torch")


def test_z_loss_and_ignore_index_types():
    with pytest.raises(ValueError, match=r"z_loss=-1.0 must be finite and >= 0"):
        fx.softmax_cross_entropy_with_logits(Y, X, z_loss=-1)
    with pytest.raises(TypeError, match="ignore_index must be an int or None"):
        fx.SparseSoftmaxCrossEntropy(ignore_index=1.5)


def test_labels_of_a_non_numeric_dtype():
    with pytest.raises(TypeError, match="labels has dtype <U1"):
        fx.softmax_cross_entropy_with_logits(np.array([["a"] * 3] * 4), X)
