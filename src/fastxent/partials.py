"""Mergeable partials of softmax cross-entropy over class shards.

When a row's classes are split across machines (a vocabulary too wide for one, a
model-parallel output layer), each shard reduces its own columns to a few numbers per row,
and those numbers merge exactly: any reduction tree (dask, an MPI or NCCL all-reduce, Spark's
``treeReduce``) gives the loss of the whole row. The backward of a shard then needs only the
merged partials (the row's logsumexp and label mass), so the gradient never leaves the shard.

Per row, with ``z`` the shard's (softcapped) logits and ``wy`` its targets (class weight
times the smoothed label, smoothing spread over *all* ``n_classes``)::

    m    = max_c z_c                     (the shard's maximum)
    logs = log sum_c exp(z_c - m)        (so the shard's logsumexp is m + logs)
    mass = sum_c wy_c                    (the label mass S)
    gap  = sum_c wy_c (m - z_c)          (= mass m - sum_c wy_c z_c, without cancellation)

Two shards merge (associative and commutative, so any tree gives the same value up to
rounding)::

    M    = max(m1, m2)
    logs = log(exp(logs1 + m1 - M) + exp(logs2 + m2 - M))
    mass = mass1 + mass2
    gap  = gap1 + mass1 (M - m1) + gap2 + mass2 (M - m2)

and the whole row finishes as ``lse = M + logs``, ``loss = mass logs + gap + z_loss lse^2``,
``d loss / d z_c = (mass + 2 z_loss lse) exp(z_c - lse) - wy_c``. This is Megatron-LM's
vocabulary-parallel cross-entropy with smoothing and class weights exact across shards (the
smoothing term ``eps / n_classes`` and the class weights enter ``mass`` and ``gap`` shard by
shard), in a single merge instead of two or three all-reduces.

The partials are a NumPy structured array of shape ``(n_rows,)`` and dtype
:data:`PARTIALS_DTYPE` (fields ``m``, ``logs``, ``mass``, ``gap`` in float64 and ``dropped``,
the rows that ``ignore_index`` leaves out); they pickle, concatenate and travel like any
array. ``logs`` of a shard comes from the compiled kernels (the loss of the shard against its
own arg-max, which is ``log1p`` of the other classes' share: exact for confident rows);
``mass`` and ``gap`` are label-side sums in float64 (NumPy, blocked so a block stays in
cache); the shard backward is the kernels' one-pass saved-logsumexp backward.

Examples
--------
>>> import numpy as np, fastxent as fx
>>> from fastxent import partials as P
>>> x = np.array([[2.0, 1.0, 0.1, -1.0]]); t = np.array([2])
>>> left = P.sparse_softmax_partials(t, x[:, :2], class_offset=0, n_classes=4)
>>> right = P.sparse_softmax_partials(t, x[:, 2:], class_offset=2, n_classes=4)
>>> loss, lse = P.finalize_partials(P.merge_partials(left, right))
>>> np.allclose(loss, fx.sparse_softmax_cross_entropy_with_logits(t, x))
True
>>> g = P.sparse_softmax_shard_gradient(t, x[:, 2:], P.merge_partials(left, right),
...                                     class_offset=2, n_classes=4)
>>> np.allclose(g, fx.SparseSoftmaxCrossEntropy(reduction="none").gradient(t, x)[:, 2:])
True
"""

import numpy as np

from . import _boundary as B
from . import _engine
from .losses import sparse_softmax_cross_entropy_with_logits

__all__ = ["PARTIALS_DTYPE", "softmax_partials", "sparse_softmax_partials", "merge_partials",
           "reduce_partials", "finalize_partials", "softmax_shard_gradient",
           "sparse_softmax_shard_gradient", "mean_denominator"]

#: The record of one row's partials (see the module docstring).
PARTIALS_DTYPE = np.dtype([("m", np.float64), ("logs", np.float64), ("mass", np.float64),
                           ("gap", np.float64), ("dropped", np.bool_)])

# Integer labels inside a shard call: rows whose target is in another shard, and ignored rows
# (two values no local class index can take, so no global label can be mistaken for them).
_ELSEWHERE, _IGNORED = -1, -2
# Rows per float64 block of the label-side sums (~512 KB: the block stays in L2).
_BLOCK_ELEMENTS = 1 << 16


# ----------------------------------------------------------------------------- boundary

