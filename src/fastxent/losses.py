"""Public losses: TensorFlow-style functions, Keras-style functions and loss objects.

Every entry point validates once (``_validation``), runs one kernel through the dispatcher
(``_core``) and returns arrays in the caller's layout.
"""

import numpy as np

from . import _core, _dispatch, _threads
from . import _validation as V

_KERAS_EPSILON = 1e-7  # keras.backend.epsilon(): the clip used when from_logits=False

_SOFTMAX_NOTES = """
    Per row, with ``x`` the logits, ``lse = logsumexp(x)``, ``p = softmax(x)`` and the
    targets ``wy = class_weight * ((1 - eps) * y + eps / C)``::

        loss      = sum_c wy_c * (lse - x_c)              (+ z_loss * lse**2)
        d loss/dx = (sum_c wy_c) * p - wy                 (+ 2 z_loss lse p)
        d loss/dy = (1 - eps) * class_weight * (lse - x)  (= -log_softmax(x) unweighted)

    computed with a log-sum-exp in one pass, never softmax-then-log. The gradient is right
    even when soft labels do not sum to 1. A class with target 0 and logit ``-inf``
    contributes exactly 0. ``sample_weight`` multiplies each example's loss;
    ``reduction="mean"`` divides by the total weight of the examples that count (sample
    weight, times the class weight of the target for integer labels, as PyTorch; ignored
    examples count 0); a mean over nothing is 0 with a zero gradient (PyTorch gives NaN).
"""


def _doc(notes):
    def deco(f):
        f.__doc__ = f.__doc__.replace("    {notes}\n", notes)
        return f
    return deco


# ------------------------------------------------------------------------ TensorFlow style

@_doc(_SOFTMAX_NOTES)
def softmax_cross_entropy_with_logits(labels, logits, axis=-1, *, label_smoothing=0.0,
                                      class_weight=None, sample_weight=None, z_loss=0.0,
                                      reduction="none", backend=None, n_threads=None):
    """Softmax cross-entropy between dense (one-hot or soft) labels and logits.

    Parameters
    ----------
    labels : array_like, shape of ``logits``
        Target distribution per example (one-hot, soft, or any non-negative weights; integer
        one-hot labels are cast to the logits' dtype).
    logits : array_like of float, shape (..., C, ...)
        Unnormalised log-probabilities. float32 and float64 keep their dtype; float16 is
        computed and returned in float32.
    axis : int, default -1
        The class axis.
    label_smoothing : float in [0, 1], default 0
        ``y' = (1 - eps) y + eps / C`` (PyTorch, Keras, optax).
    class_weight : array_like, shape (C,), optional
        Per-class weights (PyTorch ``weight``).
    sample_weight : array_like, optional
        Per-example weights, broadcast to the per-example loss shape.
    z_loss : float >= 0, default 0
        Adds ``z_loss * lse**2`` per example (PaLM).
    reduction : {"none", "sum", "mean"}, default "none"
        ``"none"`` returns one loss per example (logits' shape without ``axis``).
    backend : {None, "auto", "numpy", "numba", "cython"}, optional
        Kernel backend; None uses the configured default (see :func:`fastxent.explain`).
    n_threads : int, optional
        Threads for this call; None uses :func:`fastxent.get_num_threads`, -1 all cores.

    Returns
    -------
    loss : ndarray or scalar
        Per-example losses, or their sum / weighted mean.

    Notes
    -----
    {notes}

    Examples
    --------
    >>> import numpy as np, fastxent as fx
    >>> fx.softmax_cross_entropy_with_logits([[1.0, 0.0, 0.0]], [[2.0, 1.0, 0.1]])
    array([0.41703002])
    """
    p = V.softmax_problem(labels, logits, axis, False, label_smoothing=label_smoothing,
                          class_weight=class_weight, z_loss=z_loss)
    return _core.loss(p, reduction, sample_weight, None, backend, n_threads)


