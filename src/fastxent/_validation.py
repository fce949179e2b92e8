"""The boundary: every check and every error message, and the one normalisation point.

Whatever the user passes becomes a :class:`Problem`: 2-D C-contiguous ``(n, C)`` float32 or
float64 logits with the class axis last, labels in the matching canonical form (dense of the
same shape and dtype, or 1-D ``np.intp``), options checked and converted once. A copy is
made only when the layout or dtype requires one. Errors name the argument, echo the value
and say how to fix it.
"""

import operator

import numpy as np

REDUCTIONS = ("none", "sum", "mean")
#: Length-0 arrays meaning "absent" in the kernel contract (no class weights, no lse to
#: read or write), per dtype. Writeable: forward kernels type the lse slot as an output.
ABSENT = {np.dtype(t): np.empty(0, t) for t in (np.float32, np.float64)}
_FLOATS = (np.float32, np.float64)


class Problem:
    """One normalised call: canonical arrays plus what is needed to shape the results."""

    __slots__ = ("kind", "x", "shape", "axis", "lead", "dtype", "cw", "eps", "z",
                 "has_ignore", "ignore_index", "labels", "raw_labels")

    def __init__(self, kind, x, shape, axis, lead, cw=None, eps=0.0, z=0.0, has_ignore=False,
                 ignore_index=0):
        self.kind, self.x, self.shape, self.axis, self.lead = kind, x, shape, axis, lead
        self.dtype = x.dtype
        self.cw, self.eps, self.z = cw, eps, z
        self.has_ignore, self.ignore_index = has_ignore, ignore_index
        self.labels = self.raw_labels = None

    @property
    def n_rows(self):
        return self.x.shape[0]

    @property
    def n_classes(self):
        return self.x.shape[1]


# ------------------------------------------------------------------------------ arrays

def as_float_array(a, name):
    """float32/float64 kept; float16 computed in float32; anything else is a TypeError."""
    a = np.asarray(a)
    dtype = a.dtype
    if dtype.type in _FLOATS:
        return a
    if dtype == np.float16:
        return a.astype(np.float32)
    kind = {"i": "integer", "u": "unsigned integer", "b": "bool", "c": "complex",
            "O": "object", "U": "string", "S": "bytes", "f": "extended-precision float"}.get(
                dtype.kind, dtype.kind)
    raise TypeError(
        f"{name} has dtype {dtype} ({kind}); logits must be floating point: cast with "
        f"{name}.astype(np.float32) or np.float64")


def normalize_axis(axis, ndim, name="axis"):
    try:
        axis = operator.index(axis)
    except TypeError:
        raise TypeError(f"{name} must be an int; got {axis!r}") from None
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"{name}={axis} is out of range for logits with {ndim} dimensions; "
            f"use an axis in [{-ndim}, {ndim - 1}]")
    return axis % ndim


def check_logits(logits, axis, name="logits"):
    x = as_float_array(logits, name)
    if x.ndim == 0:
        raise ValueError(
            f"{name} is a 0-d array (a scalar); softmax needs a class axis: pass an array of "
            f"shape (..., n_classes)")
    axis = normalize_axis(axis, x.ndim)
    if x.shape[axis] == 0:
        raise ValueError(
            f"{name} has shape {x.shape}: zero classes along axis {axis}; softmax needs at "
            f"least one class")
    return x, axis


def to_rows(a, axis, dtype=None):
    """Move ``axis`` last and flatten the rest: a 2-D C-contiguous view or (if needed) copy."""
    if a.ndim == 2 and axis == 1 and a.flags.c_contiguous and (dtype is None or a.dtype == dtype):
        return a  # already canonical: the common case, kept cheap
    if axis != a.ndim - 1:
        a = np.moveaxis(a, axis, -1)
    a = np.ascontiguousarray(a, dtype=dtype)
    return a.reshape(-1, a.shape[-1]) if a.ndim != 2 else a


def lead_shape(shape, axis):
    return shape[:axis] + shape[axis + 1:]


# ------------------------------------------------------------------------------ labels

def _label_kind(labels, name):
    if labels.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} has dtype {labels.dtype}; labels must be numeric (float, int or bool)")


def dense_labels(labels, x, axis, name="labels"):
    y = np.asarray(labels)
    _label_kind(y, name)
    if y.shape != x.shape:
        lead = lead_shape(x.shape, axis)
        if y.dtype.kind in "iu" and y.shape in (lead, lead + (1,)):
            raise ValueError(
                f"{name} has shape {y.shape} but logits has shape {x.shape}: these look like "
                f"integer class indices; use sparse_softmax_cross_entropy_with_logits (or "
                f"SparseSoftmaxCrossEntropy) for them, or one-hot encode them")
        raise ValueError(
            f"{name} has shape {y.shape} but logits has shape {x.shape}; dense labels must "
            f"match logits (integer class indices go to sparse_softmax_cross_entropy_with_logits)")
    return to_rows(y, axis, dtype=x.dtype)


