"""fastxent on dask arrays: lazy losses over row and class chunks, on any dask cluster.

``pip install "fastxent[dask]"``. The public names are fastxent's: the TensorFlow-style
softmax, sparse and sigmoid losses, :func:`logsumexp`, and the loss classes
(:class:`SoftmaxCrossEntropy`, :class:`SparseSoftmaxCrossEntropy`,
:class:`SigmoidCrossEntropy`) whose ``loss``, ``gradient`` and ``loss_gradient`` take 2-D
dask arrays (rows, classes) chunked along rows and/or classes and return dask arrays
(reductions ``"sum"`` and ``"mean"`` as 0-d dask arrays).

How the work splits:

* **Row chunks** (each block holds whole rows): every block runs the ordinary fastxent call
  (the compiled kernels, one fused pass for ``loss_gradient``); a ``"mean"`` divides the sum
  of the block totals by the total weight of all rows (:func:`fastxent.partials.mean_denominator`
  summed over the blocks), so unequal chunks weigh correctly, and the gradient of every
  block is scaled by that global ``1 / W``. A mean over nothing is 0 with a zero gradient.
* **Class chunks** (a row's classes split across blocks): each block reduces its columns to
  the mergeable partials of :mod:`fastxent.partials`, a ``dask.array.reduction`` merges them
  along the class axis (any tree), and every block's gradient comes from the merged
  partials (the row's logsumexp and label mass) in one pass of the kernels' saved-logsumexp
  backward. Label smoothing, class weights, the z-loss and the softcap stay exact.
* Sigmoid is elementwise: any chunking, block by block.

Threads: a dask worker runs as many tasks at once as it has threads, so each block runs
fastxent on **one thread** by default (the same reason dask's nanny sets
``OMP_NUM_THREADS=1``; fastxent sizes Numba's pool per call, so ``NUMBA_NUM_THREADS``, which
the nanny leaves alone, does not matter). A worker started with ``--nthreads k`` on ``c``
cores may pass ``n_threads=c // k`` to the losses here; keep ``k * n_threads <= c``. Blocks
computed on the caller's own thread (dask's synchronous scheduler) use fastxent's default.
See :func:`block_threads`.

Everything a task runs is a module-level function of this module (it pickles by reference on
any cluster), and read-only block buffers (what dask hands to tasks) are accepted by every
backend.

Examples
--------
>>> import numpy as np, dask.array as da, fastxent as fx, fastxent.dask as fxd
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(1000, 50)); t = rng.integers(0, 50, 1000)
>>> X = da.from_array(x, chunks=(300, 20)); T = da.from_array(t, chunks=300)
>>> loss, grad = fxd.SparseSoftmaxCrossEntropy(label_smoothing=0.1).loss_gradient(T, X)
>>> want, gwant = fx.SparseSoftmaxCrossEntropy(label_smoothing=0.1).loss_gradient(t, x)
>>> bool(np.isclose(loss.compute(), want)), bool(np.allclose(grad.compute(), gwant))
(True, True)
"""

import threading

import numpy as np

try:
    import dask
    import dask.array as da
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError("fastxent.dask needs dask: pip install 'fastxent[dask]' (dask[array] "
                      "and distributed)") from exc

from . import _boundary as B
from . import losses as _losses
from . import partials as _partials

__all__ = ["softmax_cross_entropy_with_logits", "sparse_softmax_cross_entropy_with_logits",
           "sigmoid_cross_entropy_with_logits", "logsumexp", "SoftmaxCrossEntropy",
           "SparseSoftmaxCrossEntropy", "SigmoidCrossEntropy", "block_threads",
           "fit_softmax_regression", "predict_softmax_regression"]


def block_threads(n_threads=None):
    """The fastxent thread count of one dask block: ``n_threads`` when given, else 1 in a
    worker or pool thread (a dask worker's threads are its share of the cores), else None
    (fastxent's default: a block computed on the calling thread, dask's synchronous
    scheduler)."""
    if n_threads is not None:
        return n_threads
    return None if threading.current_thread() is threading.main_thread() else 1


# ---------------------------------------------------------------------------- arrays

def _is_dask(a):
    return isinstance(a, da.Array)


