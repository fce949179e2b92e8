"""The boundary: every check and every error message, and the one normalisation point.

Whatever the user passes becomes an immutable problem, in one pass: 2-D C-contiguous
``(n, C)`` float32 or float64 logits with the class axis last, labels in the matching
canonical form, options checked and converted, weights and upstream gradients in kernel
layout, and every output buffer checked (shape, dtype, writeable, native byte order, and
overlap with every input and every other output). A copy is made only when the layout,
dtype or byte order requires one. Errors name the argument, echo the value and say how to
fix it. Nothing downstream (engine, kernels) checks again.

One problem type per label kind owns what differs between them: its kernel labels, the
shape of its per-example loss, the denominator of a weighted mean, and its error for bad
labels. ``Dense``, ``Integer``, ``Sigmoid``, ``Utility``.
"""

import numbers
import operator

import numpy as np

from . import _backends, _config

REDUCTIONS = ("none", "sum", "mean")
CHECK_MODES = ("off", "warn", "raise")
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_INT64 = np.iinfo(np.int64)
_INTP = np.dtype(np.intp)


def may_overlap(a, b):
    """``np.may_share_memory(a, b)`` for two ndarrays, decided in two flag reads when both
    own their memory (distinct arrays that own their memory never overlap); else NumPy's
    bounds test."""
    if a is not b and a.flags.owndata and b.flags.owndata:
        return False
    return np.may_share_memory(a, b)


# ------------------------------------------------------------------------------ problems

class _Problem:
    """Fields every problem has (read-only by convention). Absent fields keep the class
    defaults below, so building a problem sets only what a call has."""

    x = shape = axis = lead = out_dtype = reduction = check = backend = n_threads = None
    rs = sw = loss_out = gradient_out = lse_out = hessian_out = user_x = None
    grad_loss = 1.0
    x_is_view = False
    names = ("labels", "logits")  # the user's argument names, for diagnostics
    weight_name = "class_weight"  # the user's name of cw
    y = t = cw = ignore_index = None
    eps = z = softcap = 0.0
    family = None

    @property
    def n_rows(self):
        return self.x.shape[0]

    @property
    def n_classes(self):
        return self.x.shape[1]

    @property
    def dtype(self):
        return self.x.dtype

    def unrows(self, a):
        """Canonical rows back to the user's layout (a view when possible)."""
        if self.axis == len(self.shape) - 1:
            return a.reshape(self.shape)
        return np.moveaxis(a.reshape(self.lead + (self.shape[self.axis],)), -1, self.axis)

    @property
    def canonical(self):
        """True when the user's layout is the canonical one (class axis last)."""
        return self.axis == len(self.shape) - 1


class _Softmax(_Problem):
    family = _backends.SOFTMAX
    loss_per_row = True

    def loss_shape(self):
        return self.lead


class Dense(_Softmax):
    """Dense (one-hot or soft) labels: y is (n, C), or (1, C) read for every row."""
    kind = "dense"

    def denominator(self):
        """Total weight a "mean" divides by: sample weights only (PyTorch's probability
        targets keep class weights out of the denominator)."""
        return self.n_rows if self.sw is None else float(np.sum(self.sw, dtype=np.float64))

    def raise_bad_labels(self, n_bad):  # dense labels are never out of range
        raise AssertionError("dense labels have no bad-label count")


class Integer(_Softmax):
    """Integer class labels t (n,) np.intp; ``ignore_index`` rows drop out."""
    kind = "integer"
    raw_labels = None
    labels_name = "labels"

    def denominator(self):
        """Total weight of the examples that count: sample weight times the class weight of
        the target (PyTorch), ignored and out-of-range rows 0."""
        t, C = self.t, self.n_classes
        if self.cw is None and self.sw is None:  # a count, without a float pass
            if self.ignore_index is None:
                return t.shape[0]
            return t.shape[0] - int(np.count_nonzero(t == self.ignore_index))
        w = None
        if self.cw is not None:
            w = self.cw.astype(np.float64)[np.clip(t, 0, C - 1)]  # clipped only to gather
        if self.ignore_index is not None:
            keep = t != self.ignore_index
            w = keep if w is None else np.where(keep, w, 0.0)
        if self.sw is not None:
            w = self.sw if w is None else w * self.sw
        return self.n_rows if w is None else float(np.sum(w, dtype=np.float64))

    def raise_bad_labels(self, n_bad):
        raise_bad_labels(self.raw_labels, self.n_classes, self.ignore_index, n_bad,
                         self.labels_name)


class Sigmoid(_Problem):
    """Elementwise: the last axis plays the class axis; y (n, C); cw is pos_weight."""
    family = _backends.SIGMOID
    kind = "sigmoid"
    weight_name = "pos_weight"
    loss_per_row = False
    canonical = True  # the last axis is the class axis, always

    def loss_shape(self):
        return self.shape

    def denominator(self):
        """Total weight of the elements (the sample weight of each element; n C without)."""
        if self.sw is None:
            return self.x.size
        per_row = self.sw.ndim == 1
        return float(np.sum(self.sw, dtype=np.float64)) * (self.n_classes if per_row else 1)


class Utility(_Problem):
    """logsumexp / log_softmax / softmax: logits only."""
    kind = "util"
    keepdims = False
    out = None