def sparse_labels(labels, x, axis, name="labels"):
    t = np.asarray(labels)
    if t.dtype == np.intp and t.ndim == 1 and x.ndim == 2 and t.shape[0] == x.shape[1 - axis]:
        return np.ascontiguousarray(t), t  # already canonical
    lead = lead_shape(x.shape, axis)
    if t.shape != lead:
        if t.shape == lead + (1,):
            t = t.reshape(lead)
        elif t.shape == x.shape:
            raise ValueError(
                f"{name} has shape {t.shape}, the shape of logits: these look like one-hot or "
                f"probability labels; use softmax_cross_entropy_with_logits (or "
                f"SoftmaxCrossEntropy) for them, or pass labels.argmax(axis={axis})")
        else:
            raise ValueError(
                f"{name} has shape {t.shape} but logits has shape {x.shape}; integer labels "
                f"must have logits' shape without axis {axis}, i.e. {lead} (a trailing size-1 "
                f"axis is accepted)")
    kind = t.dtype.kind
    if kind == "f":
        whole = np.isfinite(t) & (t == np.round(t))
        if not whole.all():
            bad = np.flatnonzero(~whole.reshape(-1))
            pos = np.unravel_index(bad[0], t.shape) if t.ndim else ()
            raise TypeError(
                f"{name} must hold integer class indices; {name}[{_fmt_pos(pos)}] = "
                f"{t.reshape(-1)[bad[0]].item()!r} is not a whole number ({bad.size} such values); "
                f"cast with {name}.astype(int) if you meant it")
        if t.size and np.abs(t).max() >= 2.0 ** 62:
            raise ValueError(f"{name} holds values too large to be class indices "
                             f"(max |label| = {np.abs(t).max().item()!r})")
    elif kind == "u" and t.size and t.dtype.itemsize >= 8 and t.max() > np.iinfo(np.intp).max:
        raise ValueError(f"{name} holds values too large to be class indices "
                         f"(max = {t.max().item()!r}); labels must be in [0, n_classes)")
    elif kind not in "iuf":
        raise TypeError(
            f"{name} has dtype {t.dtype}; sparse labels must be integer class indices "
            f"(cast with {name}.astype(int))")
    # Labels have no class axis, so their C-order flattening already matches the rows.
    return np.ascontiguousarray(t, dtype=np.intp).reshape(-1), t


def _fmt_pos(pos):
    return ", ".join(str(int(i)) for i in pos)


def raise_bad_labels(raw, n_classes, has_ignore, ignore_index, n_bad, name="labels"):
    """Turn a kernel's bad-label count into an error that names the first bad position."""
    t = np.asarray(raw).astype(np.intp).reshape(-1)
    bad = (t < 0) | (t >= n_classes)
    if has_ignore:
        bad &= t != ignore_index
    first = int(np.flatnonzero(bad)[0])
    pos = np.unravel_index(first, np.shape(raw)) if np.ndim(raw) else ()
    hint = f" or equal ignore_index={ignore_index}" if has_ignore else (
        "; to skip padding rows pass ignore_index=<their label>")
    raise ValueError(
        f"{name}[{_fmt_pos(pos)}] = {np.asarray(raw).reshape(-1)[first]} is not a class "
        f"index: labels must be in [0, {n_classes}){hint} ({n_bad} bad label"
        f"{'s' if n_bad != 1 else ''} in all)")


# ----------------------------------------------------------------------------- options

def check_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"reduction={reduction!r} is not one of {', '.join(map(repr, REDUCTIONS))}")
    return reduction


def check_fraction(value, name):
    if value == 0.0 and type(value) in (float, int):
        return 0.0
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a float in [0, 1]; got {value!r}") from None
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name}={v!r} is outside [0, 1]; use e.g. {name}=0.1")
    return v


def check_nonneg(value, name):
    if value == 0.0 and type(value) in (float, int):
        return 0.0
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a non-negative float; got {value!r}") from None
    if not (v >= 0.0 and np.isfinite(v)):
        raise ValueError(f"{name}={v!r} must be finite and >= 0 (e.g. {name}=1e-4)")
    return v


def check_ignore_index(ignore_index, name="ignore_index"):
    if ignore_index is None:
        return False, 0
    try:
        return True, operator.index(ignore_index)
    except TypeError:
        raise TypeError(f"{name} must be an int or None; got {ignore_index!r}") from None


def class_vector(values, n_classes, dtype, name, scalar_ok=False):
    """A per-class weight vector of length C (length 0 for None): finite and >= 0."""
    if values is None:
        return ABSENT[dtype]
    w = np.asarray(values)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric; got dtype {w.dtype}")
    if scalar_ok and w.ndim == 0:
        w = np.full(n_classes, w, dtype=dtype)
    if w.shape != (n_classes,):
        raise ValueError(
            f"{name} has shape {w.shape} but logits have {n_classes} classes; pass one weight "
            f"per class, shape ({n_classes},)" + (" or a scalar" if scalar_ok else ""))
    w = np.ascontiguousarray(w, dtype=dtype)
    if not (np.isfinite(w).all() and (w >= 0).all()):
        bad = int(np.flatnonzero(~(np.isfinite(w) & (w >= 0)))[0])
        raise ValueError(f"{name}[{bad}] = {w[bad].item()!r}; weights must be finite and >= 0")
    return w


