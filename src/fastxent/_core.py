"""Run a normalised :class:`~fastxent._validation.Problem`: per-row scale, kernel call through
the dispatcher, reduction, and the user's layout and ``out=`` buffers on the way back.

Reductions never reach a kernel: the gradient of a mean is the row gradient times
``grad_loss * sample_weight / W`` (DESIGN.md), passed to kernels as ``scale``.
"""

import numpy as np

from . import _dispatch
from . import _validation as V

# Unit scales (no weights, no upstream gradient): shared and read-only, as kernels only read.
_ONES = {(np.dtype(t), ndim): np.ones((1,) * ndim, t) for t in (np.float32, np.float64)
         for ndim in (1, 2)}
for _a in _ONES.values():
    _a.flags.writeable = False


def _ones(dtype, ndim):
    return _ONES[dtype, ndim]


# ------------------------------------------------------------------------- weights, scale

def row_weights(p, sample_weight):
    """Sample weights in kernel layout: softmax ``(n,)``; sigmoid ``(n, 1)`` or ``(n, C)``."""
    if p.kind == "sigmoid":
        return V.elementwise(sample_weight, p.shape or (1,), p.dtype, "sample_weight")
    return V.per_example(sample_weight, p.lead, p.dtype, "sample_weight")


def denominator(p, sw):
    """The total weight a "mean" divides by (PyTorch semantics; see losses.py Notes)."""
    if p.kind == "sigmoid":
        if sw is None:
            return p.x.size
        return float(np.sum(sw, dtype=np.float64)) * (p.n_classes if sw.shape[1] == 1 else 1)
    if p.kind == "dense":
        return p.n_rows if sw is None else float(np.sum(sw, dtype=np.float64))
    t = p.labels
    if len(p.cw):
        # Clipped only to gather safely: out-of-range labels are reported by the kernel.
        w = p.cw[np.clip(t, 0, p.n_classes - 1)]
    else:
        w = None
    if p.has_ignore:
        keep = t != p.ignore_index
        w = keep if w is None else np.where(keep, w, 0)
    if sw is not None:
        w = sw if w is None else w * sw
    return p.n_rows if w is None else float(np.sum(w, dtype=np.float64))


def _upstream_scalar(grad_loss, reduction):
    if grad_loss is None:
        return 1.0
    if np.ndim(grad_loss) != 0:
        raise ValueError(
            f"grad_loss has shape {np.shape(grad_loss)}, but reduction={reduction!r} gives a "
            f"scalar loss; pass a scalar grad_loss (or use reduction='none' for per-example)")
    g = float(grad_loss)
    if not np.isfinite(g):
        raise ValueError(f"grad_loss={grad_loss!r} must be finite")
    return g


def scale(p, reduction, sw, grad_loss, denom):
    """Per-row (softmax) or per-element (sigmoid) gradient scale."""
    ndim = 2 if p.kind == "sigmoid" else 1
    if reduction == "none":
        if p.kind == "sigmoid":
            g = V.elementwise(grad_loss, p.shape or (1,), p.dtype, "grad_loss")
        else:
            g = V.per_example(grad_loss, p.lead, p.dtype, "grad_loss")
        if g is None and sw is None:
            return _ones(p.dtype, ndim)
        return g if sw is None else (sw if g is None else g * sw)
    g = _upstream_scalar(grad_loss, reduction)
    if reduction == "mean":
        g = g / denom if denom else 0.0  # a mean over nothing is 0 with a zero gradient
    if sw is None:
        return np.array([g] if ndim == 1 else [[g]], p.dtype)
    return sw * p.dtype.type(g)


# ------------------------------------------------------------------------------ kernels

def kernel(p, op, backend, n_threads):
    """(kernel function, thread count) chosen by the dispatcher for this problem."""
    name = f"{p.kind}_{op}"
    if p.x.size == 0:  # nothing to compute: the reference handles empty shapes
        from ._backends import numpy_
        return getattr(numpy_, name), 1
    module, threads = _dispatch.select(op, p.kind, p.dtype, p.n_rows, p.n_classes,
                                       backend, n_threads)
    return getattr(module, name), threads


