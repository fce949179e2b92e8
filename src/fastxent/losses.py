"""Public losses: TensorFlow-style functions and the loss objects.

Every entry point builds one problem at the boundary (``_boundary``: all checks) and runs one
engine operation (``_engine``); results come back in the caller's layout. Keras-style
functions and classes are in :mod:`fastxent.keras`.
"""

from . import _boundary as B
from . import _engine, _plan, _threads

_SOFTMAX_NOTES = """
    Per row, with ``x`` the logits (after ``logit_softcap``: ``c tanh(x / c)``),
    ``lse = logsumexp(x)``, ``p = softmax(x)`` and the targets
    ``wy = class_weight * ((1 - eps) * y + eps / C)``::

        loss      = sum_c wy_c * (lse - x_c)              (+ z_loss * lse**2)
        d loss/dx = (sum_c wy_c) * p - wy                 (+ 2 z_loss lse p)
        d loss/dy = (1 - eps) * class_weight * (lse - x)  (= -log_softmax(x) unweighted)

    computed with a log-sum-exp in one pass, never softmax-then-log, and without
    cancellation in confident rows (``lse = max + log1p(sum of the others' exp)``: a loss
    of 5.6e-17 stays 5.6e-17). The gradient is right even when soft labels do not sum to 1.
    A class with target 0 and logit ``-inf`` contributes exactly 0. ``sample_weight``
    multiplies each example's loss; ``reduction="mean"`` divides by the total weight of the
    examples that count (sample weight, times the class weight of the target for integer
    labels, as PyTorch; ignored examples count 0). With class or sample weights of either
    sign (accepted, as PyTorch) that total can be near 0 or negative. A mean over nothing is
    0 with a zero gradient (PyTorch gives NaN). Weighted means side by side: fastxent and
    PyTorch's cross_entropy ``sum(w l) / sum(w)``; Keras ``sum(w l) / N``.
"""

_COMMON_PARAMS = """
    check : {None, "off", "warn", "raise"}
        Diagnostics of the values (logits that look like probabilities, NaN/inf, labels that
        are not a distribution, a mean over nothing); None uses ``fastxent.set_check`` /
        ``FASTXENT_CHECK`` (default "off"). See :class:`fastxent.InputWarning`.
    backend : {None, "auto", "numpy", "numba", "cython"}, optional
        Kernel backend; None uses the configured default (see :func:`fastxent.explain`).
    n_threads : int, optional
        Threads for this call; None uses :func:`fastxent.get_num_threads`, -1 all cores.
    name : str, optional
        Accepted and ignored (TensorFlow's signature).
"""


def _doc(notes):
    def deco(f):
        f.__doc__ = f.__doc__.replace("    {notes}\n", notes).replace("    {common}\n",
                                                                        _COMMON_PARAMS)
        return f
    return deco


# ------------------------------------------------------------------------ TensorFlow style