class Options:
    """The validated options of a loss: loss objects keep one (checked once, at
    construction), functions make one per call. Class weights are validated per logits'
    dtype and class count, once each."""

    __slots__ = ("eps", "z", "softcap", "ignore_index", "reduction", "check", "backend",
                 "n_threads", "class_weight", "pos_weight", "names", "_weights")

    def __init__(self, label_smoothing=0.0, class_weight=None, z_loss=0.0,
                 logit_softcap=None, ignore_index=None, reduction="none", check=None,
                 backend=None, n_threads=None, pos_weight=None, names=("labels", "logits"),
                 ignore_name="ignore_index"):
        from . import _plan, _threads  # the plan imports this module
        self.eps = check_fraction(label_smoothing, "label_smoothing")
        self.z = check_nonneg(z_loss, "z_loss")
        self.softcap = check_softcap(logit_softcap)
        self.ignore_index = check_ignore_index(ignore_index, ignore_name)
        self.reduction = check_reduction(reduction)
        self.check = None if check is None else check_mode(check)
        self.backend = _plan.check_name(backend)
        self.n_threads = _threads.check(n_threads)
        self.class_weight = class_weight
        self.pos_weight = pos_weight
        self.names = names
        self._weights = {}

    def weights(self, name, values, n_classes, dtype, scalar_ok=False):
        key = (name, n_classes, dtype.char)
        w = self._weights.get(key)
        if w is None and values is not None:
            w = self._weights[key] = class_vector(values, n_classes, dtype, name, scalar_ok)
        return w


# ------------------------------------------------------------------------------ arrays

def _native(a):
    """``a`` in native byte order (one conversion at the boundary, never in a kernel)."""
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))


def _dtype_name(dtype):
    """float32, bfloat16 (ml_dtypes), <U1, ...: the name a user recognises."""
    return dtype.name if dtype.kind in "biufc" or dtype.name == "bfloat16" else str(dtype)


_KIND_WORDS = {"i": "integer", "u": "unsigned integer", "b": "bool", "c": "complex",
               "O": "object", "U": "string", "S": "bytes", "M": "datetime", "m": "timedelta"}


def float_array(a, name, what="logits"):
    """float32/float64 kept; float16 and bfloat16 computed in float32; else a TypeError."""
    a = np.asarray(a)
    dtype = a.dtype
    if dtype in _FLOATS:
        return a
    if not dtype.isnative and dtype.newbyteorder("=") in _FLOATS:
        return _native(a)
    if dtype == np.float16 or dtype.name == "bfloat16":
        return a.astype(np.float32)
    if dtype.kind == "f":
        raise TypeError(f"{name} has dtype {dtype.name} (extended precision); {what} must be "
                        f"float16, bfloat16, float32 or float64: cast with "
                        f"{name}.astype(np.float64)")
    kind = _KIND_WORDS.get(dtype.kind, "not floating point")
    raise TypeError(
        f"{name} has dtype {_dtype_name(dtype)} ({kind}); {what} must be floating point: "
        f"cast with {name}.astype(np.float32) or np.float64")


def _numeric(a, name, what):
    a = _native(np.asarray(a))
    if a.dtype.kind not in "biuf" and a.dtype.name != "bfloat16":
        raise TypeError(f"{name} has dtype {_dtype_name(a.dtype)}; {what} must be numeric")
    return a


