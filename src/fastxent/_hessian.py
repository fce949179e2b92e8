"""Diagonal Hessian of the losses with respect to the logits (scikit-learn's ``gradient_hessian``).

scikit-learn's private loss protocol (``sklearn._loss``) gives second-order solvers such as
``HistGradientBoosting`` and ``NewtonCholesky`` the *diagonal* of the Hessian of the loss
with respect to the raw predictions, per element, next to the gradient. This module computes
it for fastxent's loss objects, with every option they support (label smoothing, class
weights, z-loss, ``ignore_index``, ``pos_weight``, sample weights, reductions), scaled exactly
as their gradient is.

Softmax, per row with ``p = softmax(x)``, ``lse = logsumexp(x)`` and ``S = sum_c wy_c`` (the
weighted, smoothed targets of the row)::

    d^2 loss / dx_c^2 = (S + 2 z lse) p_c (1 - p_c) + 2 z p_c^2

Sigmoid, per element with ``y' = (1 - eps) y + eps / 2`` and ``q = pos_weight``::

    d^2 loss / dx^2 = (1 - y' + q y') sigmoid(x) (1 - sigmoid(x))

The result is multiplied by the same per-row (per-element) scale as the gradient: the sample
weight, divided by the total weight for ``reduction="mean"``.
"""

import numpy as np

from . import _core
from .losses import softmax as _softmax, logsumexp as _logsumexp

__all__ = ["gradient_hessian"]

# Rows per block for the elementwise post-processing: a block's temporaries stay in cache
# instead of costing a second N x C array.
_BLOCK_ELEMENTS = 1 << 16


def _softmax_row_mass(p):
    """``(S, dropped)``: ``S = sum_c wy_c`` per row, and the rows integer labels drop."""
    n_classes = p.x.shape[1]
    cw = p.cw.astype(np.float64) if len(p.cw) else None
    total_cw = float(cw.sum()) if cw is not None else float(n_classes)
    if p.kind == "dense":
        y = p.labels
        hit = (y @ cw) if cw is not None else y.sum(axis=1, dtype=np.float64)
        return (1.0 - p.eps) * hit + (p.eps / n_classes) * total_cw, None
    t = p.labels
    keep = (t >= 0) & (t < n_classes)
    if p.has_ignore:
        keep &= t != p.ignore_index
    w_t = cw[np.where(keep, t, 0)] if cw is not None else 1.0
    mass = np.where(keep, (1.0 - p.eps) * w_t + (p.eps / n_classes) * total_cw, 0.0)
    return mass, ~keep


