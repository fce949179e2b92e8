"""The engine: run a problem (``_boundary``) through its call plan (``_plan``) and a kernel.

It builds the one ``KernelCall`` of an operation, runs it, turns the kernel's status into
errors or diagnostics, and returns results in the user's layout and buffers. It checks
nothing (the boundary did) and knows no label kind (the problem types do). Reductions never
reach a kernel as such: the gradient of a mean is the row gradient times
``grad_loss * sample_weight / W``, passed as ``gscale`` and the row weights ``rs``; the
kernels return the weighted loss total.

Outputs that the kernels cannot write directly are handled here: a buffer of the other float
dtype (scikit-learn's loss protocol allows either) is filled block by block from a small
scratch block, so no N x C copy is made; a buffer in a non-canonical layout gets the result
copied in.
"""

import numpy as np

from . import _backends, _diagnostics, _plan
from ._backends import KernelCall

#: Rows per block when a gradient is stored in a buffer of the other dtype (~256 KB).
_BLOCK_ELEMENTS = 1 << 16


def _threads_and_run(p, op):
    run, threads, _ = _plan.plan(p.kind, op, p.x.dtype, p.n_rows, p.n_classes, p.backend,
                                 p.n_threads)
    return run, threads


def _denominator(p):
    """The total weight a "mean" divides by (None for other reductions)."""
    if p.reduction != "mean":
        return None
    denom = p.denominator()
    if not denom:
        _diagnostics.empty_mean(p)
    return denom


def _gscale(p, denom):
    """The gradient factor of every row: grad_loss (/ W for a mean; 0 for a mean over
    nothing, as Keras and optax)."""
    if p.reduction == "none":
        return 1.0
    if p.reduction == "mean":
        return p.grad_loss / denom if denom else 0.0
    return p.grad_loss


def _status(p, status):
    if status.nbad:
        p.raise_bad_labels(status.nbad)
    if status.diag is not None:
        _diagnostics.report(p, status)
    return status


_new_call = tuple.__new__  # a KernelCall from a tuple in C, without namedtuple's __new__


def _call(p, family, loss=None, grad=None, lse_out=None, lse_in=None, coef_in=None, v=None,
          gscale=1.0, want_total=False):
    """The KernelCall of an operation on problem p (the hot path: built positionally)."""
    x = p.x
    if p.check == "off":
        check, prob_tol, label_tol = 0, 0.0, 0.0
    else:
        check = _diagnostics.bits(p)
        prob_tol, label_tol = _diagnostics.tolerances(p)
    return _new_call(KernelCall, (family, x, p.y, p.t, p.cw, p.rs, lse_in, coef_in, v, loss,
                                  grad, lse_out, p.ignore_index, p.eps, x.shape[1], p.z,
                                  p.softcap, gscale, want_total, False, check, prob_tol,
                                  label_tol))


def _execute(p, op, call):
    """Run a call (all rows at once) and handle its status."""
    x = p.x
    if x.shape[0] == 0:
        return _backends.empty_status(call.check)
    run, threads, _ = _plan.plan(p.kind, op, x.dtype, x.shape[0], x.shape[1], p.backend,
                                 p.n_threads)
    status = run(call, threads)
    if status.nbad or status.diag is not None:
        _status(p, status)
    return status


# ------------------------------------------------------------------------------ buffers

def _loss_buffer(p):
    """Buffer the kernel fills with per-row (sigmoid: per-element) losses for "none": the
    caller's loss_out itself when it is contiguous in the compute dtype, else a new array."""
    out = p.loss_out
    shape = (p.n_rows,) if p.loss_per_row else p.x.shape
    if out is not None and out.flags.c_contiguous and out.dtype == p.x.dtype:
        return out.reshape(shape)
    return np.empty(shape, p.x.dtype)