@_doc(_SOFTMAX_NOTES)
def sparse_softmax_cross_entropy_with_logits(labels, logits, axis=-1, *, ignore_index=None,
                                             label_smoothing=0.0, class_weight=None,
                                             sample_weight=None, z_loss=0.0, reduction="none",
                                             backend=None, n_threads=None):
    """Softmax cross-entropy between integer class labels and logits.

    Parameters
    ----------
    labels : array_like of int, shape of ``logits`` without ``axis``
        Class indices in ``[0, C)``; a trailing size-1 axis is accepted. Float arrays holding
        whole numbers are accepted.
    logits : array_like of float
        Unnormalised log-probabilities with the classes along ``axis``.
    axis : int, default -1
        The class axis.
    ignore_index : int, optional
        Examples with this label contribute 0 to loss and gradient and are left out of the
        mean (PyTorch ``ignore_index``, Keras ``ignore_class``).
    label_smoothing, class_weight, sample_weight, z_loss, reduction, backend, n_threads
        As in :func:`softmax_cross_entropy_with_logits`.

    Returns
    -------
    loss : ndarray or scalar

    Notes
    -----
    {notes}
    With integer labels ``y`` is the one-hot row of the label.

    Examples
    --------
    >>> import fastxent as fx
    >>> fx.sparse_softmax_cross_entropy_with_logits([0], [[2.0, 1.0, 0.1]])
    array([0.41703002])
    """
    p = V.softmax_problem(labels, logits, axis, True, label_smoothing=label_smoothing,
                          class_weight=class_weight, z_loss=z_loss, ignore_index=ignore_index)
    return _core.loss(p, reduction, sample_weight, None, backend, n_threads)


def sigmoid_cross_entropy_with_logits(labels, logits, *, pos_weight=None, label_smoothing=0.0,
                                      sample_weight=None, reduction="none", backend=None,
                                      n_threads=None):
    """Elementwise sigmoid cross-entropy (multi-label), as TensorFlow's.

    Parameters
    ----------
    labels : array_like, shape of ``logits``
        Targets in [0, 1] per element.
    logits : array_like of float
        Unnormalised log-odds.
    pos_weight : float or array_like of shape (C,), optional
        Weight of the positive term per class (last axis), as TensorFlow's
        ``weighted_cross_entropy_with_logits`` and PyTorch's ``BCEWithLogitsLoss``.
    label_smoothing : float in [0, 1], default 0
        ``z' = (1 - eps) z + eps / 2`` (Keras).
    sample_weight : array_like, optional
        Per example (matching the leading dimensions of ``logits``, as Keras) or per element
        (broadcasting to ``logits``).
    reduction : {"none", "sum", "mean"}, default "none"
        ``"none"`` is elementwise; ``"mean"`` averages over every element (weighted).
    backend, n_threads
        As in :func:`softmax_cross_entropy_with_logits`.

    Returns
    -------
    loss : ndarray or scalar

    Notes
    -----
    With ``q = pos_weight`` and ``sp(x) = log(1 + exp(x))`` computed stably::

        loss      = (1 - z) sp(x) + q z sp(-x)
                  = max(x, 0) - x z + log1p(exp(-|x|))          (q = 1)
        d loss/dx = (1 - z) sigmoid(x) - q z sigmoid(-x)
        d loss/dz = -x + (q - 1) sp(-x)

    Terms with a zero coefficient are skipped, so ``x = -inf`` with ``z = 0`` gives exactly 0.

    Examples
    --------
    >>> import fastxent as fx
    >>> fx.sigmoid_cross_entropy_with_logits([[1.0, 0.0]], [[0.0, 0.0]])
    array([[0.69314718, 0.69314718]])
    """
    p = V.sigmoid_problem(labels, logits, label_smoothing=label_smoothing,
                          pos_weight=pos_weight)
    return _core.loss(p, reduction, sample_weight, None, backend, n_threads)


def weighted_cross_entropy_with_logits(labels, logits, pos_weight):
    """TensorFlow's ``tf.nn.weighted_cross_entropy_with_logits``: sigmoid cross-entropy with
    the positive term weighted by ``pos_weight`` (a scalar or one value per class).

    Examples
    --------
    >>> import fastxent as fx
    >>> fx.weighted_cross_entropy_with_logits([[1.0]], [[0.0]], pos_weight=2.0)
    array([[1.38629436]])
    """
    return sigmoid_cross_entropy_with_logits(labels, logits, pos_weight=pos_weight)


def logsumexp(logits, axis=-1, *, out=None, backend=None, n_threads=None):
    """``log(sum(exp(logits), axis))`` computed stably; shape of ``logits`` without ``axis``.

    Examples
    --------
    >>> import fastxent as fx
    >>> fx.logsumexp([[1000.0, 1000.0]])
    array([1000.69314718])
    """
    return _core.utility("logsumexp", logits, axis, out, backend, n_threads)


def log_softmax(logits, axis=-1, *, out=None, backend=None, n_threads=None):
    """``logits - logsumexp(logits, axis)``; ``out`` may be ``logits`` (in place).

    Examples
    --------
    >>> import fastxent as fx
    >>> fx.log_softmax([[0.0, 0.0]])
    array([[-0.69314718, -0.69314718]])
    """
    return _core.utility("log_softmax", logits, axis, out, backend, n_threads)