def _softmax_hessian(p, s, backend, n_threads, buf):
    mass, dropped = _softmax_row_mass(p)
    row_scale = np.broadcast_to(np.asarray(s, np.float64).reshape(-1), (p.n_rows,))
    if p.z:  # before the softmax below, which may overwrite the logits (hessian_out=logits)
        lse = np.asarray(_logsumexp(p.x, backend=backend, n_threads=n_threads), np.float64)
        coef = (mass + 2.0 * p.z * lse) * row_scale
        quad = 2.0 * p.z * row_scale
    else:
        coef = mass * row_scale
        quad = None
    # Softmax straight into the output buffer; it is then turned into the diagonal in place.
    _softmax(p.x, out=buf, backend=backend, n_threads=n_threads)
    step = max(1, _BLOCK_ELEMENTS // max(p.n_classes, 1))
    for start in range(0, p.n_rows, step):
        blk = buf[start:start + step]
        sq = blk * blk
        c = coef[start:start + step, None].astype(p.dtype)
        if quad is None:
            blk -= sq
            blk *= c
        else:
            # coef * (p - p^2) + 2 z p^2 = coef * p + (2 z - coef) * p^2
            q = np.broadcast_to(quad, (p.n_rows,))[start:start + step, None].astype(p.dtype)
            blk *= c
            sq *= q - c
            blk += sq
    # Ignored rows contribute nothing, the z-loss included (as in the loss kernels).
    if dropped is not None and dropped.any():
        buf[dropped] = 0
    return buf


def _sigmoid_hessian(p, s, buf):
    y = p.labels
    yy = y if p.eps == 0 else (1 - p.eps) * y + p.eps / 2
    pw = p.cw if len(p.cw) else None
    step = max(1, _BLOCK_ELEMENTS // max(p.n_classes, 1))
    for start in range(0, p.n_rows, step):
        sl = slice(start, start + step)
        x = p.x[sl]
        # sigmoid(x) (1 - sigmoid(x)) = e / (1 + e)^2 with e = exp(-|x|): no overflow.
        e = np.exp(-np.abs(x))
        curv = e / (1 + e) ** 2
        ys = yy[sl]
        coef = 1 - ys + (ys * pw if pw is not None else ys)
        blk = buf[sl]
        np.multiply(coef, curv, out=blk)
        blk *= s[sl] if np.ndim(s) == 2 and s.shape[0] == p.n_rows else s
    return buf


def gradient_hessian(loss_obj, labels, logits, sample_weight=None, gradient_out=None,
                     hessian_out=None):
    r"""Gradient and diagonal Hessian of a fastxent loss with respect to the logits.

    The counterpart of ``gradient_hessian`` in scikit-learn's private loss protocol
    (``sklearn._loss.loss.BaseLoss``), for :class:`~fastxent.SoftmaxCrossEntropy`,
    :class:`~fastxent.SparseSoftmaxCrossEntropy` and :class:`~fastxent.SigmoidCrossEntropy`.

    Parameters
    ----------
    loss_obj : SoftmaxCrossEntropy, SparseSoftmaxCrossEntropy or SigmoidCrossEntropy
        The loss and its options (reduction, class weights, smoothing, z-loss, backend).
    labels : array_like
        As for ``loss_obj.gradient``.
    logits : array_like of float
        As for ``loss_obj.gradient``; float32 stays float32.
    sample_weight : array_like, optional
        As for ``loss_obj.gradient``.
    gradient_out, hessian_out : ndarray, optional
        Buffers of logits' shape and dtype for the results. Either (not both) may be
        ``logits`` itself: the one that overwrites the logits is computed last.

    Returns
    -------
    gradient : ndarray, logits' shape
        ``d loss / d logits``, exactly ``loss_obj.gradient(labels, logits, sample_weight)``.
    hessian : ndarray, logits' shape
        ``d^2 loss / d logits^2`` per element (the diagonal of each row's Hessian), scaled
        like the gradient.

    Notes
    -----
    Softmax (per row; :math:`p = \mathrm{softmax}(x)`, :math:`\ell = \mathrm{logsumexp}(x)`,
    :math:`S = \sum_c w y'_c` the total weight of the smoothed, class-weighted targets,
    :math:`z` the z-loss coefficient):

    .. math:: \frac{\partial^2 L}{\partial x_c^2} = (S + 2 z \ell)\, p_c (1 - p_c)
              + 2 z\, p_c^2

    Sigmoid (per element; :math:`y' = (1 - \epsilon) y + \epsilon / 2`, :math:`q` the
    positive weight, :math:`\sigma` the logistic function):

    .. math:: \frac{\partial^2 L}{\partial x^2} = (1 - y' + q y')\, \sigma(x)(1 - \sigma(x))

    Both are multiplied by the gradient's scale: ``sample_weight`` per example, divided by the
    total weight for ``reduction="mean"``. Rows dropped by ``ignore_index`` get zeros. The
    full per-row softmax Hessian is ``(S + 2 z l) (diag(p) - p p^T) + 2 z p p^T``; its
    products with vectors are ``loss_obj.hessp``.

    Examples
    --------
    >>> import numpy as np, fastxent as fx
    >>> from fastxent._hessian import gradient_hessian
    >>> g, h = gradient_hessian(fx.SparseSoftmaxCrossEntropy(reduction="sum"),
    ...                         [0], np.array([[0.0, 0.0]]))
    >>> g, h
    (array([[-0.5,  0.5]]), array([[0.25, 0.25]]))
    >>> g, h = gradient_hessian(fx.SigmoidCrossEntropy(reduction="none"), [[1.0]], [[0.0]])
    >>> h
    array([[0.25]])
    """
    p = loss_obj._problem(labels, logits)
    reduction = loss_obj.reduction
    sw = _core.row_weights(p, sample_weight)
    denom = _core.denominator(p, sw) if reduction == "mean" else None
    s = _core.scale(p, reduction, sw, None, denom)
    if p.kind == "sparse":  # the loss's own error for bad labels, before any work
        _core.check_status(p, _bad_labels(p))
    if (gradient_out is not None and hessian_out is not None
            and np.may_share_memory(gradient_out, hessian_out)):
        raise ValueError("gradient_out and hessian_out overlap; pass separate buffers")
    # Both results are computed from the logits, so one written over them must come last.
    hess_in_place = hessian_out is not None and np.may_share_memory(hessian_out, p.x)
    gradient = None
    if hess_in_place:
        gradient = loss_obj.gradient(labels, logits, sample_weight=sample_weight,
                                     out=gradient_out)
    buf, finish = _core.grad_target(p, hessian_out, "hessian_out", avoid=(p.labels, s))
    if p.kind == "sigmoid":
        _sigmoid_hessian(p, s, buf)
    else:
        _softmax_hessian(p, s, loss_obj.backend, loss_obj.n_threads, buf)
    hessian = finish()
    if gradient is None:
        gradient = loss_obj.gradient(labels, logits, sample_weight=sample_weight,
                                     out=gradient_out)
    return gradient, hessian


def _bad_labels(p):
    t = p.labels
    bad = (t < 0) | (t >= p.n_classes)
    if p.has_ignore:
        bad &= t != p.ignore_index
    return int(np.count_nonzero(bad))