def check_int(value, name, allow_none=False):
    """A Python int from an integer-like value; bools, floats and strings are TypeErrors."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int; got the bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int{' or None' if allow_none else ''}; got "
                        f"{value!r}") from None


def normalize_axis(axis, ndim, name="axis", xname="logits"):
    axis = check_int(axis, name)
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"{name}={axis} is out of range for {xname} with {ndim} dimensions; "
            f"use an axis in [{-ndim}, {ndim - 1}]")
    return axis % ndim


def check_logits(logits, axis, name="logits"):
    """(float array, normalised axis) with at least one class."""
    x = float_array(logits, name)
    if x.ndim == 0:
        raise ValueError(
            f"{name} is a 0-d array (a scalar); softmax needs a class axis: pass an array of "
            f"shape (..., n_classes)")
    axis = normalize_axis(axis, x.ndim, xname=name)
    if x.shape[axis] == 0:
        raise ValueError(
            f"{name} has shape {x.shape}: zero classes along axis {axis}; softmax needs at "
            f"least one class")
    return x, axis


def to_rows(a, axis, dtype=None):
    """Move ``axis`` last and flatten the rest: a 2-D C-contiguous view, or (if needed) a copy."""
    if a.ndim == 2 and axis == 1 and a.flags.c_contiguous and (dtype is None or a.dtype == dtype):
        return a
    if axis != a.ndim - 1:
        a = np.moveaxis(a, axis, -1)
    a = np.ascontiguousarray(a, dtype=dtype)
    return a.reshape(-1, a.shape[-1]) if a.ndim != 2 else a


def lead_shape(shape, axis):
    return shape[:axis] + shape[axis + 1:]


# ------------------------------------------------------------------------------ labels

def dense_labels(labels, x, axis, name="labels", xname="logits"):
    """Dense labels: logits' shape, or broadcastable to it (TensorFlow). Returns (n, C), or
    (1, C) when one row is broadcast to every row (read with stride 0: no copy)."""
    if labels is None:
        raise TypeError(f"{name} is required (got None): pass one-hot or probability labels of "
                        f"{xname}' shape {x.shape}")
    y = _numeric(labels, name, "labels")
    if y.shape != x.shape:
        lead = lead_shape(x.shape, axis)
        if y.dtype.kind in "iu" and y.shape in (lead, lead + (1,)) and y.size > 1:
            raise ValueError(
                f"{name} has shape {y.shape} but {xname} has shape {x.shape}: these look like "
                f"integer class indices; use sparse_softmax_cross_entropy_with_logits (or "
                f"SparseSoftmaxCrossEntropy) for them, or one-hot encode them")
        try:
            full = np.broadcast_shapes(y.shape, x.shape)
        except ValueError:
            full = None
        if full != x.shape:
            raise ValueError(
                f"{name} has shape {y.shape} but {xname} has shape {x.shape}; dense labels must "
                f"match logits or broadcast to them (integer class indices go to "
                f"sparse_softmax_cross_entropy_with_logits)")
        y = y.reshape((1,) * (x.ndim - y.ndim) + y.shape)
        if all(s == 1 for i, s in enumerate(y.shape) if i != axis):
            # one label row for every example: the kernels read it with stride 0
            return np.ascontiguousarray(y.reshape(1, -1) if y.shape[axis] == x.shape[axis]
                                        else np.broadcast_to(y, (1,) * (x.ndim - 1)
                                                             + (x.shape[axis],)).reshape(1, -1),
                                        dtype=x.dtype)
        y = np.broadcast_to(y, x.shape)
    return to_rows(y, axis, dtype=x.dtype)


def integer_labels(labels, x, axis, name="labels", xname="logits"):
    """(t (n,) np.intp, the labels as given) for integer class labels."""
    if labels is None:
        raise TypeError(f"{name} is required (got None): pass integer class indices of shape "
                        f"{lead_shape(x.shape, axis)}")
    t = np.asarray(labels)
    if (t.dtype is _INTP or t.dtype == _INTP) and t.ndim == 1 and x.ndim == 2 and \
            axis == 1 and t.shape[0] == x.shape[0]:
        return (t if t.flags.c_contiguous else np.ascontiguousarray(t)), t
    t = _native(t)
    lead = lead_shape(x.shape, axis)
    if t.shape != lead:
        if t.shape == lead + (1,):
            t = t.reshape(lead)
        elif t.ndim == x.ndim and t.shape[axis] == 1 and lead_shape(t.shape, axis) == lead:
            t = t.reshape(lead)  # a size-1 label axis at the class axis (Keras, torch backend)
        elif t.shape == x.shape:
            raise ValueError(
                f"{name} has shape {t.shape}, the shape of {xname}: these look like one-hot or "
                f"probability labels; use softmax_cross_entropy_with_logits (or "
                f"SoftmaxCrossEntropy) for them, or pass labels.argmax(axis={axis})")
        else:
            raise ValueError(
                f"{name} has shape {t.shape} but {xname} has shape {x.shape}; integer labels "
                f"must have {xname}' shape without axis {axis}, i.e. {lead} (a size-1 axis in "
                f"place of the class axis, or a trailing one, is accepted)")
    kind = t.dtype.kind
    if kind == "f" or t.dtype.name == "bfloat16":
        t64 = t.astype(np.float64)
        whole = np.isfinite(t64) & (t64 == np.round(t64))
        if not whole.all():
            bad = np.flatnonzero(~whole.reshape(-1))
            pos = np.unravel_index(bad[0], t.shape) if t.ndim else ()
            raise TypeError(
                f"{name} must hold integer class indices; {name}[{_fmt_pos(pos)}] = "
                f"{t64.reshape(-1)[bad[0]].item()!r} is not a whole number ({bad.size} such "
                f"values); cast with {name}.astype(int) if you meant it")
        if t64.size and float(np.abs(t64).max()) >= 2.0 ** 62:
            raise ValueError(f"{name} holds values too large to be class indices "
                             f"(max |label| = {float(np.abs(t64).max())!r})")
        t = t64
    elif kind == "u" and t.size and t.dtype.itemsize >= 8 and int(t.max()) > _INT64.max:
        raise ValueError(f"{name} holds values too large to be class indices "
                         f"(max = {int(t.max())}); labels must be in [0, n_classes)")
    elif kind not in "iuf":
        raise TypeError(
            f"{name} has dtype {_dtype_name(t.dtype)}; integer labels must be integer class "
            f"indices (cast with {name}.astype(int))")
    # labels have no class axis, so their C-order flattening already matches the rows
    return np.ascontiguousarray(t, dtype=np.intp).reshape(-1), labels


def _fmt_pos(pos):
    return ", ".join(str(int(i)) for i in pos)


def raise_bad_labels(raw, n_classes, ignore_index, n_bad, name="labels"):
    """Turn a kernel's bad-label count into an error that names the first bad position."""
    raw = np.asarray(raw)
    t = raw.astype(np.float64).reshape(-1) if raw.dtype.kind == "f" else \
        raw.astype(np.int64).reshape(-1)
    bad = (t < 0) | (t >= n_classes)
    if ignore_index is not None:
        bad &= t != ignore_index
    first = int(np.flatnonzero(bad)[0])
    shape = raw.shape
    pos = np.unravel_index(first, shape) if raw.ndim else ()
    value = raw.reshape(-1)[first].item()
    hint = f" or equal ignore_index={ignore_index}" if ignore_index is not None else (
        "; to skip padding rows pass ignore_index=<their label>")
    raise ValueError(
        f"{name}[{_fmt_pos(pos)}] = {value} is not a class index: labels must be in "
        f"[0, {n_classes}){hint} ({n_bad} bad label{'s' if n_bad != 1 else ''} in all)")


# ----------------------------------------------------------------------------- options

def check_reduction(reduction):
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(
            f"reduction={reduction!r} is not one of {', '.join(map(repr, REDUCTIONS))}")
    return reduction


def _real(value, name, what):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.ndarray)):
        raise TypeError(f"{name} must be {what}; got {value!r}")
    if isinstance(value, np.ndarray):
        if value.ndim or value.dtype.kind not in "iuf":
            raise TypeError(f"{name} must be {what}; got an array of shape {value.shape}")
    return float(value)