@_doc(_SOFTMAX_NOTES)
def softmax_cross_entropy_with_logits(labels, logits, axis=-1, *, label_smoothing=0.0,
                                      class_weight=None, sample_weight=None, z_loss=0.0,
                                      logit_softcap=None, reduction="none", check=None,
                                      backend=None, n_threads=None, name=None):
    """Softmax cross-entropy between dense (one-hot or soft) labels and logits.

    Parameters
    ----------
    labels : array_like, logits' shape or broadcastable to it
        Target distribution per example (one-hot, soft, or any weights; integer one-hot
        labels are cast to the logits' dtype). One row broadcast to the whole batch is read
        without a copy.
    logits : array_like of float, shape (..., C, ...)
        Unnormalised log-probabilities. float32 and float64 keep their dtype; float16 and
        bfloat16 are computed and returned in float32.
    axis : int, default -1
        The class axis.
    label_smoothing : float in [0, 1], default 0
        ``y' = (1 - eps) y + eps / C`` (PyTorch, Keras, optax).
    class_weight : array_like, shape (C,), optional
        Per-class weights (PyTorch ``weight``), finite, of any sign.
    sample_weight : array_like, optional
        Per-example weights, broadcast to the per-example loss shape ((N, 1) accepted).
    z_loss : float >= 0, default 0
        Adds ``z_loss * lse**2`` per example (PaLM).
    logit_softcap : float > 0, optional
        Gemma 2's ``c * tanh(logits / c)`` applied before the softmax (and its chain rule in
        the gradient).
    reduction : {"none", "sum", "mean"}, default "none"
        ``"none"`` returns one loss per example (logits' shape without ``axis``).
    {common}

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
    opts = B.Options(label_smoothing, class_weight, z_loss, logit_softcap, None, reduction, check,
                     backend, n_threads)
    return _engine.loss(B.softmax_problem("dense", labels, logits, axis, opts,
                                          sample_weight=sample_weight))


#: TensorFlow 2's name (``tf.nn.softmax_cross_entropy_with_logits`` is the v2 op).
softmax_cross_entropy_with_logits_v2 = softmax_cross_entropy_with_logits


@_doc(_SOFTMAX_NOTES)
def sparse_softmax_cross_entropy_with_logits(labels, logits, axis=-1, *, ignore_index=None,
                                             label_smoothing=0.0, class_weight=None,
                                             sample_weight=None, z_loss=0.0,
                                             logit_softcap=None, reduction="none", check=None,
                                             backend=None, n_threads=None, name=None):
    """Softmax cross-entropy between integer class labels and logits.

    Parameters
    ----------
    labels : array_like of int, logits' shape without ``axis``
        Class indices in ``[0, C)``; a trailing size-1 axis, or a size-1 axis in place of
        the class axis, is accepted. Float arrays holding whole numbers are accepted.
    logits : array_like of float
        Unnormalised log-probabilities with the classes along ``axis``.
    axis : int, default -1
        The class axis.
    ignore_index : int, optional
        Examples with this label contribute 0 to loss and gradient and are left out of the
        mean (PyTorch ``ignore_index``, Keras ``ignore_class``).
    label_smoothing, class_weight, sample_weight, z_loss, logit_softcap, reduction
        As in :func:`softmax_cross_entropy_with_logits`.
    {common}

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
    opts = B.Options(label_smoothing, class_weight, z_loss, logit_softcap, ignore_index,
                     reduction, check, backend, n_threads)
    return _engine.loss(B.softmax_problem("integer", labels, logits, axis, opts,
                                          sample_weight=sample_weight))