def _as_logits(logits, axis):
    x = logits if _is_dask(logits) else da.asarray(np.asarray(logits))
    if x.ndim != 2:
        raise ValueError(f"logits has shape {x.shape}; fastxent.dask takes 2-D (rows, classes) "
                         f"arrays: reshape the leading dimensions into rows first")
    axis = B.normalize_axis(axis, 2)
    if axis != 1:
        raise ValueError(f"axis={axis}: fastxent.dask takes the classes along the last axis; "
                         f"pass logits.T (dask transposes lazily)")
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32 if x.dtype in (np.float16,) else np.float64)
    return x


def _rows_like(a, x, name, dtype=None):
    """A per-row array (n,) chunked like x's rows."""
    if a is None:
        return None
    a = a if _is_dask(a) else da.from_array(np.asarray(a), chunks=-1)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim == 0:
        a = da.broadcast_to(a, (x.shape[0],))
    if a.ndim != 1 or a.shape[0] != x.shape[0]:
        raise ValueError(f"{name} has shape {a.shape}; expected ({x.shape[0]},), one value per "
                         f"row of logits {x.shape}")
    if dtype is not None:
        a = a.astype(dtype)
    return a.rechunk((x.chunks[0],))


def _like(a, x, name, dtype=None):
    """An array of x's shape chunked like x (a (C,) or (1, C) row is broadcast lazily)."""
    a = a if _is_dask(a) else da.from_array(np.asarray(a), chunks=-1)
    if a.shape != x.shape:
        try:
            a = da.broadcast_to(a, x.shape)
        except ValueError:
            raise ValueError(f"{name} has shape {a.shape} but logits has shape {x.shape}; "
                             f"they must match (or broadcast)") from None
    if dtype is not None:
        a = a.astype(dtype)
    return a.rechunk(x.chunks)


def _class_vector(w, x):
    """(C,) per-class values as a dask array chunked like x's classes (None stays None)."""
    if w is None:
        return None
    w = np.asarray(w, x.dtype)
    if w.ndim == 0:
        w = np.full(x.shape[1], w, x.dtype)
    return da.from_array(w, chunks=(x.chunks[1],))


def _offsets(x):
    starts = np.cumsum((0,) + x.chunks[1][:-1]).astype(np.int64)
    return da.from_array(starts, chunks=1)


# ---------------------------------------------------------------------------- block tasks

def _make_loss(kind, opts, reduction, n_threads, cw=None):
    kw = dict(opts, reduction=reduction, n_threads=block_threads(n_threads))
    if cw is not None:
        kw["pos_weight" if kind == "sigmoid" else "class_weight"] = cw
    cls = {"dense": _losses.SoftmaxCrossEntropy, "integer": _losses.SparseSoftmaxCrossEntropy,
           "sigmoid": _losses.SigmoidCrossEntropy}[kind]
    return cls(**kw)


def _block_total(loss_fn, *args, **kw):
    """A block's weighted loss total in float64, shaped (1, 1) for the block grid."""
    total = np.zeros((), np.float64)
    loss_fn(*args, loss_out=total, **kw)
    return total.reshape(1, 1)


def _rows_task(op, kind, opts, reduction, n_threads, y, x, sw, g, cw):
    """One block of whole rows (softmax) or any block (sigmoid): "loss", "grad" or "fused".
    Reduced losses come back as the block's float64 total, shape (1, 1)."""
    cw = None if cw is None else np.asarray(cw)
    g = None if g is None else (g if np.ndim(g) else float(g))
    if op == "loss":
        if reduction == "none":
            out = _make_loss(kind, opts, "none", n_threads, cw).loss(y, x, sample_weight=sw)
            return out if kind == "sigmoid" else out.reshape(-1, 1)
        return _block_total(_make_loss(kind, opts, "sum", n_threads, cw).loss, y, x,
                            sample_weight=sw)
    red = "none" if reduction == "none" else "sum"
    L = _make_loss(kind, opts, red, n_threads, cw)
    if op == "grad":
        return L.gradient(y, x, sample_weight=sw, grad_loss=g)
    if red == "none":
        value, grad = L.loss_gradient(y, x, sample_weight=sw, grad_loss=g)
        value = value if kind == "sigmoid" else value.reshape(-1, 1)
    else:
        total = np.zeros((), np.float64)
        value, grad = L.loss_gradient(y, x, sample_weight=sw, grad_loss=g, loss_out=total)
        value = total.reshape(1, 1)
    return value, grad


def _first(pair):
    return pair[0]


def _second(pair):
    return pair[1]