def per_example(values, lead, dtype, name):
    """A per-example array (broadcast to ``lead``) flattened to rows, or None."""
    if values is None:
        return None
    a = np.asarray(values)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric; got dtype {a.dtype}")
    try:
        a = np.broadcast_to(a, lead)
    except ValueError:
        raise ValueError(
            f"{name} has shape {a.shape}, which does not broadcast to the per-example loss "
            f"shape {lead}; pass one value per example") from None
    a = np.ascontiguousarray(a, dtype=dtype).reshape(-1)
    if not np.isfinite(a).all():
        bad = int(np.flatnonzero(~np.isfinite(a))[0])
        raise ValueError(f"{name} holds a non-finite value ({a[bad].item()!r} at flat index {bad}); "
                         f"weights and upstream gradients must be finite")
    return a


def elementwise(values, shape, dtype, name):
    """Sigmoid weights / upstream gradients: ``(n, 1)`` per example or ``(n, C)`` per element.

    A 1-D..k-D array matching the leading dims of ``shape`` is per example (Keras' sample
    weights); anything else must broadcast to ``shape`` (NumPy rules).
    """
    if values is None:
        return None
    a = np.asarray(values)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric; got dtype {a.dtype}")
    n_rows = int(np.prod(shape[:-1], dtype=np.int64))
    if 0 < a.ndim < len(shape) and a.shape == shape[:a.ndim]:
        a = a.reshape(a.shape + (1,) * (len(shape) - a.ndim))
    try:
        target = shape[:-1] + (1,) if a.ndim and a.shape[-1] == 1 or a.ndim == 0 else shape
        a = np.broadcast_to(a, target)
    except ValueError:
        raise ValueError(
            f"{name} has shape {np.shape(values)}, which neither matches the leading dims of "
            f"logits {shape} (per example) nor broadcasts to it (per element)") from None
    a = np.ascontiguousarray(a, dtype=dtype).reshape(n_rows, target[-1])
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds non-finite values; weights and upstream gradients "
                         f"must be finite")
    return a


def check_out(out, shape, dtype, name):
    """A caller's output buffer: right shape, dtype and writeable (else a clear error)."""
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy array; got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"{name} has shape {out.shape}; expected {shape}")
    if out.dtype != dtype:
        raise ValueError(f"{name} has dtype {out.dtype}; expected {np.dtype(dtype)} (the "
                         f"result dtype for these logits)")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only; pass a writeable array (e.g. np.empty_like)")
    return out


# ------------------------------------------------------------------------------ problems

def softmax_problem(labels, logits, axis, sparse, *, label_smoothing=0.0, class_weight=None,
                    z_loss=0.0, ignore_index=None):
    x, axis = check_logits(logits, axis)
    rows = to_rows(x, axis)
    p = Problem("sparse" if sparse else "dense", rows, x.shape, axis,
                lead_shape(x.shape, axis) if x.ndim != 2 else (x.shape[1 - axis],),
                class_vector(class_weight, rows.shape[1], rows.dtype, "class_weight"),
                check_fraction(label_smoothing, "label_smoothing"),
                check_nonneg(z_loss, "z_loss"))
    if sparse:
        p.has_ignore, p.ignore_index = check_ignore_index(ignore_index)
        p.labels, p.raw_labels = sparse_labels(labels, x, axis)
    elif labels is not None:
        p.labels = dense_labels(labels, x, axis)
    return p


def sigmoid_problem(labels, logits, *, label_smoothing=0.0, pos_weight=None):
    x = as_float_array(logits, "logits")
    n_classes = x.shape[-1] if x.ndim else 1  # elementwise: the last axis is the "class" axis
    n_rows = int(np.prod(x.shape[:-1], dtype=np.int64)) if x.ndim else 1
    rows = np.ascontiguousarray(x).reshape(n_rows, n_classes)
    p = Problem("sigmoid", rows, x.shape, x.ndim - 1, x.shape,
                class_vector(pos_weight, n_classes, rows.dtype, "pos_weight", scalar_ok=True),
                check_fraction(label_smoothing, "label_smoothing"))
    if labels is not None:
        y = np.asarray(labels)
        _label_kind(y, "labels")
        if y.shape != x.shape:
            raise ValueError(
                f"labels has shape {y.shape} but logits has shape {x.shape}; sigmoid labels "
                f"are per element and must match logits")
        p.labels = np.ascontiguousarray(y, dtype=rows.dtype).reshape(rows.shape)
    return p


def like_logits(v, p, name):
    """An array of logits' shape (e.g. hessp's ``v``) in the problem's canonical layout."""
    a = np.asarray(v)
    if a.shape != p.shape:
        raise ValueError(f"{name} has shape {a.shape} but logits has shape {p.shape}; "
                         f"they must match")
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric; got dtype {a.dtype}")
    return to_rows(a, p.axis, dtype=p.dtype) if a.ndim else a.reshape(1, 1).astype(p.dtype)