def check_fraction(value, name):
    v = _real(value, name, "a float in [0, 1]")
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name}={v!r} is outside [0, 1]; use e.g. {name}=0.1")
    return v


def check_nonneg(value, name):
    v = _real(value, name, "a non-negative float")
    if not (v >= 0.0 and np.isfinite(v)):
        raise ValueError(f"{name}={v!r} must be finite and >= 0 (e.g. {name}=1e-4)")
    return v


def check_softcap(value, name="logit_softcap"):
    if value is None:
        return 0.0
    v = _real(value, name, "a positive float or None")
    if not (v > 0.0 and np.isfinite(v)):
        raise ValueError(f"{name}={v!r} must be a finite float > 0 (Gemma 2 uses 30.0), or "
                         f"None for no cap")
    return v


def check_ignore_index(ignore_index, name="ignore_index"):
    """A Python int (within int64: labels are int64) or None."""
    value = check_int(ignore_index, name, allow_none=True)
    if value is not None and not _INT64.min <= value <= _INT64.max:
        raise ValueError(f"{name}={value} is outside the int64 range labels are compared in; "
                         f"use a value in [{_INT64.min}, {_INT64.max}] (e.g. -100)")
    return value


#: The diagnostics default. "warn" measured above issue 18's bar (3% at 2048x32768, one
#: 10-element ufunc at 256x10): 6-12% and ~6 us on Cython, more on Numba (README).
DEFAULT_CHECK = "off"


def check_mode(check, name="check"):
    """"off", "warn" or "raise" (None: the configured default)."""
    if check is None:
        value, source = _config.current()[2]
        if value is None:
            return DEFAULT_CHECK
        check, name = value, ("FASTXENT_CHECK" if "environment" in source else "check")
    if not isinstance(check, str) or check not in CHECK_MODES:
        raise ValueError(f"{name}={check!r} is not one of 'off', 'warn', 'raise'")
    return check


def class_vector(values, n_classes, dtype, name, scalar_ok=False):
    """A per-class weight vector of length C (None when absent): finite, any sign (PyTorch)."""
    if values is None:
        return None
    w = _numeric(values, name, "weights")
    if scalar_ok and w.ndim == 0:
        w = np.full(n_classes, w, dtype=dtype)
    if w.shape != (n_classes,):
        raise ValueError(
            f"{name} has shape {w.shape} but logits have {n_classes} classes; pass one weight "
            f"per class, shape ({n_classes},)" + (" or a scalar" if scalar_ok else ""))
    w = np.ascontiguousarray(w, dtype=dtype)
    finite = np.isfinite(w)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"{name}[{bad}] = {w[bad].item()!r}; weights must be finite")
    return w


def per_example(values, lead, dtype, name):
    """Per-example values (broadcast to ``lead``; a trailing size-1 axis accepted), as rows."""
    if values is None:
        return None
    a = _numeric(values, name, "weights and upstream gradients")
    if a.ndim == len(lead) + 1 and a.shape[-1] == 1:
        a = a.reshape(a.shape[:-1])  # (N, 1) sample weights, as Keras accepts
    try:
        a = np.broadcast_to(a, lead)
    except ValueError:
        raise ValueError(
            f"{name} has shape {a.shape}, which does not broadcast to the per-example loss "
            f"shape {lead}; pass one value per example") from None
    a = np.ascontiguousarray(a, dtype=dtype).reshape(-1)
    finite = np.isfinite(a)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"{name} holds a non-finite value ({a[bad].item()!r} at flat index "
                         f"{bad}); weights and upstream gradients must be finite")
    return a


def elementwise(values, shape, dtype, name):
    """Sigmoid weights / upstream gradients: ``(n,)`` per example (matching the leading dims,
    as Keras' sample weights) or ``(n, C)`` per element (broadcasting to logits)."""
    if values is None:
        return None
    a = _numeric(values, name, "weights and upstream gradients")
    n_rows = int(np.prod(shape[:-1], dtype=np.int64))
    if a.ndim == len(shape) and a.shape[-1] == 1 and a.shape[:-1] == shape[:-1]:
        a = a.reshape(a.shape[:-1])
    if 0 < a.ndim < len(shape) and a.shape == shape[:a.ndim]:
        a = np.broadcast_to(a.reshape(a.shape + (1,) * (len(shape) - 1 - a.ndim)), shape[:-1])
        out = np.ascontiguousarray(a, dtype=dtype).reshape(n_rows)
    elif a.ndim == 0:
        out = np.full(n_rows, a, dtype=dtype)
    else:
        try:
            a = np.broadcast_to(a, shape)
        except ValueError:
            raise ValueError(
                f"{name} has shape {np.shape(values)}, which neither matches the leading dims "
                f"of logits {shape} (per example) nor broadcasts to it (per element)") from None
        out = np.ascontiguousarray(a, dtype=dtype).reshape(n_rows, shape[-1])
    if not np.isfinite(out).all():
        raise ValueError(f"{name} holds non-finite values; weights and upstream gradients "
                         f"must be finite")
    return out


def like_logits(v, shape, axis, dtype, name):
    """An array of logits' shape (e.g. hessp's ``v``) in canonical rows."""
    a = _numeric(v, name, "vectors")
    if a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape} but logits has shape {shape}; "
                         f"they must match")
    return to_rows(a, axis, dtype=dtype)


