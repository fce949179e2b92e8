"""Keras-style losses: the functions of ``keras.losses`` and Keras 3's loss classes.

``from_logits=True`` runs fastxent's kernels. ``from_logits=False`` treats ``y_pred`` as
probabilities exactly as Keras 3 does: renormalised along ``axis`` (categorical), clipped to
``[1e-7, 1 - 1e-7]``, then logged. Feeding softmax outputs with ``from_logits=True``
computes softmax(softmax(x)): the diagnostics (``check=``) warn about exactly that. Error
messages name the arguments as Keras does (``y_true``, ``y_pred``).

Deliberate difference: Keras casts inputs to its floatx (float32) unless ``dtype`` says
otherwise; here ``dtype=None`` keeps the inputs' float dtype (pass ``dtype="float32"`` to
match Keras bit for bit in dtype).
"""

import numpy as np

from . import _boundary as B
from . import _diagnostics, _engine

_EPSILON = 1e-7  # keras.backend.epsilon(): the clip used when from_logits=False
_NAMES = ("y_true", "y_pred")
_REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", None)


def _check_probabilities(y_pred, check):
    """from_logits=False: values outside [0, 1] are logits passed as probabilities."""
    mode = B.check_mode(check)
    if mode == "off":
        return
    outside = int(np.count_nonzero((y_pred < 0) | (y_pred > 1)))
    if outside:
        first = np.unravel_index(int(np.flatnonzero((y_pred < 0) | (y_pred > 1))[0]),
                                 y_pred.shape)
        text = (f"fastxent: {outside} of {y_pred.size} values of y_pred lie outside [0, 1] "
                f"(first at [{', '.join(map(str, first))}]): they look like logits, not "
                f"probabilities; pass from_logits=True")
        if mode == "raise":
            raise ValueError(text)
        _diagnostics.warn(text)


def _probabilities(y_pred, axis, check, renormalise=True):
    x, axis = B.check_logits(y_pred, axis, "y_pred")
    _check_probabilities(x, check)
    with np.errstate(invalid="ignore", divide="ignore"):
        probs = x / np.sum(x, axis=axis, keepdims=True) if renormalise else x
    return np.clip(probs, _EPSILON, 1 - _EPSILON), axis


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1,
                             *, check=None):
    """Keras ``categorical_crossentropy``: per-example loss for one-hot / soft ``y_true``.

    Parameters
    ----------
    y_true : array_like, y_pred's shape
        One-hot or probability targets.
    y_pred : array_like of float
        Logits (``from_logits=True``) or probabilities.
    from_logits : bool, default False
        Whether ``y_pred`` are logits.
    label_smoothing : float in [0, 1], default 0
        ``y (1 - eps) + eps / C``.
    axis : int, default -1
        The class axis.
    check : {None, "off", "warn", "raise"}
        Diagnostics (see :func:`fastxent.softmax_cross_entropy_with_logits`); with
        ``from_logits=False`` it flags values outside [0, 1].

    Returns
    -------
    ndarray
        One loss per example: ``-sum(y' log p)`` with ``p`` the (renormalised, clipped)
        probabilities, or the softmax cross-entropy of the logits.

    Examples
    --------
    >>> import fastxent as fx
    >>> fx.categorical_crossentropy([[0, 1, 0]], [[0.05, 0.95, 0.0]]).round(4)
    array([0.0513])
    """
    if from_logits:
        opts = B.Options(label_smoothing, check=check, names=_NAMES)
        return _engine.loss(B.softmax_problem("dense", y_true, y_pred, axis, opts))
    probs, axis = _probabilities(y_pred, axis, check)
    y = B.dense_labels(y_true, probs, axis, "y_true", "y_pred")
    eps = B.check_fraction(label_smoothing, "label_smoothing")
    logp = B.to_rows(np.log(probs), axis)
    y = (1 - eps) * y + eps / y.shape[1] if eps else y
    return -np.sum(y * logp, axis=1).reshape(B.lead_shape(probs.shape, axis))


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, ignore_class=None,
                                    axis=-1, *, check=None):
    """Keras ``sparse_categorical_crossentropy``: per-example loss for integer ``y_true``.

    Parameters
    ----------
    y_true : array_like of int
        Class indices, y_pred's shape without ``axis``.
    y_pred : array_like of float
        Logits (``from_logits=True``) or probabilities.
    from_logits : bool, default False
    ignore_class : int, optional
        Examples with this label get loss 0 (Keras).
    axis : int, default -1
    check : {None, "off", "warn", "raise"}
        As in :func:`categorical_crossentropy`.

    Returns
    -------
    ndarray
        One loss per example.

    Examples
    --------
    >>> import fastxent as fx
    >>> fx.sparse_categorical_crossentropy([1, 2], [[0.05, 0.95, 0], [0.1, 0.8, 0.1]]).round(4)
    array([0.0513, 2.3026])
    """
    if from_logits:
        opts = B.Options(ignore_index=ignore_class, check=check, names=_NAMES,
                         ignore_name="ignore_class")
        return _engine.loss(B.softmax_problem("integer", y_true, y_pred, axis, opts))
    probs, axis = _probabilities(y_pred, axis, check)
    opts = B.Options(ignore_index=ignore_class, check="off", names=_NAMES,
                     ignore_name="ignore_class")
    p = B.softmax_problem("integer", y_true, probs, axis, opts)
    t, C = p.t, p.n_classes
    valid = (t >= 0) & (t < C)
    ignored = (t == p.ignore_index) if p.ignore_index is not None else np.zeros_like(valid)
    n_bad = int(np.count_nonzero(~valid & ~ignored))
    if n_bad:
        p.raise_bad_labels(n_bad)
    rows = np.flatnonzero(valid & ~ignored)
    losses = np.zeros(p.n_rows, p.x.dtype)
    losses[rows] = -np.log(p.x[rows, t[rows]])
    return losses.reshape(p.lead)


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1, *,
                        check=None):
    """Keras ``binary_crossentropy``: elementwise sigmoid cross-entropy, mean over ``axis``.

    Parameters
    ----------
    y_true : array_like, y_pred's shape
        Targets in [0, 1].
    y_pred : array_like of float
        Logits (``from_logits=True``) or probabilities (clipped to ``[1e-7, 1 - 1e-7]``).
    from_logits : bool, default False
    label_smoothing : float in [0, 1], default 0
        ``y (1 - eps) + eps / 2``.
    axis : int, default -1
        The axis averaged over.
    check : {None, "off", "warn", "raise"}
        As in :func:`categorical_crossentropy`.

    Returns
    -------
    ndarray
        y_pred's shape without ``axis``.

    Examples
    --------
    >>> import fastxent as fx
    >>> fx.binary_crossentropy([[0.0, 1.0]], [[0.0, 0.0]], from_logits=True)
    array([0.69314718])
    """
    x = B.float_array(y_pred, "y_pred")
    if x.ndim == 0:
        raise ValueError("y_pred is a 0-d array; pass at least one axis to average over")
    axis = B.normalize_axis(axis, x.ndim, xname="y_pred")
    eps = B.check_fraction(label_smoothing, "label_smoothing")
    if from_logits:
        opts = B.Options(eps, check=check, names=_NAMES)
        elementwise = _engine.loss(B.sigmoid_problem(y_true, x, opts))
    else:
        _check_probabilities(x, check)
        y = np.asarray(y_true)
        if y.shape != x.shape:
            raise ValueError(f"y_true has shape {y.shape} but y_pred has shape {x.shape}; "
                             f"they must match")
        y = y.astype(x.dtype)
        y = (1 - eps) * y + eps / 2 if eps else y
        probs = np.clip(x, _EPSILON, 1 - _EPSILON)
        elementwise = -(y * np.log(probs) + (1 - y) * np.log1p(-probs))
    return np.mean(elementwise, axis=axis)