def _loss_result(p, status, values, denom):
    if p.reduction == "none":
        if p.sw is not None:
            values *= p.sw if values.ndim == p.sw.ndim else p.sw.reshape(-1, 1)
        result = values.reshape(p.loss_shape())
        if p.loss_out is None:
            return result
        if not np.may_share_memory(result, p.loss_out):
            np.copyto(p.loss_out, result, casting="unsafe")
        return p.loss_out
    return reduced(status.total, p.reduction, denom, p.out_dtype, p.loss_out)


def reduced(total, reduction, denom, dtype, loss_out):
    """A "sum"/"mean" loss from the kernels' weighted total: a scalar of ``dtype``, or
    written into ``loss_out``. A mean over nothing (``denom`` 0) is 0."""
    if reduction == "mean":
        total = total / denom if denom else 0.0
    if loss_out is None:
        return dtype.type(total)
    loss_out[...] = total
    return loss_out


def _grad_target(p, out):
    """(kernel buffer, finish, blocked) for a result of logits' shape: the caller's buffer
    itself when it is canonical in the compute dtype (possibly the logits: in place), block
    by block for a buffer of the other dtype, else a new array. ``finish()`` returns the
    result in the user's layout (copied into ``out`` if one was given); None when the
    kernel's buffer already is the result (see :func:`_result`)."""
    x = p.x
    if out is None:
        buf = np.empty(x.shape, x.dtype)
        return buf, (None if x.shape == p.shape and p.canonical else
                     lambda: p.unrows(buf)), False
    if p.canonical and out.flags.c_contiguous:
        buf = out if out.shape == x.shape else out.reshape(x.shape)
        return buf, None, out.dtype != x.dtype
    buf = np.empty(x.shape, x.dtype)

    def finish():
        np.copyto(out, p.unrows(buf), casting="unsafe")
        return out
    return buf, finish, False


def _result(out, buf, finish):
    """The result of a :func:`_grad_target` arrangement once the kernel has run."""
    if finish is not None:
        return finish()
    return buf if out is None else out