def saved_lse(lse, lead, dtype, name="lse"):
    """A saved logsumexp (any values lse_out produced, NaN and -inf included), as rows."""
    a = _numeric(lse, name, "a logsumexp")
    if a.shape != lead:
        raise ValueError(f"{name} has shape {a.shape}; expected {lead} (what loss(..., "
                         f"lse_out=...) fills)")
    return np.ascontiguousarray(a, dtype=dtype).reshape(-1)


def check_out(out, shape, dtype, name, mixed=False):
    """A caller's output buffer: an array of the right shape and dtype (either float dtype
    when ``mixed``), writeable, native byte order."""
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy array; got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"{name} has shape {out.shape}; expected {shape}")
    if not out.dtype.isnative:
        raise ValueError(f"{name} has non-native byte order ({out.dtype.str}); pass a "
                         f"native-order buffer (np.empty_like(logits))")
    if out.dtype != dtype and not (mixed and out.dtype in _FLOATS):
        raise ValueError(
            f"{name} has dtype {_dtype_name(out.dtype)}; expected {np.dtype(dtype)} (the result "
            f"dtype for these logits)" + ("; float32 and float64 buffers are both accepted"
                                          if mixed else ""))
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only; pass a writeable array (e.g. np.empty_like)")
    return out


def check_overlaps(outputs, inputs, alias=None):
    """No output overlaps an input or another output. ``alias`` = (output name, input name,
    input array) names the one exact alias allowed (the gradient written over the logits,
    H v over v): that output may be that input itself, viewed the same way."""
    outs = [(n, a) for n, a in outputs if a is not None]
    ins = [(n, b) for n, b in inputs if b is not None]
    for i, (name, a) in enumerate(outs):
        for other, b in outs[i + 1:]:
            if may_overlap(a, b):
                raise ValueError(f"{name} and {other} overlap in memory; pass separate "
                                 f"buffers")
        for other, b in ins:
            if a is b and alias is not None and (name, other) == alias[:2]:
                continue
            if not may_overlap(a, b):
                continue
            if alias is not None and (name, other) == alias[:2] and \
                    _canonical_view(a, alias[2]):
                continue
            raise ValueError(
                f"{name} overlaps {other} in memory, which the kernel still reads while it "
                f"writes {name}; pass a separate buffer"
                + (" (the gradient may be written over the logits themselves: "
                   "gradient_out=logits)" if name == "gradient_out" and other == "logits" else ""))


def _same_buffer(a, b):
    """True when a and b are the same memory viewed the same way (an exact alias)."""
    ai, bi = a.__array_interface__, b.__array_interface__
    return ai["data"][0] == bi["data"][0] and a.shape == b.shape and a.strides == b.strides


def _canonical_view(out, x):
    """True when the user's buffer ``out`` is exactly the kernel's ``x`` (in place)."""
    if out is x:
        return True
    return (out.dtype == x.dtype and out.flags.c_contiguous and out.size == x.size and
            np.may_share_memory(out, x) and _same_buffer(out.reshape(x.shape), x))


def _inputs(p, labels):
    """(name, array) of every input of p an output must not overlap (None: absent)."""
    return [("labels", labels), (p.weight_name, p.cw), ("sample_weight", p.sw),
            ("grad_loss", p.rs)]


def _gradient_out_fast(p, out, labels):
    """The common case of :func:`_outputs`, decided in a few attribute reads: only a
    ``gradient_out`` is given, a separate C-contiguous buffer exactly like the canonical
    logits (or the logits themselves, in place). True when it was accepted; False sends the
    call through the full check (which also words any error)."""
    x = p.x
    if type(out) is not np.ndarray or out.shape != x.shape or x.shape != p.shape or \
            out.dtype != x.dtype or not out.flags.c_contiguous or not out.flags.writeable:
        return False
    if out is x:
        if not p.x_is_view:
            return False
    elif may_overlap(out, x):
        return False
    if labels is not None and may_overlap(out, labels):
        return False
    if p.cw is not None or p.sw is not None or p.rs is not None:  # no list when unweighted
        for _, a in _inputs(p, None):
            if a is not None and may_overlap(out, a):
                return False
    p.gradient_out = out
    return True


def _outputs(p, labels, loss_out, gradient_out, lse_out=None, hessian_out=None, mixed=True):
    """Check the outputs of a problem and set them on it (user buffers, user layout);
    ``labels`` the problem's canonical labels (None: absent)."""
    if loss_out is None and lse_out is None and hessian_out is None and \
            gradient_out is not None and _gradient_out_fast(p, gradient_out, labels):
        return
    outs = []
    if loss_out is not None:
        shape = p.loss_shape() if p.reduction == "none" else ()
        p.loss_out = check_out(loss_out, shape, p.out_dtype, "loss_out", mixed)
        outs.append(("loss_out", loss_out))
    if gradient_out is not None:
        p.gradient_out = check_out(gradient_out, p.shape, p.out_dtype, "gradient_out", mixed)
        outs.append(("gradient_out", gradient_out))
    if lse_out is not None:
        p.lse_out = check_out(lse_out, p.lead, p.out_dtype, "lse_out", mixed)
        outs.append(("lse_out", lse_out))
    if hessian_out is not None:
        p.hessian_out = check_out(hessian_out, p.shape, p.out_dtype, "hessian_out", mixed)
        outs.append(("hessian_out", hessian_out))
    if not outs:
        return
    alias = None
    if p.x_is_view and p.canonical:
        for name, out in (("gradient_out", gradient_out), ("hessian_out", hessian_out)):
            if out is not None and out.dtype == p.x.dtype:
                alias = (name, "logits", p.x)
                break
    check_overlaps(outs, _inputs(p, labels) + [("logits", p.user_x if p.x_is_view else None)],
                   alias)