# ---------------------------------------------------------------------------- loss classes

class _KerasLoss:
    """Keras 3's ``keras.losses.Loss``: ``__call__(y_true, y_pred, sample_weight=None)`` and
    the reductions ``"sum_over_batch_size"`` (default; the sum of the weighted losses over the
    number of per-example losses, as ``"mean"``), ``"sum"``, ``"mean_with_sample_weight"``
    (over the sum of the sample weights) and ``"none"`` / None."""

    def __init__(self, reduction, name, dtype):
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction={reduction!r} is not one of "
                             f"{', '.join(map(repr, _REDUCTIONS))}")
        self.reduction = reduction
        self.name = name
        self.dtype = None if dtype is None else np.dtype(dtype)

    def call(self, y_true, y_pred):
        raise NotImplementedError

    def _mask(self, y_true, values):
        return None

    def __call__(self, y_true, y_pred, sample_weight=None):
        if self.dtype is not None:
            y_pred = np.asarray(y_pred, dtype=self.dtype)
        values = np.asarray(self.call(y_true, y_pred))
        mask = self._mask(y_true, values)
        if sample_weight is not None:
            sw = np.asarray(sample_weight, dtype=values.dtype)
            if sw.ndim == values.ndim + 1 and sw.shape[-1] == 1:
                sw = sw.reshape(sw.shape[:-1])
            try:
                sw = np.broadcast_to(sw, values.shape)
            except ValueError:
                raise ValueError(f"sample_weight has shape {np.shape(sample_weight)}, which "
                                 f"does not broadcast to the per-example losses' shape "
                                 f"{values.shape}") from None
        else:
            sw = None
        if mask is not None and self.reduction in ("mean", "sum_over_batch_size"):
            valid = np.count_nonzero(mask)  # Keras: masked-out entries do not count
            mask = mask * (mask.size / valid if valid else 0.0)
        if mask is not None:
            sw = mask if sw is None else sw * mask
        weighted = values * sw if sw is not None else values
        if self.reduction in ("none", None) or weighted.ndim == 0:
            return weighted
        total = np.sum(weighted)
        if self.reduction == "sum":
            return total
        if self.reduction == "mean_with_sample_weight" and sample_weight is not None:
            denom = np.sum(sw)
            return total / denom if denom else values.dtype.type(0)
        return total / weighted.size if weighted.size else values.dtype.type(0)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}