def _execute_blocked(p, op, call, grad_out):
    """Run ``call`` in row blocks, its gradient computed into a scratch block and stored in
    ``grad_out`` (the other float dtype) as each block finishes."""
    n, C = p.x.shape
    rows = max(1, _BLOCK_ELEMENTS // max(C, 1))
    scratch = np.empty((min(rows, n), C), p.x.dtype)
    run, threads = _threads_and_run(p, op) if n else (None, 1)

    def block(c, r0, r1):
        status = run(c._replace(grad=scratch[:r1 - r0]), threads)
        grad_out[r0:r1] = scratch[:r1 - r0]
        return status
    return _status(p, _backends.in_row_blocks(block, call, rows))


def _into(p, op, out, family, shard=None, loss=None, lse_in=None, coef_in=None, v=None,
          gscale=1.0, want_total=False):
    """(status, result) of a kernel whose result has the logits' shape, run into the
    caller's ``out`` as :func:`_grad_target` arranges (in place, blocked for a buffer of the
    other dtype, or a new array); the other arguments are :func:`_call`'s. ``shard`` =
    n_classes makes the call a class shard's."""
    buf, finish, blocked = _grad_target(p, out)
    call = _call(p, family, loss, None if blocked else buf, None, lse_in, coef_in, v, gscale,
                 want_total)
    if shard is not None:
        call = call._replace(n_classes=shard, shard=True)
    status = _execute_blocked(p, op, call, buf) if blocked else _execute(p, op, call)
    return status, _result(out, buf, finish)


# ------------------------------------------------------------------------------ operations

def loss(p, lse_out=None):
    """The loss (per example for "none", else a scalar); ``lse_out`` the per-example
    logsumexp (softmax) in the user's buffer."""
    denom = _denominator(p)
    values = _loss_buffer(p) if p.reduction == "none" else None
    lse_buf, lse_finish = _row_buffer(p, p.lse_out)
    call = _call(p, p.family, values, None, lse_buf, want_total=values is None)
    status = _execute(p, "forward", call)
    if lse_finish is not None:
        lse_finish()
    return _loss_result(p, status, values, denom)


def _row_buffer(p, out):
    """(buffer of n values, finish() or None) for a per-row output such as lse_out."""
    if out is None:
        return None, None
    if out.flags.c_contiguous and out.dtype == p.x.dtype:
        return out.reshape(-1), None
    buf = np.empty(p.n_rows, p.x.dtype)
    return buf, lambda: np.copyto(out, buf.reshape(out.shape), casting="unsafe")


def gradient(p, lse=None):
    """d loss / d logits; ``lse`` a saved logsumexp (rows) for the one-pass backward."""
    return _into(p, "backward", p.gradient_out, p.family, lse_in=lse,
                 gscale=_gscale(p, _denominator(p)))[1]


def shard_gradient(p, lse, coef, n_classes):
    """d loss / d logits of a class shard (``p``: its columns, integer labels local to the
    shard, reduction "none") from the whole row's logsumexp ``lse`` and softmax coefficient
    ``coef = S + 2 z lse`` (rows, logits' dtype); smoothing spreads over ``n_classes``."""
    return _into(p, "backward", p.gradient_out, p.family, shard=n_classes, lse_in=lse,
                 coef_in=coef)[1]


def loss_gradient(p):
    """(loss, d loss / d logits) in one fused pass."""
    denom = _denominator(p)
    if p.reduction != "none":
        status, grad = _into(p, "fused", p.gradient_out, p.family, gscale=_gscale(p, denom),
                             want_total=True)
        return reduced(status.total, p.reduction, denom, p.out_dtype, p.loss_out), grad
    values = _loss_buffer(p)
    status, grad = _into(p, "fused", p.gradient_out, p.family, loss=values)
    return _loss_result(p, status, values, denom), grad


def labels_gradient(p, lse=None):
    """d loss / d labels (dense softmax: (1 - eps) cw (lse - x); sigmoid: see losses)."""
    family = _backends.LABEL_GRAD if p.kind == "dense" else _backends.SIGMOID_LABEL_GRAD
    return _into(p, "label_grad", p.gradient_out, family, lse_in=lse,
                 gscale=_gscale(p, _denominator(p)))[1]


def hessp(p, v, out=None):
    """Hessian-vector product of the (reduced) loss with respect to the logits."""
    return _into(p, "hessp", out, _backends.HESSP, v=v, gscale=_gscale(p, _denominator(p)))[1]


def gradient_hessian(p):
    """(gradient, diagonal Hessian) with respect to the logits (scikit-learn's protocol).

    Softmax, per row: ``(S + 2 z lse) p (1 - p) + 2 z p^2`` with ``S = sum(wy)``; sigmoid:
    ``(1 - y' + q y') s (1 - s)``; both scaled like the gradient, ignored rows 0. Both come
    from the logits, so a result written over them (``gradient_out`` or ``hessian_out`` =
    logits; not both, the boundary checks) is computed last."""
    denom = _denominator(p)
    gscale = _gscale(p, denom)
    grad_last = p.gradient_out is not None and np.may_share_memory(p.gradient_out, p.x)
    grad = None if grad_last else gradient(p)
    buf, finish, blocked = _grad_target(p, p.hessian_out)
    target = np.empty(p.x.shape, p.x.dtype) if blocked else buf
    if p.kind == "sigmoid":
        _sigmoid_hessian(p, gscale, target)
    else:
        _softmax_hessian(p, gscale, target)
    if blocked:
        buf[...] = target
    hessian = _result(p.hessian_out, buf, finish)
    return (gradient(p) if grad_last else grad), hessian


def _row_mass(p):
    """S = sum_c wy_c per row (float64), and the rows integer labels drop (or None)."""
    C = p.n_classes
    cw = p.cw.astype(np.float64) if p.cw is not None else None
    total_cw = float(cw.sum()) if cw is not None else float(C)
    if p.kind == "dense":
        y = np.broadcast_to(p.y, p.x.shape)
        hit = (y @ cw) if cw is not None else y.sum(axis=1, dtype=np.float64)
        return (1.0 - p.eps) * hit + (p.eps / C) * total_cw, None
    t = p.t
    keep = (t >= 0) & (t < C)
    if p.ignore_index is not None:
        keep &= t != p.ignore_index
    w_t = cw[np.where(keep, t, 0)] if cw is not None else 1.0
    return np.where(keep, (1.0 - p.eps) * w_t + (p.eps / C) * total_cw, 0.0), ~keep


def _softmax_hessian(p, gscale, out):
    mass, dropped = _row_mass(p)
    scale = gscale * (p.rs.astype(np.float64) if p.rs is not None else 1.0)
    if p.z:
        lse = np.empty(p.n_rows, p.x.dtype)
        _utility_run(p, _backends.LOGSUMEXP, lse, "logsumexp")
        coef = (mass + 2.0 * p.z * lse.astype(np.float64)) * scale
    else:
        coef = mass * scale
    _utility_run(p, _backends.SOFTMAX_PROB, out, "softmax")
    coef = np.broadcast_to(coef, (p.n_rows,))
    quad = np.broadcast_to(2.0 * p.z * scale, (p.n_rows,)) if p.z else None
    step = max(1, _BLOCK_ELEMENTS // p.n_classes)
    for r0 in range(0, p.n_rows, step):  # blocks: the temporaries stay in cache
        blk = out[r0:r0 + step]
        c = coef[r0:r0 + step, None].astype(p.x.dtype)
        sq = blk * blk
        if quad is None:  # coef (p - p^2)
            blk -= sq
            blk *= c
        else:  # coef p + (2 z - coef) p^2
            q = quad[r0:r0 + step, None].astype(p.x.dtype)
            blk *= c
            sq *= q - c
            blk += sq
    if dropped is not None and dropped.any():
        out[dropped] = 0


def _sigmoid_hessian(p, gscale, out):
    yy = p.y if p.eps == 0 else (1 - p.eps) * p.y + p.eps / 2
    scale = p.rs if p.rs is not None else None
    step = max(1, _BLOCK_ELEMENTS // p.n_classes)
    for r0 in range(0, p.n_rows, step):
        sl = slice(r0, r0 + step)
        e = np.exp(-np.abs(p.x[sl]))
        curv = e / (1 + e) ** 2  # sigmoid(x) (1 - sigmoid(x)), without overflow
        ys = yy[sl]
        coef = 1 - ys + (ys * p.cw if p.cw is not None else ys)
        blk = out[sl]
        np.multiply(coef, curv, out=blk)
        blk *= p.x.dtype.type(gscale)
        if scale is not None:
            blk *= scale[sl] if scale.ndim == 2 else scale[sl, None]


def _utility_run(p, family, out, op):
    call = KernelCall(family, p.x, None, None, None, None, None, None, None, None, out, None,
                      None, 0.0, p.n_classes, 0.0, 0.0, 1.0, False, False, 0, 0.0, 0.0)
    if p.n_rows:
        run, threads, _ = _plan.plan("util", op, p.x.dtype, p.n_rows, p.n_classes, p.backend,
                                     p.n_threads)
        run(call, threads)


_UTILITY = {"logsumexp": _backends.LOGSUMEXP, "log_softmax": _backends.LOG_SOFTMAX,
            "softmax": _backends.SOFTMAX_PROB}


def utility(p, name):
    """logsumexp (reduced axes) / log_softmax / softmax (over the class axis)."""
    if name == "logsumexp":
        buf = np.empty(p.n_rows, p.x.dtype)
        _utility_run(p, _backends.LOGSUMEXP, buf, name)
        result = buf.reshape(p.shape)
        if p.out is None:
            return result
        np.copyto(p.out, result)
        return p.out
    buf, finish, _ = _grad_target(p, p.out)
    _utility_run(p, _UTILITY[name], buf, name)
    return _result(p.out, buf, finish)