def _denominator_task(kind, t, sw, cw, ignore_index, n_rows_per_elem):
    """The block's share of a mean's denominator, shape (1,)."""
    if kind == "integer":
        W = _partials.mean_denominator(t.shape[0], labels=t, sample_weight=sw,
                                       class_weight=cw, ignore_index=ignore_index)
    else:
        W = _partials.mean_denominator(sw.shape[0] if sw is not None else 0,
                                       sample_weight=sw)
    return np.array([W * n_rows_per_elem])


def _mean_scale(g, W):
    """grad_loss / W, or 0 for a mean over nothing (the single-machine rule)."""
    W = float(W)
    return np.array(float(g) / W if W else 0.0)


def _partials_task(kind, opts, n_classes, n_threads, y, x, offset, cw):
    fn = _partials.sparse_softmax_partials if kind == "integer" else _partials.softmax_partials
    kw = dict(class_offset=int(np.asarray(offset).reshape(-1)[0]), n_classes=n_classes,
              label_smoothing=opts.get("label_smoothing", 0.0), class_weight=cw,
              logit_softcap=opts.get("logit_softcap"), backend=opts.get("backend"),
              n_threads=block_threads(n_threads))
    if kind == "integer":
        kw["ignore_index"] = opts.get("ignore_index")
    return fn(y, x, **kw).reshape(-1, 1)


def _partials_chunk(p, axis=None, keepdims=True):
    return p


def _partials_combine(p, axis=None, keepdims=True):
    return _partials.reduce_partials(p, axis=1, keepdims=True)


def _partials_aggregate(p, axis=None, keepdims=False):
    return _partials.reduce_partials(p, axis=1, keepdims=keepdims)


def _finalize_task(p, z, which):
    return _partials.finalize_partials(p, z)[which]


def _shard_grad_task(kind, opts, n_classes, n_threads, y, x, merged, offset, scale, cw):
    fn = (_partials.sparse_softmax_shard_gradient if kind == "integer"
          else _partials.softmax_shard_gradient)
    kw = dict(class_offset=int(np.asarray(offset).reshape(-1)[0]), n_classes=n_classes,
              grad_loss=scale, label_smoothing=opts.get("label_smoothing", 0.0),
              class_weight=cw, z_loss=opts.get("z_loss", 0.0),
              logit_softcap=opts.get("logit_softcap"), backend=opts.get("backend"),
              n_threads=block_threads(n_threads))
    if kind == "integer":
        kw["ignore_index"] = opts.get("ignore_index")
    return fn(y, x, merged, **kw)


def _scale_task(rows, sw, g, factor):
    """Per-row gradient factor (float64): sample weight x upstream gradient x factor."""
    out = np.full(rows.shape[0], float(factor), np.float64)
    if sw is not None:
        out *= sw
    if g is not None:
        out *= g
    return out


def _row_loss_task(loss, sw, dtype):
    if sw is not None:
        loss = loss * sw
    return loss.astype(dtype)


def _total_task(loss, sw):
    loss = loss if sw is None else loss * sw
    return np.array([np.sum(loss, dtype=np.float64)])


def _divide(total, W, dtype):
    W = float(W)
    return np.asarray(float(total) / W if W else 0.0, dtype)


def _cast(total, dtype):
    return np.asarray(total, dtype)


# ---------------------------------------------------------------------------- losses