def softmax(logits, axis=-1, *, out=None, backend=None, n_threads=None):
    """``exp(logits - logsumexp(logits, axis))``; ``out`` may be ``logits`` (in place).

    Examples
    --------
    >>> import fastxent as fx
    >>> fx.softmax([[0.0, 0.0]])
    array([[0.5, 0.5]])
    """
    return _core.utility("softmax", logits, axis, out, backend, n_threads)


# ----------------------------------------------------------------------------- Keras style

def _probabilities(y_pred, axis, name="y_pred"):
    """Keras' treatment of probabilities: renormalise along ``axis`` and clip to [eps, 1-eps]."""
    x, axis = V.check_logits(y_pred, axis, name)
    with np.errstate(invalid="ignore", divide="ignore"):
        probs = x / np.sum(x, axis=axis, keepdims=True)
    return np.clip(probs, _KERAS_EPSILON, 1 - _KERAS_EPSILON), axis


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """Keras ``categorical_crossentropy``: per-example loss for one-hot / soft ``y_true``.

    With ``from_logits=True`` this is :func:`softmax_cross_entropy_with_logits`. Otherwise
    ``y_pred`` are probabilities, renormalised along ``axis`` and clipped to
    ``[1e-7, 1 - 1e-7]`` as Keras does. Label smoothing: ``y (1 - eps) + eps / C``.

    Examples
    --------
    >>> import fastxent as fx
    >>> fx.categorical_crossentropy([[0, 1, 0]], [[0.05, 0.95, 0.0]]).round(4)
    array([0.0513])
    """
    if from_logits:
        return softmax_cross_entropy_with_logits(y_true, y_pred, axis,
                                                 label_smoothing=label_smoothing)
    probs, axis = _probabilities(y_pred, axis)
    y = V.dense_labels(y_true, probs, axis, "y_true")
    eps = V.check_fraction(label_smoothing, "label_smoothing")
    logp = V.to_rows(np.log(probs), axis)
    y = (1 - eps) * y + eps / y.shape[1] if eps else y
    return -np.sum(y * logp, axis=1).reshape(V.lead_shape(probs.shape, axis))


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, ignore_class=None,
                                    axis=-1):
    """Keras ``sparse_categorical_crossentropy``: per-example loss for integer ``y_true``.

    ``ignore_class`` examples get loss 0 (Keras). With ``from_logits=False`` the
    probabilities are renormalised and clipped to ``[1e-7, 1 - 1e-7]`` as Keras does.

    Examples
    --------
    >>> import fastxent as fx
    >>> fx.sparse_categorical_crossentropy([1, 2], [[0.05, 0.95, 0], [0.1, 0.8, 0.1]]).round(4)
    array([0.0513, 2.3026])
    """
    if from_logits:
        return sparse_softmax_cross_entropy_with_logits(y_true, y_pred, axis,
                                                        ignore_index=ignore_class)
    probs, axis = _probabilities(y_pred, axis)
    p = V.softmax_problem(y_true, probs, axis, True, ignore_index=ignore_class)
    t = p.labels
    valid = (t >= 0) & (t < p.n_classes)
    ignored = (t == p.ignore_index) if p.has_ignore else np.zeros_like(valid)
    n_bad = int(np.count_nonzero(~valid & ~ignored))
    if n_bad:
        V.raise_bad_labels(p.raw_labels, p.n_classes, p.has_ignore, p.ignore_index, n_bad)
    rows = np.flatnonzero(valid & ~ignored)
    losses = np.zeros(p.n_rows, p.dtype)
    losses[rows] = -np.log(p.x[rows, t[rows]])
    return losses.reshape(p.lead)


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """Keras ``binary_crossentropy``: elementwise sigmoid cross-entropy, mean over ``axis``.

    With ``from_logits=False``, ``y_pred`` are probabilities clipped to ``[1e-7, 1 - 1e-7]``
    (Keras). Label smoothing: ``y (1 - eps) + eps / 2``.

    Examples
    --------
    >>> import fastxent as fx
    >>> fx.binary_crossentropy([[0.0, 1.0]], [[0.0, 0.0]], from_logits=True)
    array([0.69314718])
    """
    x = V.as_float_array(y_pred, "y_pred")
    if x.ndim == 0:
        raise ValueError("y_pred is a 0-d array; pass at least one axis to average over")
    axis = V.normalize_axis(axis, x.ndim)
    eps = V.check_fraction(label_smoothing, "label_smoothing")
    if from_logits:
        elementwise = sigmoid_cross_entropy_with_logits(y_true, x, label_smoothing=eps)
    else:
        y = np.asarray(y_true)
        if y.shape != x.shape:
            raise ValueError(f"y_true has shape {y.shape} but y_pred has shape {x.shape}; "
                             f"they must match")
        y = y.astype(x.dtype)
        y = (1 - eps) * y + eps / 2 if eps else y
        probs = np.clip(x, _KERAS_EPSILON, 1 - _KERAS_EPSILON)
        elementwise = -(y * np.log(probs) + (1 - y) * np.log1p(-probs))
    return np.mean(elementwise, axis=axis)