@_doc("")
def sigmoid_cross_entropy_with_logits(labels, logits, *, pos_weight=None, label_smoothing=0.0,
                                      sample_weight=None, reduction="none", check=None,
                                      backend=None, n_threads=None, name=None):
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
        ``"none"`` is elementwise; ``"mean"`` averages over every element, weighted
        (``sum(w l) / sum(w)``; PyTorch's BCE gives ``mean(w l)``, Keras ``sum(w l) / N``).
    {common}

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
    opts = B.Options(label_smoothing, reduction=reduction, check=check, backend=backend,
                     n_threads=n_threads, pos_weight=pos_weight)
    return _engine.loss(B.sigmoid_problem(labels, logits, opts, sample_weight=sample_weight))


def weighted_cross_entropy_with_logits(labels, logits, pos_weight, name=None):
    """TensorFlow's ``tf.nn.weighted_cross_entropy_with_logits``: sigmoid cross-entropy with
    the positive term weighted by ``pos_weight`` (a scalar or one value per class).

    Parameters
    ----------
    labels, logits : array_like
        As for :func:`sigmoid_cross_entropy_with_logits`.
    pos_weight : float or array_like of shape (C,)
        Weight of the positive term.
    name : str, optional
        Accepted and ignored (TensorFlow's signature).

    Returns
    -------
    loss : ndarray, logits' shape

    Notes
    -----
    ``loss = (1 - z) sp(x) + pos_weight z sp(-x)`` with ``sp(x) = log(1 + exp(x))``.

    Examples
    --------
    >>> import fastxent as fx
    >>> fx.weighted_cross_entropy_with_logits([[1.0]], [[0.0]], pos_weight=2.0)
    array([[1.38629436]])
    """
    return sigmoid_cross_entropy_with_logits(labels, logits, pos_weight=pos_weight)


def logsumexp(logits, axis=None, keepdims=False, *, out=None, backend=None, n_threads=None,
              name=None):
    """``log(sum(exp(logits)))`` over ``axis``, computed stably (``tf.reduce_logsumexp``).

    Parameters
    ----------
    logits : array_like of float
        The values.
    axis : None, int or tuple of ints, default None
        The axes to reduce; None reduces every axis (TensorFlow's default).
    keepdims : bool, default False
        Keep the reduced axes with length 1.
    out : ndarray, optional
        Buffer of the result's shape and dtype.
    backend, n_threads, name
        As for :func:`softmax_cross_entropy_with_logits`.

    Returns
    -------
    lse : ndarray
        ``m + log1p(sum over the others of exp(x - m))`` with ``m`` the maximum; -inf where
        every value is -inf.

    Examples
    --------
    >>> import fastxent as fx
    >>> fx.logsumexp([[1000.0, 1000.0]], axis=-1)
    array([1000.69314718])
    >>> float(fx.logsumexp([[0.0, 0.0], [0.0, 0.0]]))
    1.3862943611198906
    """
    p = B.utility_problem(logits, axis, keepdims=bool(keepdims), out=out,
                          backend=_plan.check_name(backend), n_threads=_threads.check(n_threads),
                          reduce=True)
    return _engine.utility(p, "logsumexp")


def log_softmax(logits, axis=-1, *, out=None, backend=None, n_threads=None, name=None):
    """``logits - logsumexp(logits, axis)``, computed stably.

    Parameters
    ----------
    logits : array_like of float
        The values.
    axis : int, default -1
        The class axis.
    out : ndarray, optional
        Buffer of logits' shape; may be ``logits`` itself (in place).
    backend, n_threads, name
        As for :func:`softmax_cross_entropy_with_logits`.

    Returns
    -------
    ndarray, logits' shape

    Examples
    --------
    >>> import fastxent as fx
    >>> fx.log_softmax([[0.0, 0.0]])
    array([[-0.69314718, -0.69314718]])
    """
    p = B.utility_problem(logits, axis, out=out, backend=_plan.check_name(backend),
                          n_threads=_threads.check(n_threads))
    return _engine.utility(p, "log_softmax")


def softmax(logits, axis=-1, *, out=None, backend=None, n_threads=None, name=None):
    """``exp(logits - logsumexp(logits, axis))``.

    Parameters
    ----------
    logits : array_like of float
        The values.
    axis : int, default -1
        The class axis.
    out : ndarray, optional
        Buffer of logits' shape; may be ``logits`` itself (in place).
    backend, n_threads, name
        As for :func:`softmax_cross_entropy_with_logits`.

    Returns
    -------
    ndarray, logits' shape

    Examples
    --------
    >>> import fastxent as fx
    >>> fx.softmax([[0.0, 0.0]])
    array([[0.5, 0.5]])
    """
    p = B.utility_problem(logits, axis, out=out, backend=_plan.check_name(backend),
                          n_threads=_threads.check(n_threads))
    return _engine.utility(p, "softmax")


# ---------------------------------------------------------------------------- loss objects

class _Loss:
    """The scikit-learn-style protocol shared by the loss objects.

    Output buffers use scikit-learn's names (``loss_out``, ``gradient_out``,
    ``hessian_out``) plus ``lse_out``; each accepts float32 or float64 whatever the logits'
    dtype (computed in the logits' precision, stored in the buffer's, block by block: no
    N x C copy), as scikit-learn's loss objects do.
    """

    def __init__(self, **options):
        self._opts = B.Options(**options)
        self.reduction = self._opts.reduction
        self.check = self._opts.check
        self.backend = self._opts.backend
        self.n_threads = self._opts.n_threads

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if k[0] != "_")
        return f"{type(self).__name__}({args})"

    def _problem(self, labels, logits, **kw):
        raise NotImplementedError

    def loss(self, labels, logits, sample_weight=None, loss_out=None):
        """The loss: one value per example for ``reduction="none"``, else a scalar.

        Parameters
        ----------
        labels, logits : array_like
            As for the matching function.
        sample_weight : array_like, optional
            Per-example weights.
        loss_out : ndarray, optional
            Receives the result (the per-example shape, or 0-d for a reduced loss).

        Returns
        -------
        loss : ndarray or scalar
        """
        return _engine.loss(self._problem(labels, logits, sample_weight=sample_weight,
                                          loss_out=loss_out))

    def __call__(self, labels, logits, sample_weight=None, **outputs):
        """The same as :meth:`loss`."""
        return self.loss(labels, logits, sample_weight, **outputs)

    def gradient(self, labels, logits, sample_weight=None, grad_loss=None, gradient_out=None):
        """d loss / d logits, in logits' shape.

        Parameters
        ----------
        labels, logits, sample_weight
            As for :meth:`loss`.
        grad_loss : float or array_like, optional
            The upstream gradient: a scalar for a reduced loss, one value per example for
            ``"none"``.
        gradient_out : ndarray, optional
            Receives the gradient; may be ``logits`` itself (the gradient then overwrites
            the logits without any extra N x C memory).

        Returns
        -------
        gradient : ndarray, logits' shape
        """
        return _engine.gradient(self._problem(labels, logits, sample_weight=sample_weight,
                                              grad_loss=grad_loss, gradient_out=gradient_out))

    def loss_gradient(self, labels, logits, sample_weight=None, grad_loss=None, loss_out=None,
                      gradient_out=None):
        """``(loss, gradient)`` in one fused pass over the data (the values of both calls).

        Parameters
        ----------
        labels, logits, sample_weight, grad_loss, loss_out, gradient_out
            As for :meth:`loss` and :meth:`gradient`.

        Returns
        -------
        loss : ndarray or scalar
        gradient : ndarray, logits' shape
        """
        return _engine.loss_gradient(self._problem(
            labels, logits, sample_weight=sample_weight, grad_loss=grad_loss,
            loss_out=loss_out, gradient_out=gradient_out))

    def gradient_hessian(self, labels, logits, sample_weight=None, gradient_out=None,
                         hessian_out=None):
        """``(gradient, hessian)``: d loss / d logits and the diagonal of the Hessian.

        scikit-learn's ``BaseLoss.gradient_hessian``: ``hessian`` has logits' shape and holds
        ``d^2 loss / d logits^2`` per element, scaled like the gradient (sample weight, over
        the total weight for ``"mean"``). Either buffer (not both) may be ``logits``.

        Parameters
        ----------
        labels, logits, sample_weight, gradient_out
            As for :meth:`gradient`.
        hessian_out : ndarray, optional
            Receives the diagonal Hessian.

        Returns
        -------
        gradient, hessian : ndarray, logits' shape

        Notes
        -----
        Softmax, per row with ``S = sum(wy)``: ``(S + 2 z lse) p (1 - p) + 2 z p^2``; the full
        per-row Hessian ``(S + 2 z lse)(diag(p) - p p^T) + 2 z p p^T`` acts through
        :meth:`hessp`. Sigmoid: ``(1 - y' + q y') s (1 - s)``, ``s = sigmoid(logits)``.

        Examples
        --------
        >>> import numpy as np, fastxent as fx
        >>> g, h = fx.SparseSoftmaxCrossEntropy(reduction="sum").gradient_hessian(
        ...     [0], np.array([[0.0, 0.0]]))
        >>> h
        array([[0.25, 0.25]])
        """
        p = self._problem(labels, logits, sample_weight=sample_weight,
                          gradient_out=gradient_out, hessian_out=hessian_out, no_softcap=True)
        return _engine.gradient_hessian(p)