class _DaskLoss:
    _kind = None
    _opt_names = ()

    def __init__(self, **options):
        # validated here, on the client, by the single-machine class itself
        self._single = self._cls(**options)
        self.reduction = self._single.reduction
        self.n_threads = options.get("n_threads")
        self._opts = {k: v for k, v in options.items()
                      if k not in ("reduction", "n_threads", "class_weight", "pos_weight",
                                   "axis")}
        self._weights = options.get("pos_weight" if self._kind == "sigmoid" else "class_weight")

    def __repr__(self):
        return f"fastxent.dask.{type(self).__name__}({self._single!r})"

    # ---- inputs
    def _inputs(self, labels, logits, sample_weight, grad_loss, axis=-1):
        x = _as_logits(logits, axis)
        kind = self._kind
        if kind == "integer":
            y = _rows_like(labels, x, "labels")
            if y.dtype.kind not in "iuf":
                raise TypeError(f"labels has dtype {y.dtype}; integer labels must be class "
                                f"indices")
            y = y.astype(np.intp)
        else:
            y = _like(labels, x, "labels", x.dtype)
        if kind == "sigmoid" and sample_weight is not None and np.ndim(sample_weight) == 2 \
                and np.shape(sample_weight)[1] != 1:
            sw = _like(sample_weight, x, "sample_weight", x.dtype)
        else:
            sw = _rows_like(sample_weight, x, "sample_weight", x.dtype)
        g = grad_loss
        if g is not None and self.reduction == "none":
            if kind == "sigmoid" and np.ndim(g) == 2:
                g = _like(g, x, "grad_loss", x.dtype)
            else:
                g = _rows_like(g, x, "grad_loss", x.dtype)
        elif g is not None and np.ndim(g) != 0:
            raise ValueError(f"grad_loss has shape {np.shape(g)}, but reduction="
                             f"{self.reduction!r} gives a scalar loss; pass a scalar")
        cw = _class_vector(self._weights, x)
        return x, y, sw, g, cw

    def _denominator(self, x, y, sw):
        """The 0-d dask total weight of a mean (sum over row blocks)."""
        kind = self._kind
        per_elem = x.shape[1] if kind == "sigmoid" and (sw is None or sw.ndim == 1) else 1
        if kind == "integer":
            cw = None if self._weights is None else np.asarray(self._weights, x.dtype)
            parts = da.map_blocks(_denominator_task, kind, y, sw, cw,
                                  self._opts.get("ignore_index"), per_elem, chunks=(1,),
                                  dtype=np.float64, meta=np.empty(0))
        elif sw is not None:
            s = sw if sw.ndim == 1 else sw.sum(axis=1)
            parts = da.map_blocks(_denominator_task, kind, None, s, None, None, per_elem,
                                  chunks=(1,), dtype=np.float64, meta=np.empty(0))
        else:
            return da.from_array(np.array(float(x.shape[0] * per_elem)))
        return parts.sum()

    def _scale(self, x, y, sw, g):
        """The scalar factor of a reduced loss's gradient (0-d dask for a mean)."""
        g = 1.0 if g is None else g
        if self.reduction == "sum":
            return g
        W = self._denominator(x, y, sw)
        return da.blockwise(_mean_scale, "", g, None if not _is_dask(g) else "", W, "",
                            dtype=np.float64, meta=np.empty(()))

    def _reduce_totals(self, totals, x, y, sw):
        total = totals.sum()
        if self.reduction == "sum":
            return da.blockwise(_cast, "", total, "", x.dtype, None, dtype=x.dtype,
                                meta=np.empty((), x.dtype))
        W = self._denominator(x, y, sw)
        return da.blockwise(_divide, "", total, "", W, "", x.dtype, None, dtype=x.dtype,
                            meta=np.empty((), x.dtype))

    # ---- public
    def loss(self, labels, logits, sample_weight=None):
        """The loss: per example (``"none"``, a dask array) or a 0-d dask array.

        Parameters
        ----------
        labels, logits, sample_weight
            As for the fastxent class, as dask (or NumPy) arrays; 2-D logits (rows,
            classes), chunked along either axis or both.

        Returns
        -------
        dask.array.Array
        """
        return self._run("loss", labels, logits, sample_weight, None)

    def __call__(self, labels, logits, sample_weight=None):
        return self.loss(labels, logits, sample_weight)

    def gradient(self, labels, logits, sample_weight=None, grad_loss=None):
        """d loss / d logits, a dask array chunked like ``logits``.

        Parameters
        ----------
        labels, logits, sample_weight
            As for :meth:`loss`.
        grad_loss : float, 0-d or per-example (dask) array, optional
            The upstream gradient (per example for ``"none"``).

        Returns
        -------
        dask.array.Array
        """
        return self._run("grad", labels, logits, sample_weight, grad_loss)

    def loss_gradient(self, labels, logits, sample_weight=None, grad_loss=None):
        """``(loss, gradient)`` sharing one graph: row blocks run one fused pass; class
        blocks share one set of merged partials.

        Returns
        -------
        loss, gradient : dask.array.Array
        """
        return self._run("fused", labels, logits, sample_weight, grad_loss)

    def _run(self, op, labels, logits, sample_weight, grad_loss):
        x, y, sw, g, cw = self._inputs(labels, logits, sample_weight, grad_loss,
                                       getattr(self._single, "axis", -1))
        if self._kind != "sigmoid" and x.numblocks[1] > 1:
            return self._run_sharded(op, x, y, sw, g, cw)
        return self._run_blocks(op, x, y, sw, g, cw)

    def _run_blocks(self, op, x, y, sw, g, cw):
        kind, red = self._kind, self.reduction
        rows = kind != "sigmoid"
        yi = "i" if kind == "integer" else "ij"
        swi = None if sw is None else ("i" if sw.ndim == 1 else "ij")
        if red == "none":
            gi = None if g is None else ("i" if g.ndim == 1 else "ij")
            gs = g
        else:
            gs = self._scale(x, y, sw, g) if op != "loss" else None
            gi = None if gs is None or not _is_dask(gs) else ""
        args = (op, None, self._kind, None, self._opts, None, red, None, self.n_threads, None,
                y, yi, x, "ij", sw, swi, gs, gi, cw, None if cw is None else "j")
        if op == "loss":
            if red == "none":
                out_ind, adjust = ("ij", {}) if not rows else ("ij", {"j": 1})
                vals = da.blockwise(_rows_task, out_ind, *args, adjust_chunks=adjust,
                                    dtype=x.dtype, meta=np.empty((0, 0), x.dtype))
                return vals if not rows else vals[:, 0]
            totals = da.blockwise(_rows_task, "ij", *args,
                                  adjust_chunks={"i": 1, "j": 1}, dtype=np.float64,
                                  meta=np.empty((0, 0)))
            return self._reduce_totals(totals, x, y, sw)
        if op == "grad":
            return da.blockwise(_rows_task, "ij", *args, dtype=x.dtype,
                                meta=np.empty((0, 0), x.dtype))
        pairs = da.blockwise(_rows_task, "ij", *args, dtype=x.dtype,
                             meta=np.empty((0, 0), x.dtype))
        grad = pairs.map_blocks(_second, dtype=x.dtype, meta=np.empty((0, 0), x.dtype))
        if red == "none":
            chunks = x.chunks if not rows else (x.chunks[0], (1,) * x.numblocks[1])
            vals = pairs.map_blocks(_first, chunks=chunks, dtype=x.dtype,
                                    meta=np.empty((0, 0), x.dtype))
            return (vals if not rows else vals[:, 0]), grad
        chunks = ((1,) * x.numblocks[0], (1,) * x.numblocks[1])
        totals = pairs.map_blocks(_first, chunks=chunks, dtype=np.float64,
                                  meta=np.empty((0, 0)))
        return self._reduce_totals(totals, x, y, sw), grad

    def _run_sharded(self, op, x, y, sw, g, cw):
        kind, red, C = self._kind, self.reduction, x.shape[1]
        yi = "i" if kind == "integer" else "ij"
        off = _offsets(x)
        cwi = None if cw is None else "j"
        parts = da.blockwise(_partials_task, "ij", kind, None, self._opts, None, C, None,
                             self.n_threads, None, y, yi, x, "ij", off, "j", cw, cwi,
                             adjust_chunks={"j": 1}, align_arrays=False,
                             dtype=_partials.PARTIALS_DTYPE,
                             meta=np.empty((0, 0), _partials.PARTIALS_DTYPE))
        merged = da.reduction(parts, _partials_chunk, _partials_aggregate, axis=1,
                              combine=_partials_combine, dtype=_partials.PARTIALS_DTYPE,
                              concatenate=True, meta=np.empty((0,), _partials.PARTIALS_DTYPE))
        z = self._opts.get("z_loss", 0.0)
        loss = None
        if op in ("loss", "fused"):
            per_row = merged.map_blocks(_finalize_task, z, 0, dtype=np.float64,
                                        meta=np.empty(0))
            if red == "none":
                loss = da.map_blocks(_row_loss_task, per_row, sw, x.dtype, dtype=x.dtype,
                                     meta=np.empty(0, x.dtype))
            else:
                totals = da.map_blocks(_total_task, per_row, sw, chunks=(1,),
                                       dtype=np.float64, meta=np.empty(0))
                loss = self._reduce_totals(totals, x, y, sw)
            if op == "loss":
                return loss
        if red == "none":
            factor, gg = 1.0, g
        else:
            factor, gg = self._scale(x, y, sw, g), None
        scale = da.blockwise(_scale_task, "i", merged, "i", sw, None if sw is None else "i",
                             gg, None if gg is None else "i", factor,
                             "" if _is_dask(factor) else None, dtype=np.float64,
                             meta=np.empty(0))
        grad = da.blockwise(_shard_grad_task, "ij", kind, None, self._opts, None, C, None,
                            self.n_threads, None, y, yi, x, "ij", merged, "i", off, "j",
                            scale, "i", cw, cwi, align_arrays=False, dtype=x.dtype,
                            meta=np.empty((0, 0), x.dtype))
        return grad if op == "grad" else (loss, grad)