# ---------------------------------------------------------------------------- loss objects

class _Loss:
    """Shared machinery of the loss objects (scikit-learn ``_loss``-style protocol)."""

    _sparse = False
    _sigmoid = False

    def __init__(self, *, reduction="mean", backend=None, n_threads=None):
        self.reduction = V.check_reduction(reduction)
        self.backend = _dispatch.check_name(backend)
        self.n_threads = _threads.check(n_threads)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"{type(self).__name__}({args})"

    def _problem(self, labels, logits):
        raise NotImplementedError

    def loss(self, labels, logits, sample_weight=None, out=None, lse_out=None):
        """The loss (per example for ``reduction="none"``, else a scalar).

        ``out`` receives it (an array of the per-example shape, or 0-d for a reduced loss).
        ``lse_out`` (softmax only) receives the per-example logsumexp for a later
        one-pass ``gradient(..., lse=lse_out)``.
        """
        return _core.loss(self._problem(labels, logits), self.reduction, sample_weight, out,
                          self.backend, self.n_threads, lse_out)

    __call__ = loss

    def gradient(self, labels, logits, sample_weight=None, grad_loss=None, out=None, lse=None):
        """d loss / d logits, in logits' shape.

        ``grad_loss`` is the upstream gradient (a scalar for a reduced loss, per example for
        ``"none"``). ``out`` may be ``logits`` itself: the gradient then overwrites the
        logits without any extra N x C memory. ``lse`` (softmax only) is a saved logsumexp
        from :meth:`loss` (``lse_out``) that turns this into a single pass.
        """
        return _core.gradient(self._problem(labels, logits), self.reduction, sample_weight,
                              grad_loss, out, self.backend, self.n_threads, lse)

    def loss_gradient(self, labels, logits, sample_weight=None, grad_loss=None, loss_out=None,
                      grad_out=None):
        """``(loss, gradient)`` in one fused pass over the data (same values as both calls)."""
        return _core.loss_gradient(self._problem(labels, logits), self.reduction,
                                   sample_weight, grad_loss, loss_out, grad_out, self.backend,
                                   self.n_threads)


    def gradient_hessian(self, labels, logits, sample_weight=None, gradient_out=None,
                         hessian_out=None):
        """``(gradient, hessian)``: d loss / d logits and the diagonal of the Hessian.

        scikit-learn's ``BaseLoss.gradient_hessian``: ``hessian`` has logits' shape and holds
        ``d^2 loss / d logits^2`` per element, scaled like the gradient (sample weight, over
        the total weight for ``"mean"``). Softmax, per row with ``S = sum(wy)``:
        ``(S + 2 z lse) p (1 - p) + 2 z p^2``; sigmoid: ``(1 - y' + q y') s (1 - s)`` with
        ``s = sigmoid(logits)``, ``y'`` the smoothed label and ``q`` the pos_weight. Ignored
        rows get zeros. Either buffer (not both) may be ``logits`` itself. The full softmax
        Hessian acts through :meth:`hessp`.

        Examples
        --------
        >>> import numpy as np, fastxent as fx
        >>> g, h = fx.SparseSoftmaxCrossEntropy(reduction="sum").gradient_hessian(
        ...     [0], np.array([[0.0, 0.0]]))
        >>> h
        array([[0.25, 0.25]])
        """
        from ._hessian import gradient_hessian  # _hessian imports this module
        return gradient_hessian(self, labels, logits, sample_weight, gradient_out, hessian_out)


class _SoftmaxLoss(_Loss):

    def __init__(self, *, axis=-1, label_smoothing=0.0, class_weight=None, z_loss=0.0,
                 reduction="mean", backend=None, n_threads=None):
        super().__init__(reduction=reduction, backend=backend, n_threads=n_threads)
        self.axis = axis
        self.label_smoothing = V.check_fraction(label_smoothing, "label_smoothing")
        self.class_weight = class_weight
        self.z_loss = V.check_nonneg(z_loss, "z_loss")

    def hessp(self, labels, logits, v, sample_weight=None, out=None):
        """Hessian-vector product of the (reduced) loss w.r.t. logits, for Newton / CG.

        Per row ``(S + 2 z lse) (p*v - p (p.v)) + 2 z p (p.v)`` with ``S = sum(wy)``, scaled
        like the gradient (for ``"none"``: the Hessian of the sum of per-example losses).
        """
        return _core.hessp(self._problem(labels, logits), self.reduction, sample_weight, v,
                           out, self.backend, self.n_threads)