class _SoftmaxLoss(_Loss):

    _kind = None

    def __init__(self, *, axis=-1, label_smoothing=0.0, class_weight=None, z_loss=0.0,
                 logit_softcap=None, reduction="mean", check=None, backend=None,
                 n_threads=None, ignore_index=None):
        super().__init__(label_smoothing=label_smoothing, class_weight=class_weight,
                         z_loss=z_loss, logit_softcap=logit_softcap, ignore_index=ignore_index,
                         reduction=reduction, check=check, backend=backend, n_threads=n_threads)
        self.axis = B.check_int(axis, "axis")
        self.label_smoothing = self._opts.eps
        self.class_weight = class_weight
        self.z_loss = self._opts.z
        self.logit_softcap = logit_softcap if logit_softcap is None else self._opts.softcap

    def _problem(self, labels, logits, sample_weight=None, grad_loss=None, loss_out=None,
                 gradient_out=None, lse_out=None, hessian_out=None, no_softcap=False,
                 labels_optional=False):
        if no_softcap and self.logit_softcap is not None:
            raise ValueError("gradient_hessian and hessp do not support logit_softcap (the "
                             "Hessian of a softcapped loss adds tanh's second derivative); "
                             "use a loss without it for second-order solvers")
        return B.softmax_problem(self._kind, labels, logits, self.axis, self._opts,
                                 sample_weight, grad_loss, loss_out, gradient_out, lse_out,
                                 hessian_out, True, labels_optional)

    def loss(self, labels, logits, sample_weight=None, loss_out=None, lse_out=None):
        """The loss: one value per example for ``reduction="none"``, else a scalar.

        Parameters
        ----------
        labels, logits : array_like
            As for the matching function.
        sample_weight : array_like, optional
            Per-example weights.
        loss_out : ndarray, optional
            Receives the result (the per-example shape, or 0-d for a reduced loss).
        lse_out : ndarray, optional
            Receives the per-example logsumexp, for a later one-pass
            ``gradient(..., lse=lse_out)``.

        Returns
        -------
        loss : ndarray or scalar
        """
        return _engine.loss(self._problem(labels, logits, sample_weight=sample_weight,
                                          loss_out=loss_out, lse_out=lse_out))

    def gradient(self, labels, logits, sample_weight=None, grad_loss=None, gradient_out=None,
                 lse=None):
        """d loss / d logits, in logits' shape.

        Parameters
        ----------
        labels, logits, sample_weight
            As for :meth:`loss`.
        grad_loss : float or array_like, optional
            The upstream gradient: a scalar for a reduced loss, one value per example for
            ``"none"``.
        gradient_out : ndarray, optional
            Receives the gradient; may be ``logits`` itself (no extra N x C memory).
        lse : array_like, optional
            A logsumexp saved by :meth:`loss` (``lse_out``): the gradient then takes one pass
            over the logits. Any value ``lse_out`` produced is accepted (NaN and -inf rows
            give the same results as without ``lse``).

        Returns
        -------
        gradient : ndarray, logits' shape
        """
        p = self._problem(labels, logits, sample_weight=sample_weight, grad_loss=grad_loss,
                          gradient_out=gradient_out)
        saved = None if lse is None else B.saved_lse(lse, p.lead, p.x.dtype)
        return _engine.gradient(p, saved)

    def hessp(self, labels, logits, v, sample_weight=None, hessp_out=None):
        """Hessian-vector product of the (reduced) loss with respect to the logits.

        Parameters
        ----------
        labels, logits, sample_weight
            As for :meth:`loss`.
        v : array_like, logits' shape
            The vector.
        hessp_out : ndarray, optional
            Receives ``H v``.

        Returns
        -------
        ndarray, logits' shape
            Per row ``sc [(S + 2 z lse) (p v - p (p.v)) + 2 z p (p.v)]`` with ``S = sum(wy)``
            and ``sc`` the gradient's row scale (for ``"none"``: the Hessian of the sum of
            the per-example losses).
        """
        p = self._problem(labels, logits, sample_weight=sample_weight, no_softcap=True)
        vr = B.like_logits(v, p.shape, p.axis, p.x.dtype, "v")
        out = B.check_out(hessp_out, p.shape, p.out_dtype, "hessp_out", mixed=True)
        # H v may be written over v itself (the kernels keep p in scratch): an exact alias
        B.check_overlaps([("hessp_out", out)], [("logits", p.x), ("v", vr),
                                                ("labels", p.y if p.t is None else p.t)],
                         ("hessp_out", "v", vr) if p.canonical else None)
        return _engine.hessp(p, vr, out)