class SoftmaxCrossEntropy(_DaskLoss):
    """:class:`fastxent.SoftmaxCrossEntropy` over dask arrays (dense labels chunked like the
    logits). Parameters as the fastxent class."""
    _kind = "dense"
    _cls = _losses.SoftmaxCrossEntropy


class SparseSoftmaxCrossEntropy(_DaskLoss):
    """:class:`fastxent.SparseSoftmaxCrossEntropy` over dask arrays (integer labels (n,),
    chunked along rows; they are rechunked to the logits' row chunks). Parameters as the
    fastxent class."""
    _kind = "integer"
    _cls = _losses.SparseSoftmaxCrossEntropy


class SigmoidCrossEntropy(_DaskLoss):
    """:class:`fastxent.SigmoidCrossEntropy` over dask arrays (elementwise: any chunking).
    Parameters as the fastxent class."""
    _kind = "sigmoid"
    _cls = _losses.SigmoidCrossEntropy


# ---------------------------------------------------------------------------- functions

def softmax_cross_entropy_with_logits(labels, logits, axis=-1, *, label_smoothing=0.0,
                                      class_weight=None, sample_weight=None, z_loss=0.0,
                                      logit_softcap=None, reduction="none", check=None,
                                      backend=None, n_threads=None, name=None):
    """:func:`fastxent.softmax_cross_entropy_with_logits` on dask arrays (lazy)."""
    return SoftmaxCrossEntropy(axis=axis, label_smoothing=label_smoothing,
                               class_weight=class_weight, z_loss=z_loss,
                               logit_softcap=logit_softcap, reduction=reduction, check=check,
                               backend=backend, n_threads=n_threads).loss(
        labels, logits, sample_weight)