class SoftmaxCrossEntropy(_SoftmaxLoss):
    """Softmax cross-entropy with dense (one-hot or soft) labels, as a loss object.

    See :func:`softmax_cross_entropy_with_logits` for the maths and the arguments.

    Examples
    --------
    >>> import numpy as np, fastxent as fx
    >>> loss = fx.SoftmaxCrossEntropy()
    >>> logits = np.array([[2.0, 1.0, 0.1]]); labels = np.array([[1.0, 0.0, 0.0]])
    >>> value, grad = loss.loss_gradient(labels, logits)
    >>> round(float(value), 6), grad.round(4)
    (0.41703, array([[-0.341 ,  0.2424,  0.0986]]))
    """

    def _problem(self, labels, logits):
        return V.softmax_problem(labels, logits, self.axis, False,
                                 label_smoothing=self.label_smoothing,
                                 class_weight=self.class_weight, z_loss=self.z_loss)

    def labels_gradient(self, labels, logits, sample_weight=None, grad_loss=None, out=None):
        """d loss / d labels: ``(1 - eps) * class_weight * -log_softmax(logits)``, scaled.

        TensorFlow 2 backpropagates into labels; wrap labels in ``stop_gradient`` there (or
        do not call this) to keep them constant.
        """
        return _core.labels_gradient(self._problem(labels, logits), self.reduction,
                                     sample_weight, grad_loss, out, self.backend,
                                     self.n_threads)


class SparseSoftmaxCrossEntropy(_SoftmaxLoss):
    """Softmax cross-entropy with integer labels, as a loss object.

    See :func:`sparse_softmax_cross_entropy_with_logits` for the maths and the arguments.

    Examples
    --------
    >>> import numpy as np, fastxent as fx
    >>> loss = fx.SparseSoftmaxCrossEntropy(ignore_index=-100)
    >>> round(float(loss([0, -100], [[2.0, 1.0, 0.1], [5.0, 0.0, 0.0]])), 6)  # row 2 ignored
    0.41703
    """

    def __init__(self, *, axis=-1, ignore_index=None, label_smoothing=0.0, class_weight=None,
                 z_loss=0.0, reduction="mean", backend=None, n_threads=None):
        super().__init__(axis=axis, label_smoothing=label_smoothing, class_weight=class_weight,
                         z_loss=z_loss, reduction=reduction, backend=backend,
                         n_threads=n_threads)
        V.check_ignore_index(ignore_index)
        self.ignore_index = ignore_index

    def _problem(self, labels, logits):
        return V.softmax_problem(labels, logits, self.axis, True,
                                 label_smoothing=self.label_smoothing,
                                 class_weight=self.class_weight, z_loss=self.z_loss,
                                 ignore_index=self.ignore_index)


class SigmoidCrossEntropy(_Loss):
    """Elementwise sigmoid cross-entropy (multi-label), as a loss object.

    See :func:`sigmoid_cross_entropy_with_logits` for the maths and the arguments.

    Examples
    --------
    >>> import fastxent as fx
    >>> fx.SigmoidCrossEntropy().gradient([[1.0, 0.0]], [[0.0, 0.0]])
    array([[-0.25,  0.25]])
    """

    def __init__(self, *, pos_weight=None, label_smoothing=0.0, reduction="mean", backend=None,
                 n_threads=None):
        super().__init__(reduction=reduction, backend=backend, n_threads=n_threads)
        self.pos_weight = pos_weight
        self.label_smoothing = V.check_fraction(label_smoothing, "label_smoothing")

    def _problem(self, labels, logits):
        return V.sigmoid_problem(labels, logits, label_smoothing=self.label_smoothing,
                                 pos_weight=self.pos_weight)

    def labels_gradient(self, labels, logits, sample_weight=None, grad_loss=None, out=None):
        """d loss / d labels: ``(1 - eps) (-x + (pos_weight - 1) softplus(-x))``, scaled."""
        return _core.labels_gradient(self._problem(labels, logits), self.reduction,
                                     sample_weight, grad_loss, out, self.backend,
                                     self.n_threads)
