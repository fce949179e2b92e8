"""JAX integration: optax's cross-entropy losses on fastxent's kernels (CPU).

``softmax_cross_entropy``, ``softmax_cross_entropy_with_integer_labels`` and
``sigmoid_binary_cross_entropy`` have optax's names, signatures and semantics (per-example
losses, no reduction). Install with ``pip install "fastxent[jax]"``; ``import fastxent``
never imports jax.

How it runs (a. to d.):

a. ``jax.experimental.buffer_callback`` runs fastxent's kernels on XLA's own buffers (the
   inputs read and the outputs written in place, no copy; ``jax.pure_callback``, which
   copies, where an older jax lacks it), with ``vmap_method="broadcast_all"`` (the class
   axis is moved last before the callback, so a batch dim added by ``vmap`` is just more
   rows), under ``jit``, ``grad`` and ``vmap``.
b. ``jax.custom_vjp``: the forward pass computes the loss and keeps each example's
   logsumexp; the backward pass turns logits, labels, logsumexp and the upstream gradient
   into d loss / d logits in one pass over the logits (no softmax stored, no separate
   scaling pass). Gradients into dense labels are ``g * (lse - logits)`` (optax's).
c. float32 and float64 (``jax_enable_x64``) keep their dtype; float16 and bfloat16 are
   computed in float32 and returned in their own dtype.
d. Integer labels out of range raise an error naming the first bad label (inside jit the
   error surfaces as JAX's callback error, carrying fastxent's message), where optax
   silently returns NaN.

Differences from optax (deliberate, documented): with a per-class ``where`` mask, an integer
label pointing at a masked-out class gives ``inf`` (the class has probability 0); optax
takes that class's unmasked logit.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .losses import SigmoidCrossEntropy, SoftmaxCrossEntropy, SparseSoftmaxCrossEntropy

__all__ = ["softmax_cross_entropy", "softmax_cross_entropy_with_integer_labels",
           "sigmoid_binary_cross_entropy"]

_NAMES = ("labels", "logits")


def _obj(cls, **kw):
    obj = cls(reduction="none", **kw)
    obj._opts.names = _NAMES
    return obj


@functools.lru_cache(maxsize=None)
def _losses():
    """The loss objects (options checked once)."""
    return {"integer": _obj(SparseSoftmaxCrossEntropy), "dense": _obj(SoftmaxCrossEntropy),
            "sigmoid": _obj(SigmoidCrossEntropy)}


try:  # zero-copy callbacks (jax >= 0.7): the kernels read XLA's buffers and write its outputs
    from jax.experimental.buffer_callback import buffer_callback as _buffer_callback
except ImportError:  # older jax: pure_callback (copies every argument and result)
    _buffer_callback = None


def _callback(host, shapes, *args):
    """``host(outs, *arrays)`` on the host, filling ``outs`` (NumPy arrays shaped like
    ``shapes``, a tuple) from the NumPy views of ``args``; returns the results as
    jax arrays. Through ``buffer_callback`` the arrays are XLA's own buffers (no copy: a
    pure_callback copied 256 MiB in and out in ~0.9 s here); ``vmap_method="broadcast_all"``
    either way (a batch dim added by vmap is just more rows)."""
    if _buffer_callback is not None:
        def run(ctx, outs, *bufs):
            host(tuple(np.asarray(o) for o in outs), *(np.asarray(b) for b in bufs))
        return _buffer_callback(run, shapes, vmap_method="broadcast_all")(*args)

    traced = np.ndim(args[0])

    def run(*arrays):  # vmap prepends its batch dims to every argument and result
        batch = np.shape(arrays[0])[:np.ndim(arrays[0]) - traced]
        outs = tuple(np.empty(batch + s.shape, s.dtype) for s in shapes)
        host(outs, *(np.asarray(a) for a in arrays))
        return outs
    return jax.pure_callback(run, shapes, *args, vmap_method="broadcast_all")


# ------------------------------------------------------------------ host side (NumPy)

def _rows(a):
    return a.reshape(-1, a.shape[-1])


def _host_softmax_forward(kind, outs, x, y):
    """Per-example loss and logsumexp of (..., C) logits into ``outs``."""
    loss, lse = outs
    y2 = y.reshape(-1) if kind == "integer" else _rows(y)
    try:
        _losses()[kind].loss(y2, _rows(x), loss_out=loss.reshape(-1),
                             lse_out=lse.reshape(-1))
    except ValueError as e:  # bad labels: say how to leave rows out here
        raise ValueError(f"fastxent.jax: {e}; rows excluded with where= may hold any "
                         f"label") from None


def _host_softmax_backward(kind, outs, x, y, lse, g):
    y2 = y.reshape(-1) if kind == "integer" else _rows(y)
    _losses()[kind].gradient(y2, _rows(x), grad_loss=g.reshape(-1), lse=lse.reshape(-1),
                             gradient_out=_rows(outs[0]))


def _host_sigmoid(outs, x, y):
    _losses()["sigmoid"].loss(_rows(y), _rows(x), loss_out=_rows(outs[0]))


def _host_sigmoid_backward(outs, x, y, g):
    _losses()["sigmoid"].gradient(_rows(y), _rows(x), grad_loss=_rows(g),
                                  gradient_out=_rows(outs[0]))


# --------------------------------------------------------------- the differentiable cores

def _softmax_forward(kind, x, y):
    lead = jax.ShapeDtypeStruct(x.shape[:-1], x.dtype)
    return _callback(functools.partial(_host_softmax_forward, kind), (lead, lead), x, y)


def _softmax_backward(kind, x, y, lse, g):
    return _callback(functools.partial(_host_softmax_backward, kind),
                     (jax.ShapeDtypeStruct(x.shape, x.dtype),), x, y, lse, g)[0]


@jax.custom_vjp
def _integer_core(x, t):
    return _softmax_forward("integer", x, t)[0]


def _integer_fwd(x, t):
    loss, lse = _softmax_forward("integer", x, t)
    return loss, (x, t, lse)


def _integer_bwd(res, g):
    x, t, lse = res
    return _softmax_backward("integer", x, t, lse, g), None


_integer_core.defvjp(_integer_fwd, _integer_bwd)


@jax.custom_vjp
def _dense_core(x, y):
    return _softmax_forward("dense", x, y)[0]


def _dense_fwd(x, y):
    loss, lse = _softmax_forward("dense", x, y)
    return loss, (x, y, lse)


def _dense_bwd(res, g):
    x, y, lse = res
    gx = _softmax_backward("dense", x, y, lse, g)
    gy = g[..., None] * (lse[..., None] - x)  # -log_softmax: XLA drops it when unused
    return gx, gy


_dense_core.defvjp(_dense_fwd, _dense_bwd)


@jax.custom_vjp
def _sigmoid_core(x, y):
    return _callback(_host_sigmoid, (jax.ShapeDtypeStruct(x.shape, x.dtype),), x, y)[0]


def _sigmoid_fwd(x, y):
    return _sigmoid_core(x, y), (x, y)


def _sigmoid_bwd(res, g):
    x, y = res
    gx = _callback(_host_sigmoid_backward, (jax.ShapeDtypeStruct(x.shape, x.dtype),), x, y,
                   g)[0]
    return gx, -x * g


_sigmoid_core.defvjp(_sigmoid_fwd, _sigmoid_bwd)


# ------------------------------------------------------------------------ the edge

def _compute_dtype(logits):
    dt = jnp.result_type(logits)
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"logits has dtype {dt}; pass floating-point logits")
    return dt if dt in (jnp.float32, jnp.float64) else jnp.dtype(jnp.float32)


def _class_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    if not axes:
        raise ValueError("axis=() names no class axis")
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis={axis!r} is out of range for logits with {ndim} dims")
        out.append(a % ndim)
    return tuple(out)


def _classes_last(a, axes):
    """Move the class axes to the end (in order) and flatten them into one."""
    batch = tuple(i for i in range(a.ndim) if i not in axes)
    if axes != tuple(range(a.ndim - len(axes), a.ndim)):
        a = jnp.transpose(a, batch + axes)
    return a.reshape(a.shape[:len(batch)] + (-1,))


def _prepare_where(where, logits, axes):
    """optax's ``where``: per example (the batch shape) or per element (logits' shape).
    Returns (row mask or None, element mask in the classes-last layout or None)."""
    if where is None:
        return None, None
    where = jnp.asarray(where, dtype=bool)
    batch_shape = tuple(logits.shape[i] for i in range(logits.ndim) if i not in axes)
    if where.ndim == len(batch_shape) and where.ndim != logits.ndim:
        return where, None
    where = jnp.broadcast_to(where, logits.shape)
    cls = _classes_last(where, axes)
    return jnp.any(cls, axis=-1), cls


def softmax_cross_entropy_with_integer_labels(logits, labels, axis=-1, where=None):
    """Softmax cross-entropy between logits and integer labels, as optax's.

    Parameters
    ----------
    logits : array of float, shape (..., C, ...)
        Unnormalised log-probabilities.
    labels : array of int
        Class indices in ``[0, C)``, logits' shape without the class axis (a flat index
        into the class axes when ``axis`` is a tuple). Out-of-range labels raise.
    axis : int or tuple of int, default -1
        The class axis (axes).
    where : array of bool, optional
        Examples (batch shape) or elements (logits' shape) to include; excluded examples
        have loss 0, excluded elements leave the softmax.

    Returns
    -------
    array, logits' shape without ``axis``
        ``logsumexp(logits) - logits[label]`` per example, in logits' dtype.

    Examples
    --------
    >>> import jax.numpy as jnp, fastxent.jax as fxj
    >>> fxj.softmax_cross_entropy_with_integer_labels(jnp.array([[2.0, 1.0, 0.1]]),
    ...                                              jnp.array([0]))
    Array([0.41703], dtype=float32)
    """
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels has dtype {labels.dtype}; pass integer class indices (or "
                        f"use softmax_cross_entropy for one-hot / soft labels)")
    dt = _compute_dtype(logits)
    axes = _class_axes(axis, logits.ndim)
    rows, elems = _prepare_where(where, logits, axes)
    x = _classes_last(logits.astype(dt), axes)
    if x.shape[:-1] != labels.shape:
        raise ValueError(f"labels has shape {labels.shape} but logits has shape "
                         f"{logits.shape} (class axis {axis}); labels need shape "
                         f"{x.shape[:-1]}")
    if elems is not None:
        x = jnp.where(elems, x, -jnp.inf)
    if rows is not None:
        labels = jnp.where(rows, labels, 0)  # excluded rows: any valid label, loss 0
        if elems is not None:
            x = jnp.where(rows[..., None], x, 0.0)
    loss = _integer_core(x, labels)
    if rows is not None:
        loss = jnp.where(rows, loss, 0.0)
    return loss.astype(logits.dtype)


def softmax_cross_entropy(logits, labels, axis=-1, where=None):
    """Softmax cross-entropy between logits and dense (one-hot or soft) labels, as optax's.

    Parameters
    ----------
    logits : array of float
        Unnormalised log-probabilities.
    labels : array
        Target distribution per example, logits' shape (broadcast to it); differentiable.
    axis : int, tuple of int or None, default -1
        The class axis (axes; None: all).
    where : array of bool, optional
        Examples (batch shape) or elements (logits' shape) to include.

    Returns
    -------
    array, logits' shape without ``axis``
        ``-sum(labels * log_softmax(logits))`` per example (right when labels do not sum
        to 1, too).

    Examples
    --------
    >>> import jax.numpy as jnp, fastxent.jax as fxj
    >>> fxj.softmax_cross_entropy(jnp.array([[2.0, 1.0, 0.1]]), jnp.array([[1.0, 0, 0]]))
    Array([0.41703], dtype=float32)
    """
    logits = jnp.asarray(logits)
    dt = _compute_dtype(logits)
    labels = jnp.broadcast_to(jnp.asarray(labels, dtype=dt), logits.shape)
    axes = _class_axes(axis, logits.ndim)
    rows, elems = _prepare_where(where, logits, axes)
    x = _classes_last(logits.astype(dt), axes)
    y = _classes_last(labels, axes)
    if elems is not None:
        x = jnp.where(elems, x, -jnp.inf)
        y = jnp.where(elems, y, 0.0)
    if rows is not None:
        x = jnp.where(rows[..., None], x, 0.0)
        y = jnp.where(rows[..., None], y, 0.0)
    loss = _dense_core(x, y)
    if rows is not None:
        loss = jnp.where(rows, loss, 0.0)
    return loss.astype(logits.dtype)


def sigmoid_binary_cross_entropy(logits, labels):
    """Elementwise sigmoid cross-entropy, as optax's.

    Parameters
    ----------
    logits : array of float
        Log-odds.
    labels : array
        Targets in [0, 1] (any values accepted), broadcast with logits; differentiable.

    Returns
    -------
    array, the broadcast shape
        ``-labels log sigmoid(logits) - (1 - labels) log sigmoid(-logits)``.

    Examples
    --------
    >>> import jax.numpy as jnp, fastxent.jax as fxj
    >>> fxj.sigmoid_binary_cross_entropy(jnp.array([0.0]), jnp.array([1.0]))
    Array([0.6931472], dtype=float32)
    """
    logits = jnp.asarray(logits)
    dt = _compute_dtype(logits)
    x, y = jnp.broadcast_arrays(logits.astype(dt), jnp.asarray(labels, dtype=dt))
    if x.ndim == 0:
        return _sigmoid_core(x.reshape(1), y.reshape(1)).reshape(()).astype(logits.dtype)
    return _sigmoid_core(x, y).astype(logits.dtype)