def check_status(p, n_bad):
    if n_bad:
        V.raise_bad_labels(p.raw_labels, p.n_classes, p.has_ignore, p.ignore_index, n_bad)


# ------------------------------------------------------------------------------ outputs

def unrows(p, a):
    """Rows back to the user's layout (a view when possible)."""
    if p.kind == "sigmoid" or p.axis == len(p.shape) - 1:
        return a.reshape(p.shape)
    return np.moveaxis(a.reshape(p.lead + (p.n_classes,)), -1, p.axis)


def _same_buffer(a, b):
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.shape == b.shape and a.strides == b.strides)


def grad_target(p, out, name="out", avoid=()):
    """(kernel buffer, finish) for an array of logits' shape.

    The kernel writes straight into ``out`` when it is C-contiguous in the canonical layout
    and either is the logits buffer itself (in-place) or overlaps nothing the kernel reads;
    otherwise it writes a scratch array that ``finish`` copies into ``out``.
    """
    if out is None:
        buf = np.empty(p.x.shape, p.dtype)
        return buf, lambda: unrows(p, buf)
    V.check_out(out, p.shape, p.dtype, name)
    if out.flags.c_contiguous and (p.kind == "sigmoid" or p.axis == len(p.shape) - 1):
        buf = out if out.shape == p.x.shape else out.reshape(p.x.shape)
        if not any(np.may_share_memory(buf, a) for a in avoid) and (
                buf is p.x or not np.may_share_memory(buf, p.x) or _same_buffer(buf, p.x)):
            return buf, lambda: out
    buf = np.empty(p.x.shape, p.dtype)

    def finish():
        np.copyto(out, unrows(p, buf))
        return out
    return buf, finish


def _reads(p, *arrays):
    """Arrays a kernel reads besides the logits that an output could overlap: dense labels
    and caller-given arrays (a length-1 scale is always fresh)."""
    reads = [p.labels] if p.kind != "sparse" else []
    return reads + [a for a in arrays if a is not None and a.size > 1]


def loss_buffer(p, reduction, sw, out=None, name="out"):
    """Buffer the kernel fills with per-row (or per-element) losses: the caller's ``out``
    itself for ``reduction="none"`` when it is contiguous (no copy), else a new array."""
    elementwise = p.kind == "sigmoid" and (reduction == "none" or (
        sw is not None and sw.shape[1] > 1))
    shape = p.x.shape if elementwise else (p.n_rows,)
    if reduction == "none" and out is not None:
        V.check_out(out, p.lead if p.kind != "sigmoid" else p.shape, p.dtype, name)
        if out.flags.c_contiguous:
            return out.reshape(shape)
    return np.empty(shape, p.dtype)


def reduce_loss(p, values, sw, reduction, denom, out, name="out"):
    """Apply sample weights and the reduction; honour ``out`` (``None`` or an array)."""
    if sw is not None:
        values *= sw if values.ndim == sw.ndim else sw.reshape(values.shape)
    if reduction == "none":
        result = values.reshape(p.lead if p.kind != "sigmoid" else p.shape)
        if out is not None and np.may_share_memory(out, values):
            return out  # the kernel wrote into out (see loss_buffer)
    else:
        total = np.add.reduce(values, axis=None)
        if reduction == "mean":
            total = total / denom if denom else 0.0
        result = p.dtype.type(total)
    if out is None:
        return result
    V.check_out(out, result.shape, p.dtype, name)
    out[...] = result
    return out


# ------------------------------------------------------------------------------ operations

def _common(p, reduction, sample_weight):
    V.check_reduction(reduction)
    sw = row_weights(p, sample_weight)
    denom = denominator(p, sw) if reduction == "mean" else None
    return sw, denom


def _targets(p):
    """Kernel arguments that describe the targets and options (see the kernel table)."""
    if p.kind == "dense":
        return (p.labels, p.cw, p.eps, p.z)
    if p.kind == "sparse":
        return (p.labels, p.cw, p.eps, p.z, p.has_ignore, p.ignore_index)
    return (p.labels, p.cw, p.eps)