def _shard_logits(logits, class_offset, n_classes):
    x, _ = B.check_logits(logits, -1)
    if x.ndim != 2:
        raise ValueError(f"logits has shape {x.shape}; a class shard is 2-D (n_rows, "
                         f"shard_classes): reshape the leading dimensions into rows first")
    x = B.to_rows(x, 1)
    width = x.shape[1]
    offset = B.check_int(class_offset, "class_offset")
    C = offset + width if n_classes is None else B.check_int(n_classes, "n_classes")
    if offset < 0 or offset + width > C:
        raise ValueError(f"class_offset={offset} with {width} shard classes does not fit in "
                         f"n_classes={C}; the shard's columns must be classes "
                         f"[class_offset, class_offset + {width}) of [0, n_classes)")
    return x, offset, C


def _shard_weights(class_weight, offset, width, C, dtype):
    """The shard's slice of the full (C,) class weights (validated as the losses do)."""
    if class_weight is None:
        return None
    if np.shape(class_weight) == (width,):  # the shard's own slice
        return B.class_vector(class_weight, width, dtype, "class_weight")
    w = B.class_vector(class_weight, C, dtype, "class_weight")
    return w[offset:offset + width]


def _local_labels(labels, x, offset, C, ignore_index):
    """(labels local to the shard with the sentinels above, ignored rows, raw t) after the
    global range check (labels in [0, C) or ignore_index)."""
    t, raw = B.integer_labels(labels, x, 1)
    ignored = (t == ignore_index) if ignore_index is not None else np.zeros(t.shape, bool)
    bad = ((t < 0) | (t >= C)) & ~ignored
    if bad.any():
        B.raise_bad_labels(raw, C, ignore_index, int(np.count_nonzero(bad)))
    local = t - offset
    inside = (local >= 0) & (local < x.shape[1]) & ~ignored
    local = np.where(inside, local, _ELSEWHERE)
    local[ignored] = _IGNORED
    return np.ascontiguousarray(local, dtype=np.intp), ignored, inside


def _capped(x, cap):
    """The softcapped logits (as the kernels: ``cap tanh(x / cap)``), float64."""
    z = x.astype(np.float64)
    return z if not cap else cap * np.tanh(z / cap)


# ----------------------------------------------------------------------------- partials

def _logs_and_max(x, cap, backend, n_threads):
    """(m, logs) per row: ``logs`` is the kernels' loss of each row against its own arg-max
    (``log1p`` of the others' share, exact for confident rows)."""
    n = x.shape[0]
    if n == 0:
        return np.empty(0), np.empty(0)
    a = np.argmax(x, axis=1)
    m = _capped(x[np.arange(n), a], cap)
    logs = sparse_softmax_cross_entropy_with_logits(
        a, x, logit_softcap=cap or None, check="off", backend=backend,
        n_threads=n_threads).astype(np.float64)
    empty = m == -np.inf  # every class -inf: s = 0 (not a NaN from -inf - -inf)
    logs[empty] = -np.inf
    return m, logs


def _pack(m, logs, mass, gap, dropped):
    out = np.empty(m.shape, PARTIALS_DTYPE)
    out["m"], out["logs"], out["mass"], out["gap"], out["dropped"] = m, logs, mass, gap, dropped
    return out