def sparse_softmax_cross_entropy_with_logits(labels, logits, axis=-1, *, ignore_index=None,
                                             label_smoothing=0.0, class_weight=None,
                                             sample_weight=None, z_loss=0.0,
                                             logit_softcap=None, reduction="none", check=None,
                                             backend=None, n_threads=None, name=None):
    """:func:`fastxent.sparse_softmax_cross_entropy_with_logits` on dask arrays (lazy)."""
    return SparseSoftmaxCrossEntropy(axis=axis, ignore_index=ignore_index,
                                     label_smoothing=label_smoothing,
                                     class_weight=class_weight, z_loss=z_loss,
                                     logit_softcap=logit_softcap, reduction=reduction,
                                     check=check, backend=backend, n_threads=n_threads).loss(
        labels, logits, sample_weight)


def sigmoid_cross_entropy_with_logits(labels, logits, *, pos_weight=None, label_smoothing=0.0,
                                      sample_weight=None, reduction="none", check=None,
                                      backend=None, n_threads=None, name=None):
    """:func:`fastxent.sigmoid_cross_entropy_with_logits` on dask arrays (lazy)."""
    return SigmoidCrossEntropy(pos_weight=pos_weight, label_smoothing=label_smoothing,
                               reduction=reduction, check=check, backend=backend,
                               n_threads=n_threads).loss(labels, logits, sample_weight)


def _lse_chunk(x, axis=None, keepdims=True, backend=None, n_threads=None):
    return _losses.logsumexp(x, axis=1, keepdims=True, backend=backend,
                             n_threads=block_threads(n_threads)).astype(np.float64)


def _lse_combine(a, axis=None, keepdims=True):
    return np.logaddexp.reduce(a, axis=1, keepdims=True)


def _lse_aggregate(a, axis=None, keepdims=False, dtype=None):
    return np.logaddexp.reduce(a, axis=1, keepdims=keepdims).astype(dtype)


def logsumexp(logits, axis=-1, keepdims=False, *, backend=None, n_threads=None, name=None):
    """:func:`fastxent.logsumexp` over the class axis of 2-D dask logits (lazy): each block's
    logsumexp from the kernels, merged across class chunks in float64.

    Parameters
    ----------
    logits : dask.array.Array, shape (n_rows, n_classes)
    axis : int, default -1
        The class axis (the last one).
    keepdims : bool, default False
    backend, n_threads
        As for :func:`fastxent.logsumexp` (``n_threads`` per block, see
        :func:`block_threads`).

    Returns
    -------
    dask.array.Array, shape (n_rows,)
    """
    x = _as_logits(logits, axis)
    from functools import partial
    return da.reduction(x, partial(_lse_chunk, backend=backend, n_threads=n_threads),
                        partial(_lse_aggregate, dtype=x.dtype), axis=1, keepdims=keepdims,
                        combine=_lse_combine, dtype=x.dtype, concatenate=True,
                        meta=np.empty((0,), x.dtype))