_CLASS_PARAMS = """
    Parameters
    ----------
    axis : int, default -1
        The class axis.
    label_smoothing, class_weight, z_loss, logit_softcap
        As in :func:`softmax_cross_entropy_with_logits`.
    reduction : {"none", "sum", "mean"}, default "mean"
    check, backend, n_threads
        As in :func:`softmax_cross_entropy_with_logits`.
"""


class SoftmaxCrossEntropy(_SoftmaxLoss):
    """Softmax cross-entropy with dense (one-hot or soft) labels, as a loss object.

    See :func:`softmax_cross_entropy_with_logits` for the maths.

    Parameters
    ----------
    axis : int, default -1
        The class axis.
    label_smoothing, class_weight, z_loss, logit_softcap
        As in :func:`softmax_cross_entropy_with_logits`.
    reduction : {"none", "sum", "mean"}, default "mean"
    check, backend, n_threads
        As in :func:`softmax_cross_entropy_with_logits`.

    Examples
    --------
    >>> import numpy as np, fastxent as fx
    >>> loss = fx.SoftmaxCrossEntropy()
    >>> logits = np.array([[2.0, 1.0, 0.1]]); labels = np.array([[1.0, 0.0, 0.0]])
    >>> value, grad = loss.loss_gradient(labels, logits)
    >>> round(float(value), 6), grad.round(4)
    (0.41703, array([[-0.341 ,  0.2424,  0.0986]]))
    """

    _kind = "dense"

    def labels_gradient(self, labels, logits, sample_weight=None, grad_loss=None,
                        gradient_out=None, lse=None):
        """d loss / d labels: ``(1 - eps) * class_weight * -log_softmax(logits)``, scaled.

        TensorFlow 2 backpropagates into labels; wrap labels in ``stop_gradient`` there (or
        do not call this) to keep them constant. ``labels`` may be None (the gradient does
        not depend on them).

        Parameters
        ----------
        labels, logits, sample_weight, grad_loss, gradient_out, lse
            As for :meth:`gradient`.

        Returns
        -------
        ndarray, logits' shape
        """
        p = self._problem(labels, logits, sample_weight=sample_weight, grad_loss=grad_loss,
                          gradient_out=gradient_out, labels_optional=True)
        saved = None if lse is None else B.saved_lse(lse, p.lead, p.x.dtype)
        return _engine.labels_gradient(p, saved)