def _masked_gap(m, x, cap, wy_block, rows):
    """sum_c wy_c (m - z_c) over rows, in float64 blocks; terms with wy_c = 0 are 0 (so a
    -inf logit without a target contributes nothing)."""
    n, width = x.shape
    gap = np.empty(n)
    mass = np.empty(n)
    step = max(1, _BLOCK_ELEMENTS // max(width, 1))
    with np.errstate(invalid="ignore", over="ignore"):
        for r0 in range(0, n, step):
            r1 = min(n, r0 + step)
            wy = wy_block(r0, r1)
            d = m[r0:r1, None] - _capped(x[r0:r1], cap)
            gap[r0:r1] = np.where(wy != 0, wy * d, 0.0).sum(axis=1)
            mass[r0:r1] = wy.sum(axis=1)
    return mass, gap


def sparse_softmax_partials(labels, logits, *, class_offset=0, n_classes=None,
                            ignore_index=None, label_smoothing=0.0, class_weight=None,
                            logit_softcap=None, backend=None, n_threads=None):
    """Partials of one class shard, integer labels.

    Parameters
    ----------
    labels : array_like of int, shape (n_rows,)
        Global class indices in ``[0, n_classes)`` (or ``ignore_index``); targets outside
        this shard's columns contribute only their smoothing here.
    logits : array_like of float, shape (n_rows, shard_classes)
        Columns ``[class_offset, class_offset + shard_classes)`` of the full logits.
    class_offset : int, default 0
        The global index of the shard's first class.
    n_classes : int, optional
        Classes of the whole row (smoothing spreads over them); default
        ``class_offset + shard_classes``.
    ignore_index, label_smoothing, logit_softcap
        As in :func:`fastxent.sparse_softmax_cross_entropy_with_logits`.
    class_weight : array_like, shape (n_classes,) or (shard_classes,), optional
        The weights of all classes (each shard reads its slice), or the shard's slice.
    backend, n_threads
        Kernel backend and threads for the shard's pass.

    Returns
    -------
    ndarray of dtype :data:`PARTIALS_DTYPE`, shape (n_rows,)
    """
    opts = B.Options(label_smoothing, None, 0.0, logit_softcap, ignore_index, "none", "off",
                     backend, n_threads)
    x, offset, C = _shard_logits(logits, class_offset, n_classes)
    local, ignored, inside = _local_labels(labels, x, offset, C, opts.ignore_index)
    n, width = x.shape
    w = _shard_weights(class_weight, offset, width, C, np.dtype(np.float64))
    m, logs = _logs_and_max(x, opts.softcap, opts.backend, opts.n_threads)
    eps, cap = opts.eps, opts.softcap
    rows = np.flatnonzero(inside)
    wt = np.zeros(n)
    wt[rows] = (1.0 - eps) * (w[local[rows]] if w is not None else 1.0)
    zt = np.zeros(n)
    zt[rows] = _capped(x[rows, local[rows]], cap)
    with np.errstate(invalid="ignore"):
        gap = np.where(wt != 0, wt * (m - zt), 0.0)
    mass = wt
    if eps and n:
        ws = w if w is not None else np.ones(width)
        smooth = (eps / C) * ws
        s_mass, s_gap = _masked_gap(m, x, cap, lambda r0, r1: np.broadcast_to(
            smooth, (r1 - r0, width)), None)
        keep = ~ignored
        mass = mass + np.where(keep, s_mass, 0.0)
        gap = gap + np.where(keep, s_gap, 0.0)
    return _pack(m, logs, mass, gap, ignored)


def softmax_partials(labels, logits, *, class_offset=0, n_classes=None, label_smoothing=0.0,
                     class_weight=None, logit_softcap=None, backend=None, n_threads=None):
    """Partials of one class shard, dense (one-hot or soft) labels.

    Parameters
    ----------
    labels : array_like, shape (n_rows, shard_classes) or (1, shard_classes)
        The shard's columns of the labels.
    logits : array_like of float, shape (n_rows, shard_classes)
        The shard's columns of the logits.
    class_offset, n_classes, label_smoothing, class_weight, logit_softcap, backend, n_threads
        As in :func:`sparse_softmax_partials`.

    Returns
    -------
    ndarray of dtype :data:`PARTIALS_DTYPE`, shape (n_rows,)
    """
    opts = B.Options(label_smoothing, None, 0.0, logit_softcap, None, "none", "off", backend,
                     n_threads)
    x, offset, C = _shard_logits(logits, class_offset, n_classes)
    y = B.dense_labels(labels, x, 1)
    n, width = x.shape
    w = _shard_weights(class_weight, offset, width, C, np.dtype(np.float64))
    m, logs = _logs_and_max(x, opts.softcap, opts.backend, opts.n_threads)
    eps = opts.eps

    def wy(r0, r1):
        yb = y[r0:r1] if y.shape[0] != 1 else np.broadcast_to(y, (r1 - r0, width))
        t = yb.astype(np.float64)
        if eps:
            t = (1.0 - eps) * t + eps / C
        return t * w if w is not None else t
    mass, gap = _masked_gap(m, x, opts.softcap, wy, None)
    return _pack(m, logs, mass, gap, np.zeros(n, bool))


# ------------------------------------------------------------------------------- merging

def _check_partials(p, name):
    p = np.asarray(p)
    if p.dtype != PARTIALS_DTYPE:
        raise TypeError(f"{name} has dtype {p.dtype}; expected partials of dtype "
                        f"fastxent.partials.PARTIALS_DTYPE (from *_partials or merge_partials)")
    return p


def merge_partials(a, b):
    """Merge the partials of two disjoint sets of classes of the same rows.

    Associative and commutative (exactly commutative; associative up to float64 rounding),
    so shards may be merged in any order and any tree.

    Parameters
    ----------
    a, b : ndarray of dtype :data:`PARTIALS_DTYPE`
        Partials of the same rows (broadcasting shapes).

    Returns
    -------
    ndarray of dtype :data:`PARTIALS_DTYPE`
    """
    a, b = _check_partials(a, "a"), _check_partials(b, "b")
    ma, mb = a["m"], b["m"]
    M = np.maximum(ma, mb)  # a NaN row stays NaN
    with np.errstate(invalid="ignore"):
        la = np.where(ma == -np.inf, -np.inf, a["logs"] + (ma - M))
        lb = np.where(mb == -np.inf, -np.inf, b["logs"] + (mb - M))
        ga = a["gap"] + np.where(a["mass"] != 0, a["mass"] * (M - ma), 0.0)
        gb = b["gap"] + np.where(b["mass"] != 0, b["mass"] * (M - mb), 0.0)
        return _pack(M, np.logaddexp(la, lb), a["mass"] + b["mass"], ga + gb,
                     a["dropped"] | b["dropped"])


def reduce_partials(p, axis=-1, keepdims=False):
    """Merge partials along ``axis`` (a pairwise tree: log2 depth, in the order given).

    Parameters
    ----------
    p : ndarray of dtype :data:`PARTIALS_DTYPE`
        E.g. shape (n_rows, n_shards).
    axis : int, default -1
    keepdims : bool, default False

    Returns
    -------
    ndarray of dtype :data:`PARTIALS_DTYPE`
    """
    p = _check_partials(p, "p")
    axis = B.normalize_axis(axis, p.ndim, xname="p")
    p = np.moveaxis(p, axis, -1)
    if p.shape[-1] == 0:
        raise ValueError("reduce_partials over an empty axis: there is nothing to merge")
    while p.shape[-1] > 1:
        k = p.shape[-1]
        head = merge_partials(p[..., 0:k - 1:2], p[..., 1:k:2])
        p = np.concatenate([head, p[..., k - 1:]], axis=-1) if k % 2 else head
    p = p[..., 0]
    return np.expand_dims(p, axis) if keepdims else p


def finalize_partials(partials, z_loss=0.0):
    """Per-row loss and logsumexp of merged partials (all of a row's classes).

    Parameters
    ----------
    partials : ndarray of dtype :data:`PARTIALS_DTYPE`
    z_loss : float >= 0, default 0
        Adds ``z_loss * lse**2`` per row (PaLM).

    Returns
    -------
    loss, lse : ndarray of float64, partials' shape
        ``loss = mass logs + gap + z_loss lse^2`` (0 for rows ``ignore_index`` drops; not
        multiplied by sample weights) and ``lse = m + logs``.
    """
    p = _check_partials(partials, "partials")
    z = B.check_nonneg(z_loss, "z_loss")
    m, logs, mass = p["m"], p["logs"], p["mass"]
    with np.errstate(invalid="ignore"):
        lse = np.where(m == -np.inf, -np.inf, m + logs)
        loss = np.where(mass != 0, mass * logs, 0.0) + p["gap"]
        if z:
            loss = loss + z * lse * lse
    loss = np.where(p["dropped"], 0.0, loss)
    return loss, lse


# ------------------------------------------------------------------------------ backward

def _shard_gradient(kind, labels, logits, partials, class_offset, n_classes, grad_loss,
                    ignore_index, label_smoothing, class_weight, z_loss, logit_softcap,
                    gradient_out, backend, n_threads):
    x, offset, C = _shard_logits(logits, class_offset, n_classes)
    n, width = x.shape
    p = _check_partials(partials, "partials")
    if p.shape != (n,):
        raise ValueError(f"partials has shape {p.shape}; expected ({n},), one record per row "
                         f"of logits (the merged partials of all shards)")
    opts = B.Options(label_smoothing, None, z_loss, logit_softcap, ignore_index, "none", "off",
                     backend, n_threads)
    if kind == "integer":
        local, _, _ = _local_labels(labels, x, offset, C, opts.ignore_index)
        labels = local
        ignore = _IGNORED
    else:
        ignore = None
    _, lse = finalize_partials(p)
    coef = p["mass"] + 2.0 * opts.z * lse if opts.z else p["mass"]
    dropped = p["dropped"]
    if kind == "integer" and dropped.any():
        labels = labels.copy()
        labels[dropped] = _IGNORED
    shard_opts = B.Options(opts.eps, None, opts.z, logit_softcap, ignore, "none", "off",
                           opts.backend, opts.n_threads)
    if class_weight is not None:
        shard_opts.class_weight = _shard_weights(class_weight, offset, width, C, x.dtype)
    prob = B.softmax_problem(kind, labels, x, 1, shard_opts, grad_loss=grad_loss,
                             gradient_out=gradient_out, mixed=True)
    return _engine.shard_gradient(prob, np.ascontiguousarray(lse, x.dtype),
                                  np.ascontiguousarray(coef, x.dtype), C)


def sparse_softmax_shard_gradient(labels, logits, partials, *, class_offset=0,
                                  n_classes=None, grad_loss=None, ignore_index=None,
                                  label_smoothing=0.0, class_weight=None, z_loss=0.0,
                                  logit_softcap=None, gradient_out=None, backend=None,
                                  n_threads=None):
    """d loss_i / d logits of one class shard from the merged partials, integer labels.

    Parameters
    ----------
    labels, logits, class_offset, n_classes, ignore_index, label_smoothing, class_weight,
    logit_softcap, backend, n_threads
        As in :func:`sparse_softmax_partials` (the same values every shard used).
    partials : ndarray of dtype :data:`PARTIALS_DTYPE`, shape (n_rows,)
        The partials of *all* shards, merged.
    grad_loss : float or array_like of shape (n_rows,), optional
        Upstream gradient per row: the sample weight, times ``1 / W`` for a weighted mean
        (:func:`mean_denominator`), times the caller's upstream gradient. Default 1.
    z_loss : float >= 0, default 0
    gradient_out : ndarray, optional
        Receives the gradient (may be ``logits`` itself).

    Returns
    -------
    ndarray, logits' shape
        ``grad_loss_i ((mass_i + 2 z lse_i) exp(z_ic - lse_i) - wy_ic)`` (times the softcap's
        chain rule) in one pass over the shard (the compiled saved-logsumexp backward).
    """
    return _shard_gradient("integer", labels, logits, partials, class_offset, n_classes,
                           grad_loss, ignore_index, label_smoothing, class_weight, z_loss,
                           logit_softcap, gradient_out, backend, n_threads)


def softmax_shard_gradient(labels, logits, partials, *, class_offset=0, n_classes=None,
                           grad_loss=None, label_smoothing=0.0, class_weight=None, z_loss=0.0,
                           logit_softcap=None, gradient_out=None, backend=None, n_threads=None):
    """d loss_i / d logits of one class shard from the merged partials, dense labels.

    Parameters
    ----------
    labels, logits
        As in :func:`softmax_partials`.
    partials, class_offset, n_classes, grad_loss, label_smoothing, class_weight, z_loss,
    logit_softcap, gradient_out, backend, n_threads
        As in :func:`sparse_softmax_shard_gradient`.

    Returns
    -------
    ndarray, logits' shape
    """
    return _shard_gradient("dense", labels, logits, partials, class_offset, n_classes,
                           grad_loss, None, label_smoothing, class_weight, z_loss,
                           logit_softcap, gradient_out, backend, n_threads)


def mean_denominator(n_rows, *, labels=None, sample_weight=None, class_weight=None,
                     ignore_index=None):
    """The total weight ``W`` a ``reduction="mean"`` divides by, for a block of rows.

    Sums over row blocks (so a mean over unequal chunks is ``sum(block sums) / sum(W)``, not
    a mean of block means).

    Parameters
    ----------
    n_rows : int
        Rows in the block.
    labels : array_like of int, shape (n_rows,), optional
        Integer labels (sparse losses): the weight of a row is its sample weight times the
        class weight of its target, 0 for ``ignore_index`` (PyTorch). None for dense labels
        (the weight of a row is its sample weight).
    sample_weight : array_like, shape (n_rows,), optional
    class_weight : array_like, shape (n_classes,), optional
        Used with integer labels only (dense means divide by the sample weights: PyTorch).
    ignore_index : int, optional

    Returns
    -------
    float
    """
    w = None
    if labels is not None:
        t = np.asarray(labels).reshape(-1)
        keep = np.ones(t.shape, bool) if ignore_index is None else t != ignore_index
        if class_weight is not None:
            cw = np.asarray(class_weight, np.float64)
            w = np.where(keep, cw[np.clip(np.where(keep, t, 0), 0, cw.size - 1)], 0.0)
        elif ignore_index is not None:
            w = keep.astype(np.float64)
    if sample_weight is not None:
        sw = np.broadcast_to(np.asarray(sample_weight, np.float64).reshape(-1), (n_rows,))
        w = sw if w is None else w * sw
    return float(n_rows) if w is None else float(np.sum(w, dtype=np.float64))