# ---------------------------------------------------------------------------- estimator

def _objective_task(X, y, w, params, n_classes, fit_intercept, opts, n_threads, v=None):
    """One row block of SoftmaxRegression's objective: (f, dF/dW, dF/db) summed over the
    block's rows (float64); with ``v``, the block's Hessian-vector product instead."""
    k = n_classes * X.shape[1]
    W = params[:k].reshape(n_classes, X.shape[1]).astype(X.dtype)
    Z = X @ W.T
    if fit_intercept:
        Z += params[k:].astype(X.dtype)
    L = _make_loss("integer", opts, "none", n_threads)
    if v is None:
        values, G = L.loss_gradient(y, Z, sample_weight=w, gradient_out=Z)
        f = float(np.sum(values, dtype=np.float64))
    else:
        V = v[:k].reshape(n_classes, X.shape[1]).astype(X.dtype)
        Zv = X @ V.T
        if fit_intercept:
            Zv += v[k:].astype(X.dtype)
        G = L.hessp(y, Z, Zv, sample_weight=w, hessp_out=Zv)
        f = 0.0
    gW = (G.T @ X).astype(np.float64).reshape(-1)
    gb = G.sum(axis=0, dtype=np.float64) if fit_intercept else np.empty(0)
    return f, np.concatenate([gW, gb])


class _DaskObjective:
    """SoftmaxRegression's objective over dask row blocks: each evaluation sends the
    coefficients to the workers, every block runs the fused loss-and-gradient pass where its
    rows live, and the client adds the blocks' sums (in block order: deterministic) and the
    penalty. ``X``, ``y`` and the weights never leave the workers."""

    def __init__(self, X, y, weights, n_classes, fit_intercept, l2, opts, n_threads):
        self.blocks = list(zip(X.to_delayed().ravel(), y.to_delayed().ravel(),
                               weights.to_delayed().ravel()))
        self.n_classes, self.n_features = n_classes, X.shape[1]
        self.fit_intercept, self.l2, self.opts, self.n_threads = (fit_intercept, l2, opts,
                                                                  n_threads)
        self.dtype = X.dtype
        self.last = None
        self.n_evals = 0

    def split(self, w):
        k = self.n_classes * self.n_features
        return w[:k].reshape(self.n_classes, self.n_features), (
            w[k:] if self.fit_intercept else None)

    def _sum(self, w, v=None):
        task = dask.delayed(_objective_task, pure=True)
        parts = dask.compute(*[task(Xb, yb, wb, w, self.n_classes, self.fit_intercept,
                                    self.opts, self.n_threads, v)
                               for Xb, yb, wb in self.blocks])
        f = sum(p[0] for p in parts)
        g = np.sum([p[1] for p in parts], axis=0)
        return f, g

    def _penalise(self, g, W_part):
        k = self.n_classes * self.n_features
        if self.l2:
            g[:k] += self.l2 * W_part.reshape(-1)
        return g

    def __call__(self, w):
        f, g = self._sum(w)
        W, _ = self.split(w)
        if self.l2:
            f += 0.5 * self.l2 * float(W.ravel() @ W.ravel())
        g = self._penalise(g, W)
        self.last = (f, float(np.max(np.abs(g))) if g.size else 0.0)
        self.n_evals += 1
        return f, g

    def hessp(self, w, v):
        _, hv = self._sum(w, v)
        V, _ = self.split(v)
        return self._penalise(hv, V)


def _encode_task(y, classes):
    return np.searchsorted(classes, y).astype(np.intp)