def loss(p, reduction, sample_weight, out, backend, n_threads, lse_out=None):
    sw, denom = _common(p, reduction, sample_weight)
    values = loss_buffer(p, reduction, sw, out)
    fn, nt = kernel(p, "forward", backend, n_threads)
    if p.kind == "sigmoid":
        n_bad = fn(p.x, *_targets(p), values, nt)
    else:
        lse = V.ABSENT[p.dtype] if lse_out is None else _lse_out(p, lse_out)
        n_bad = fn(p.x, *_targets(p), values, lse, nt)
        if lse_out is not None and lse is not lse_out:
            lse_out[...] = lse.reshape(p.lead)
    check_status(p, n_bad)
    return reduce_loss(p, values, sw, reduction, denom, out)


def _lse_out(p, lse_out):
    V.check_out(lse_out, p.lead, p.dtype, "lse_out")
    return lse_out.reshape(-1) if lse_out.flags.c_contiguous else np.empty(p.n_rows, p.dtype)


def gradient(p, reduction, sample_weight, grad_loss, out, backend, n_threads, lse=None):
    sw, denom = _common(p, reduction, sample_weight)
    s = scale(p, reduction, sw, grad_loss, denom)
    buf, finish = grad_target(p, out, avoid=_reads(p, s))
    fn, nt = kernel(p, "backward", backend, n_threads)
    if p.kind == "sigmoid":
        n_bad = fn(p.x, *_targets(p), s, buf, nt)
    else:
        saved = V.ABSENT[p.dtype] if lse is None else V.per_example(lse, p.lead, p.dtype, "lse")
        n_bad = fn(p.x, *_targets(p), s, saved, buf, nt)
    check_status(p, n_bad)
    return finish()


def loss_gradient(p, reduction, sample_weight, grad_loss, loss_out, grad_out, backend,
                  n_threads):
    sw, denom = _common(p, reduction, sample_weight)
    s = scale(p, reduction, sw, grad_loss, denom)
    values = loss_buffer(p, reduction, sw, loss_out, "loss_out")
    buf, finish = grad_target(p, grad_out, "grad_out", avoid=_reads(p, s))
    fn, nt = kernel(p, "fused", backend, n_threads)
    check_status(p, fn(p.x, *_targets(p), s, values, buf, nt))
    return reduce_loss(p, values, sw, reduction, denom, loss_out, "loss_out"), finish()


def labels_gradient(p, reduction, sample_weight, grad_loss, out, backend, n_threads):
    sw, denom = _common(p, reduction, sample_weight)
    s = scale(p, reduction, sw, grad_loss, denom)
    buf, finish = grad_target(p, out, avoid=(s,))
    fn, nt = kernel(p, "label_grad", backend, n_threads)
    if p.kind == "sigmoid":
        fn(p.x, p.cw, p.eps, s, buf, nt)
    else:
        fn(p.x, p.cw, p.eps, s, V.ABSENT[p.dtype], buf, nt)
    return finish()


def hessp(p, reduction, sample_weight, v, out, backend, n_threads):
    sw, denom = _common(p, reduction, sample_weight)
    s = scale(p, reduction, sw, None, denom)
    vr = V.like_logits(v, p, "v")
    buf, finish = grad_target(p, out, avoid=_reads(p, s, vr))
    fn, nt = kernel(p, "hessp", backend, n_threads)
    check_status(p, fn(p.x, *_targets(p), s, vr, buf, nt))
    return finish()


def utility(name, logits, axis, out, backend, n_threads):
    """logsumexp / log_softmax / softmax over ``axis``."""
    x, axis = V.check_logits(logits, axis)
    p = V.Problem("util", V.to_rows(x, axis), x.shape, axis, V.lead_shape(x.shape, axis))
    reduce_rows = name == "logsumexp"
    if reduce_rows:
        buf = np.empty(p.n_rows, p.dtype)
        finish = lambda: buf.reshape(p.lead)  # noqa: E731
        if out is not None:
            V.check_out(out, p.lead, p.dtype, "out")
            finish = lambda: (np.copyto(out, buf.reshape(p.lead)), out)[1]  # noqa: E731
    else:
        buf, finish = grad_target(p, out)
    if p.x.size:
        module, nt = _dispatch.select(name, "util", p.dtype, p.n_rows, p.n_classes, backend,
                                      n_threads)
        getattr(module, name)(p.x, buf, nt)
    return finish()