def _logits(p, logits, axis, xname):
    """Set the logits' fields of p: canonical rows (a view of the user's array when its
    layout allows), shape, axis, lead shape."""
    if (type(logits) is np.ndarray and logits.ndim == 2 and type(axis) is int and
            (axis == -1 or axis == 1) and logits.shape[1] and
            logits.dtype.char in "fd" and logits.dtype.isnative and
            logits.flags.c_contiguous):
        x = logits  # the common case, kept cheap
        p.shape, p.axis, p.lead = x.shape, 1, (x.shape[0],)
    else:
        x0, ax = check_logits(logits, axis, xname)
        x = to_rows(x0, ax)
        p.shape, p.axis, p.lead = x0.shape, ax, lead_shape(x0.shape, ax)
    p.x, p.out_dtype, p.user_x = x, x.dtype, logits
    p.x_is_view = x is logits or (isinstance(logits, np.ndarray) and
                                  np.may_share_memory(x, logits))
    return x


def softmax_problem(kind, labels, logits, axis, opts, sample_weight=None, grad_loss=None,
                    loss_out=None, gradient_out=None, lse_out=None, hessian_out=None,
                    mixed=False, labels_optional=False):
    """The problem of a softmax cross-entropy call (``kind`` "dense" or "integer") with the
    validated ``opts`` (:class:`Options`)."""
    lname, xname = opts.names
    p = Integer() if kind == "integer" else Dense()
    x = _logits(p, logits, axis, xname)
    C = x.shape[1]
    p.reduction, p.backend, p.n_threads = opts.reduction, opts.backend, opts.n_threads
    p.check = opts.check if opts.check is not None else check_mode(None)
    p.names, p.eps, p.z, p.softcap = opts.names, opts.eps, opts.z, opts.softcap
    if opts.class_weight is not None:
        p.cw = opts.weights("class_weight", opts.class_weight, C, x.dtype)
    if kind == "integer":
        if p.x is logits:
            t, raw = integer_labels(labels, logits, 1, lname, xname)
        else:
            t, raw = integer_labels(labels, float_array(logits, xname), p.axis, lname, xname)
        p.t, p.raw_labels, p.labels_name = t, raw, lname
        p.ignore_index = opts.ignore_index
        labels = t
    else:
        if labels is None and labels_optional:
            y = None
        else:
            x0 = logits if p.x is logits else float_array(logits, xname)
            y = dense_labels(labels, x0, p.axis, lname, xname)
        p.y = labels = y
    if sample_weight is not None or grad_loss is not None:
        _weights(p, sample_weight, grad_loss)
    if loss_out is not None or gradient_out is not None or lse_out is not None or \
            hessian_out is not None:
        _outputs(p, labels, loss_out, gradient_out, lse_out, hessian_out, mixed)
    return p


def sigmoid_problem(labels, logits, opts, *, sample_weight=None, grad_loss=None,
                    loss_out=None, gradient_out=None, hessian_out=None, mixed=False,
                    labels_optional=False):
    """The problem of an elementwise sigmoid cross-entropy call."""
    lname, xname = opts.names
    x0 = float_array(logits, xname)
    shape = x0.shape
    x = x0.reshape(1, 1) if x0.ndim == 0 else to_rows(x0, x0.ndim - 1)
    if labels is None:
        if not labels_optional:
            raise TypeError(f"{lname} is required (got None): pass targets in [0, 1] of "
                            f"{xname}' shape {shape}")
        y = None
    else:
        y = _numeric(labels, lname, "labels")
        if y.shape != shape:
            raise ValueError(
                f"{lname} has shape {y.shape} but {xname} has shape {shape}; sigmoid labels "
                f"are per element and must match {xname}")
        y = to_rows(y.reshape(x.shape) if y.ndim < 2 else y, max(y.ndim - 1, 1),
                    dtype=x.dtype)
    p = Sigmoid()
    p.x, p.shape, p.axis, p.lead, p.out_dtype = x, shape, max(len(shape) - 1, 0), shape[:-1], \
        x.dtype
    p.reduction, p.check, p.names = opts.reduction, check_mode(opts.check), opts.names
    p.backend, p.n_threads, p.user_x = opts.backend, opts.n_threads, logits
    p.x_is_view = isinstance(logits, np.ndarray) and np.may_share_memory(x, logits)
    p.y, p.eps = y, opts.eps
    if opts.pos_weight is not None:
        p.cw = opts.weights("pos_weight", opts.pos_weight, x.shape[1], x.dtype, scalar_ok=True)
    if sample_weight is not None or grad_loss is not None:
        _weights(p, sample_weight, grad_loss)
    _outputs(p, y, loss_out, gradient_out, None, hessian_out, mixed)
    return p