def fit_softmax_regression(est, X, y, sample_weight=None):
    """:meth:`fastxent.sklearn.SoftmaxRegression.fit` for dask ``X`` / ``y`` (what ``fit``
    calls for them): the objective's sums over row blocks run on the workers, the optimiser
    on the client; the coefficients equal the in-memory fit's (the same objective, summed
    block by block). ``X`` is rechunked to whole rows."""
    from .sklearn._compat import compute_class_weight
    est._check_params()
    X = X if _is_dask(X) else da.from_array(np.asarray(X), chunks=(max(1, len(X) // 8), -1))
    if X.ndim != 2:
        raise ValueError(f"X has shape {X.shape}; expected (n_samples, n_features)")
    dtype = np.float32 if X.dtype == np.float32 else np.float64
    X = X.astype(dtype).rechunk({1: -1})
    n_samples, n_features = X.shape
    y = y if _is_dask(y) else da.from_array(np.asarray(y), chunks=-1)
    y = y.reshape(-1).rechunk((X.chunks[0],))
    if y.shape[0] != n_samples:
        raise ValueError(f"X has {n_samples} samples but y has {y.shape[0]}")
    classes = np.unique(da.unique(y).compute())
    if len(classes) < 2:
        raise ValueError(
            f"SoftmaxRegression needs samples of at least 2 classes in the data, but the "
            f"data contains only one class: {classes[0]!r}")
    n_classes = len(classes)
    y_enc = y.map_blocks(_encode_task, classes, dtype=np.intp)
    sw = None if sample_weight is None else _rows_like(sample_weight, X, "sample_weight",
                                                       dtype)
    if sw is not None or est.class_weight is not None:
        if sw is None:
            sw = da.ones(n_samples, dtype=dtype, chunks=(X.chunks[0],))
        if est.class_weight is not None:
            if est.class_weight == "balanced":
                counts = da.bincount(y_enc, weights=sw if sample_weight is not None else None,
                                     minlength=n_classes).compute().astype(np.float64)
                cw = counts.sum() / (n_classes * counts)
            else:
                cw = compute_class_weight(est.class_weight, classes=classes, y=classes,
                                          sample_weight=None)
            sw = sw * da.from_array(np.asarray(cw).astype(dtype))[y_enc]
        sw_sum = float(sw.sum(dtype=np.float64).compute())
        weights = (sw / sw_sum).astype(dtype)
    else:
        sw_sum = float(n_samples)
        weights = da.full(n_samples, 1.0 / n_samples, dtype=dtype, chunks=(X.chunks[0],))
    l2 = 0.0 if np.isinf(est.C) else 1.0 / (est.C * sw_sum)
    X, y_enc, weights = dask.persist(X, y_enc, weights)
    opts = dict(label_smoothing=est.label_smoothing, backend=est.backend)
    objective = _DaskObjective(X, y_enc, weights, n_classes, est.fit_intercept, l2, opts,
                               est.n_threads)
    est.classes_ = classes
    est.n_features_in_ = n_features
    return est._solve(objective, n_classes, n_features, dtype)


def _predict_task(X, coef, intercept, what, classes, backend):
    Z = X.astype(np.result_type(X.dtype, coef.dtype), copy=False) @ coef.T
    Z = np.ascontiguousarray(Z)
    Z += intercept
    if what == "decision_function":
        return Z[:, 1] - Z[:, 0] if Z.shape[1] == 2 else Z
    if what == "predict":
        return classes[np.argmax(Z, axis=1)]
    fn = _losses.softmax if what == "predict_proba" else _losses.log_softmax
    return fn(Z, out=Z, backend=backend, n_threads=block_threads(None))


def predict_softmax_regression(est, X, what):
    """``decision_function`` / ``predict`` / ``predict_proba`` / ``predict_log_proba`` of a
    fitted SoftmaxRegression on dask ``X``: a lazy dask array, block by block."""
    from sklearn.utils.validation import check_is_fitted
    check_is_fitted(est)
    if X.ndim != 2 or X.shape[1] != est.n_features_in_:
        raise ValueError(f"X has shape {X.shape}; expected (n_samples, {est.n_features_in_})")
    X = X.rechunk({1: -1})
    k = len(est.classes_)
    dtype = np.result_type(X.dtype, est.coef_.dtype)
    if what == "predict":
        return X.map_blocks(_predict_task, est.coef_, est.intercept_, what, est.classes_,
                            est.backend, drop_axis=1, dtype=est.classes_.dtype,
                            meta=np.empty(0, est.classes_.dtype))
    if what == "decision_function" and k == 2:
        return X.map_blocks(_predict_task, est.coef_, est.intercept_, what, None,
                            est.backend, drop_axis=1, dtype=dtype, meta=np.empty(0, dtype))
    return X.map_blocks(_predict_task, est.coef_, est.intercept_, what, None, est.backend,
                        chunks=(X.chunks[0], (k,)), dtype=dtype, meta=np.empty((0, 0), dtype))