class SparseSoftmaxCrossEntropy(_SoftmaxLoss):
    """Softmax cross-entropy with integer labels, as a loss object.

    See :func:`sparse_softmax_cross_entropy_with_logits` for the maths.

    Parameters
    ----------
    axis : int, default -1
        The class axis.
    ignore_index : int, optional
        Label of examples to leave out (PyTorch's ``ignore_index``).
    label_smoothing, class_weight, z_loss, logit_softcap
        As in :func:`softmax_cross_entropy_with_logits`.
    reduction : {"none", "sum", "mean"}, default "mean"
    check, backend, n_threads
        As in :func:`softmax_cross_entropy_with_logits`.

    Examples
    --------
    >>> import numpy as np, fastxent as fx
    >>> loss = fx.SparseSoftmaxCrossEntropy(ignore_index=-100)
    >>> round(float(loss([0, -100], [[2.0, 1.0, 0.1], [5.0, 0.0, 0.0]])), 6)  # row 2 ignored
    0.41703
    """

    _kind = "integer"

    def __init__(self, *, axis=-1, ignore_index=None, label_smoothing=0.0, class_weight=None,
                 z_loss=0.0, logit_softcap=None, reduction="mean", check=None, backend=None,
                 n_threads=None):
        super().__init__(axis=axis, label_smoothing=label_smoothing, class_weight=class_weight,
                         z_loss=z_loss, logit_softcap=logit_softcap, reduction=reduction,
                         check=check, backend=backend, n_threads=n_threads,
                         ignore_index=ignore_index)
        self.ignore_index = self._opts.ignore_index


class SigmoidCrossEntropy(_Loss):
    """Elementwise sigmoid cross-entropy (multi-label), as a loss object.

    See :func:`sigmoid_cross_entropy_with_logits` for the maths.

    Parameters
    ----------
    pos_weight : float or array_like of shape (C,), optional
        Weight of the positive term per class.
    label_smoothing : float in [0, 1], default 0
        ``z' = (1 - eps) z + eps / 2``.
    reduction : {"none", "sum", "mean"}, default "mean"
    check, backend, n_threads
        As in :func:`sigmoid_cross_entropy_with_logits`.

    Examples
    --------
    >>> import fastxent as fx
    >>> fx.SigmoidCrossEntropy().gradient([[1.0, 0.0]], [[0.0, 0.0]])
    array([[-0.25,  0.25]])
    """

    def __init__(self, *, pos_weight=None, label_smoothing=0.0, reduction="mean", check=None,
                 backend=None, n_threads=None):
        super().__init__(label_smoothing=label_smoothing, pos_weight=pos_weight,
                         reduction=reduction, check=check, backend=backend,
                         n_threads=n_threads)
        self.pos_weight = pos_weight
        self.label_smoothing = self._opts.eps

    def _problem(self, labels, logits, no_softcap=False, labels_optional=False, **kw):
        return B.sigmoid_problem(labels, logits, self._opts, mixed=True,
                                 labels_optional=labels_optional, **kw)

    def labels_gradient(self, labels, logits, sample_weight=None, grad_loss=None,
                        gradient_out=None):
        """d loss / d labels: ``(1 - eps) (-x + (pos_weight - 1) softplus(-x))``, scaled.

        Parameters
        ----------
        labels, logits, sample_weight, grad_loss, gradient_out
            As for :meth:`gradient`; ``labels`` may be None.

        Returns
        -------
        ndarray, logits' shape
        """
        p = self._problem(labels, logits, sample_weight=sample_weight, grad_loss=grad_loss,
                          gradient_out=gradient_out, labels_optional=True)
        return _engine.labels_gradient(p)