def _weights(p, sample_weight, grad_loss):
    """Sample weights (``p.sw``) and the kernels' row weights (``p.rs``: the sample weights,
    times the per-example upstream gradient for reduction="none"), and ``p.grad_loss``
    (the scalar upstream gradient of a reduced loss)."""
    shape = p.shape if p.shape else (1, 1)
    if p.kind == "sigmoid":
        sw = elementwise(sample_weight, shape, p.x.dtype, "sample_weight")
    else:
        sw = per_example(sample_weight, p.lead, p.x.dtype, "sample_weight")
    p.sw = sw
    p.grad_loss = 1.0
    if p.reduction == "none":
        if p.kind == "sigmoid":
            g = elementwise(grad_loss, shape, p.x.dtype, "grad_loss")
        else:
            g = per_example(grad_loss, p.lead, p.x.dtype, "grad_loss")
        if g is not None and sw is not None and g.ndim != sw.ndim:
            g, sw = np.broadcast_arrays(g.reshape(g.shape + (1,) * (2 - g.ndim)),
                                        sw.reshape(sw.shape + (1,) * (2 - sw.ndim)))
        p.rs = sw if g is None else (g if sw is None else g * sw)
    else:
        if grad_loss is not None:
            if np.ndim(grad_loss) != 0:
                raise ValueError(
                    f"grad_loss has shape {np.shape(grad_loss)}, but reduction="
                    f"{p.reduction!r} gives a scalar loss; pass a scalar grad_loss (or use "
                    f"reduction='none' for per-example upstream gradients)")
            g = _real(np.asarray(grad_loss)[()] if isinstance(grad_loss, np.ndarray)
                      else grad_loss, "grad_loss", "a float")
            if not np.isfinite(g):
                raise ValueError(f"grad_loss={grad_loss!r} must be finite")
            p.grad_loss = g
        p.rs = sw


def utility_problem(logits, axis, keepdims=False, out=None, backend=None, n_threads=None,
                    reduce=False):
    """logsumexp (``reduce``: axis may be None or a tuple) / softmax / log_softmax."""
    x0 = float_array(logits, "logits")
    if reduce:
        if x0.ndim == 0:
            x0 = x0.reshape(1)
            axes = (0,)
        elif axis is None:
            axes = tuple(range(x0.ndim))
        elif isinstance(axis, (tuple, list)):
            axes = tuple(sorted({normalize_axis(a, x0.ndim) for a in axis}))
        else:
            axes = (normalize_axis(axis, x0.ndim),)
        rest = tuple(a for a in range(x0.ndim) if a not in axes)
        moved = np.transpose(x0, rest + axes)
        lead = tuple(x0.shape[a] for a in rest)
        C = int(np.prod([x0.shape[a] for a in axes], dtype=np.int64))
        if C == 0:
            raise ValueError(f"logits has shape {x0.shape}: zero elements along axis {axis}; "
                             f"logsumexp of nothing is -inf only by convention: pass at least "
                             f"one element")
        x = np.ascontiguousarray(moved).reshape(-1, C) if moved.size else \
            np.empty((int(np.prod(lead, dtype=np.int64)), C), x0.dtype)
        shape = tuple(1 if a in axes else s for a, s in enumerate(x0.shape)) if keepdims \
            else lead
        p = Utility()
        p.x, p.shape, p.axis, p.lead, p.out_dtype = x, shape, len(shape), shape, x.dtype
        p.backend, p.n_threads, p.keepdims, p.user_x = backend, n_threads, keepdims, logits
        p.out = check_out(out, shape, x.dtype, "out")
        check_overlaps([("out", p.out)], [("logits", x)])
        return p
    x0, axis = check_logits(x0, axis)
    x = to_rows(x0, axis)
    p = Utility()
    p.x, p.shape, p.axis, p.lead, p.out_dtype = x, x0.shape, axis, lead_shape(x0.shape, axis), \
        x.dtype
    p.backend, p.n_threads, p.user_x = backend, n_threads, logits
    p.out = check_out(out, x0.shape, x.dtype, "out")
    check_overlaps([("out", p.out)], [("logits", x)],
                   ("out", "logits", x) if p.canonical else None)
    return p


# ------------------------------------------------------------------------- fused linear

class Linear:
    """A fused linear + softmax cross-entropy problem: ``inputs`` (N, D), ``weight``
    (V, D), ``bias`` (V,) or None, in one float dtype, and ``rows``, a softmax problem whose
    logits are a shape-only stand-in for the (N, V) logits that are never materialised.
    ``rows`` owns labels, weights, options, the mean's denominator and the error texts;
    :meth:`chunk` gives the problem of rows ``r0:r1`` on a real logits buffer."""

    X = W = b = lse = None
    sparse = False
    loss_out = grad_inputs_out = grad_weight_out = grad_bias_out = lse_out = None
    rows = None

    @property
    def dtype(self):
        return self.rows.x.dtype

    def chunk(self, r0, r1, logits):
        """The softmax problem of rows ``r0:r1`` on ``logits`` (their (r1 - r0, V) values),
        with labels, row weights and outputs sliced; the gradient goes over the logits."""
        rp = self.rows
        p = type(rp)()
        p.__dict__.update(rp.__dict__)
        n = r1 - r0
        p.x = p.user_x = logits
        p.shape, p.lead = logits.shape, (n,)
        p.x_is_view = True
        if rp.t is not None:
            p.t = rp.t[r0:r1]
        if rp.y is not None and rp.y.shape[0] != 1:
            p.y = rp.y[r0:r1]
        if rp.sw is not None:
            p.sw = rp.sw[r0:r1]
        if rp.rs is not None:
            p.rs = rp.rs[r0:r1]
        return p


def _linear_operand(a, name):
    """A float matrix operand (dense: kept as it is when contiguous either way)."""
    a = float_array(a, name, what="inputs and weights")
    if a.ndim != 2:
        raise ValueError(f"{name} has shape {a.shape}; expected a 2-D array")
    return a