class CategoricalCrossentropy(_KerasLoss):
    """Keras 3's ``CategoricalCrossentropy``.

    Parameters
    ----------
    from_logits : bool, default False
    label_smoothing : float in [0, 1], default 0
    axis : int, default -1
    reduction : str or None, default "sum_over_batch_size"
        See :class:`_KerasLoss` (Keras' names).
    name : str, default "categorical_crossentropy"
    dtype : dtype, optional
        Cast ``y_pred`` to it first (None: keep the inputs' float dtype).
    check : {None, "off", "warn", "raise"}
        Diagnostics, as in :func:`categorical_crossentropy`.

    Examples
    --------
    Keras' documented example:

    >>> import fastxent as fx
    >>> cce = fx.CategoricalCrossentropy()
    >>> y_true = [[0, 1, 0], [0, 0, 1]]
    >>> y_pred = [[0.05, 0.95, 0], [0.1, 0.8, 0.1]]
    >>> round(float(cce(y_true, y_pred)), 3)
    1.177
    >>> round(float(cce(y_true, y_pred, sample_weight=[0.3, 0.7])), 3)
    0.814
    """

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction="sum_over_batch_size", name="categorical_crossentropy", dtype=None,
                 check=None):
        super().__init__(reduction, name, dtype)
        self.from_logits = bool(from_logits)
        self.label_smoothing = B.check_fraction(label_smoothing, "label_smoothing")
        self.axis = B.check_int(axis, "axis")
        self.check = check

    def call(self, y_true, y_pred):
        return categorical_crossentropy(y_true, y_pred, self.from_logits, self.label_smoothing,
                                        self.axis, check=self.check)


class SparseCategoricalCrossentropy(_KerasLoss):
    """Keras 3's ``SparseCategoricalCrossentropy``.

    Parameters
    ----------
    from_logits : bool, default False
    ignore_class : int, optional
        Examples with this label get loss 0 and are left out of the mean (Keras' mask).
    reduction : str or None, default "sum_over_batch_size"
    name : str, default "sparse_categorical_crossentropy"
    dtype : dtype, optional
    check : {None, "off", "warn", "raise"}

    Examples
    --------
    Keras' documented example:

    >>> import fastxent as fx
    >>> scce = fx.SparseCategoricalCrossentropy()
    >>> round(float(scce([1, 2], [[0.05, 0.95, 0], [0.1, 0.8, 0.1]])), 3)
    1.177
    """

    def __init__(self, from_logits=False, ignore_class=None, reduction="sum_over_batch_size",
                 name="sparse_categorical_crossentropy", dtype=None, check=None):
        super().__init__(reduction, name, dtype)
        self.from_logits = bool(from_logits)
        self.ignore_class = B.check_ignore_index(ignore_class, "ignore_class")
        self.check = check

    def call(self, y_true, y_pred):
        return sparse_categorical_crossentropy(y_true, y_pred, self.from_logits,
                                               self.ignore_class, check=self.check)

    def _mask(self, y_true, values):
        if self.ignore_class is None:
            return None
        t = np.asarray(y_true).reshape(values.shape)
        return (t != self.ignore_class).astype(values.dtype)


class BinaryCrossentropy(_KerasLoss):
    """Keras 3's ``BinaryCrossentropy``.

    Parameters
    ----------
    from_logits : bool, default False
    label_smoothing : float in [0, 1], default 0
    axis : int, default -1
    reduction : str or None, default "sum_over_batch_size"
    name : str, default "binary_crossentropy"
    dtype : dtype, optional
    check : {None, "off", "warn", "raise"}

    Examples
    --------
    Keras' documented example:

    >>> import fastxent as fx
    >>> bce = fx.BinaryCrossentropy(from_logits=True)
    >>> round(float(bce([0, 1, 0, 0], [-18.6, 0.51, 2.94, -12.8])), 3)
    0.865
    """

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction="sum_over_batch_size", name="binary_crossentropy", dtype=None,
                 check=None):
        super().__init__(reduction, name, dtype)
        self.from_logits = bool(from_logits)
        self.label_smoothing = B.check_fraction(label_smoothing, "label_smoothing")
        self.axis = B.check_int(axis, "axis")
        self.check = check

    def call(self, y_true, y_pred):
        return binary_crossentropy(y_true, y_pred, self.from_logits, self.label_smoothing,
                                   self.axis, check=self.check)