def linear_problem(labels, inputs, weight, bias, opts, *, sample_weight=None, grad_loss=None,
                   loss_out=None, grad_inputs_out=None, grad_weight_out=None,
                   grad_bias_out=None, lse_out=None, lse=None, sparse_ok=True):
    """The problem of ``linear_softmax_cross_entropy``: every shape, dtype, label and option
    check, errors naming both shapes. Integer labels (N,) (or (N, 1)), or dense labels
    (N, V) (or one row (1, V) for every example)."""
    import sys

    lp = Linear()
    _sp = sys.modules.get("scipy.sparse")  # not imported: inputs cannot be a sparse matrix
    if sparse_ok and _sp is not None and _sp.issparse(inputs):
        if inputs.ndim != 2:
            raise ValueError(f"inputs has shape {inputs.shape}; expected (N, D)")
        X = inputs.tocsr()
        if X.dtype not in _FLOATS:
            X = X.astype(np.result_type(X.dtype, np.float32) if X.dtype.kind == "f"
                         else np.float64)
        lp.sparse = True
    else:
        X = _linear_operand(inputs, "inputs")
    W = _linear_operand(weight, "weight")
    if W.shape[1] != X.shape[1]:
        raise ValueError(
            f"inputs has shape {X.shape} but weight has shape {W.shape}; weight must be "
            f"(n_classes, {X.shape[1]}) (PyTorch's Linear.weight layout: logits = inputs @ "
            f"weight.T)")
    if W.shape[0] == 0:
        raise ValueError(f"weight has shape {W.shape}: zero classes; softmax needs at least "
                         f"one class")
    dtype = np.result_type(X.dtype, W.dtype)
    b = None
    if bias is not None:
        b = float_array(bias, "bias", what="biases")
        if b.shape != (W.shape[0],):
            raise ValueError(f"bias has shape {b.shape} but weight has shape {W.shape}; bias "
                             f"must be ({W.shape[0]},), one value per class")
        dtype = np.result_type(dtype, b.dtype)
        b = np.ascontiguousarray(b, dtype=dtype)
    if lp.sparse:
        X = X.astype(dtype, copy=False)
    else:
        X = np.ascontiguousarray(X, dtype=dtype)
    if not (W.dtype == dtype and (W.flags.c_contiguous or W.flags.f_contiguous)):
        W = np.ascontiguousarray(W, dtype=dtype)
    lp.X, lp.W, lp.b = X, W, b
    N, V = X.shape[0], W.shape[0]

    # the softmax problem of all rows, on a stand-in for the logits: zero strides, no memory
    stand_in = np.broadcast_to(np.zeros((), dtype), (N, V))
    dense = labels is not None and np.ndim(labels) == 2 and np.shape(labels)[1] != 1
    p = Dense() if dense else Integer()
    p.x = p.user_x = stand_in
    p.shape, p.axis, p.lead, p.out_dtype = (N, V), 1, (N,), dtype
    p.reduction, p.backend, p.n_threads = opts.reduction, opts.backend, opts.n_threads
    p.check = check_mode(opts.check)
    p.eps, p.z, p.softcap = opts.eps, opts.z, opts.softcap
    if opts.class_weight is not None:
        p.cw = opts.weights("class_weight", opts.class_weight, V, dtype)
    lname = opts.names[0]
    if labels is None:
        raise TypeError(f"{lname} is required (got None): pass integer class indices of shape "
                        f"({N},) or probabilities of shape ({N}, {V})")
    if dense:
        y = _numeric(labels, lname, "labels")
        if y.shape not in ((N, V), (1, V)):
            raise ValueError(
                f"{lname} has shape {y.shape} but inputs has shape {X.shape} and weight "
                f"{W.shape}; dense labels must be (N, n_classes) = ({N}, {V}) (integer class "
                f"indices are (N,) = ({N},))")
        p.y = np.ascontiguousarray(y.reshape(-1, V), dtype=dtype)
        if p.y.shape[0] != N:
            p.y = p.y[:1]
    else:
        t = np.asarray(labels)
        if t.shape not in ((N,), (N, 1)):
            raise ValueError(
                f"{lname} has shape {t.shape} but inputs has shape {X.shape}; integer labels "
                f"must be (N,) = ({N},) (dense labels (N, n_classes) = ({N}, {V}))")
        t, raw = integer_labels(labels, stand_in, 1, lname, "logits")
        p.t, p.raw_labels, p.labels_name = t, raw, lname
        p.ignore_index = opts.ignore_index
        if N:
            bad = (t < 0) | (t >= V)
            if opts.ignore_index is not None:
                bad &= t != opts.ignore_index
            n_bad = int(np.count_nonzero(bad))
            if n_bad:
                p.raise_bad_labels(n_bad)
    if sample_weight is not None or grad_loss is not None:
        _weights(p, sample_weight, grad_loss)
    lp.rows = p
    if lse is not None:
        lp.lse = saved_lse(lse, (N,), dtype)

    outs = []
    if loss_out is not None:
        lp.loss_out = check_out(loss_out, (N,) if p.reduction == "none" else (), dtype,
                                "loss_out", mixed=True)
        outs.append(("loss_out", loss_out))
    if lse_out is not None:
        lp.lse_out = check_out(lse_out, (N,), dtype, "lse_out", mixed=True)
        outs.append(("lse_out", lse_out))
    for name, out, shape in (("grad_inputs_out", grad_inputs_out, X.shape),
                             ("grad_weight_out", grad_weight_out, W.shape),
                             ("grad_bias_out", grad_bias_out, (V,))):
        if out is not None:
            out = check_out(out, shape, dtype, name, mixed=True)
            setattr(lp, name, out)
            outs.append((name, out))
    if outs:
        check_overlaps(outs, [("labels", p.t if p.t is not None else p.y),
                              ("inputs", None if lp.sparse else X), ("weight", W),
                              ("bias", b), ("class_weight", p.cw), ("sample_weight", p.sw),
                              ("grad_loss", p.rs), ("lse", lp.lse)])
    return lp
