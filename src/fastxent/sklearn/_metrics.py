"""``log_loss``: scikit-learn's metric, plus a stable ``from_logits=True`` path."""

import warnings

import numpy as np
from sklearn.metrics import log_loss as _sk_log_loss
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_array, check_consistent_length

from .. import losses as _losses

_FLOAT_DTYPES = [np.float64, np.float32, np.float16]


def _one_hot(y_true, labels):
    """``(transformed_labels, classes)`` exactly as scikit-learn's ``log_loss`` builds them."""
    lb = LabelBinarizer()
    if labels is not None:
        lb = lb.fit(labels)
        if not np.all(lb.classes_ == labels):
            warnings.warn(
                f"Labels passed were {labels}. But this function assumes labels are ordered "
                f"lexicographically. Pass the ordered labels={lb.classes_.tolist()} and "
                f"ensure that the columns of the logits correspond to this ordering.", UserWarning)
        if not np.all(np.isin(y_true, labels)):
            undeclared = set(np.asarray(y_true).ravel().tolist()) - set(np.asarray(labels)
                                                                        .tolist())
            raise ValueError(f"y_true contains values {undeclared} not belonging to the "
                             f"passed labels {labels}.")
    else:
        lb = lb.fit(y_true)
    if lb.classes_.shape[0] == 1:
        if labels is None:
            raise ValueError(
                f"y_true contains only one label ({lb.classes_[0]}). Please provide the list "
                f"of all expected class labels explicitly through the labels argument.")
        raise ValueError(f"The labels array needs to contain at least two labels, got "
                         f"{lb.classes_}.")
    T = lb.transform(y_true)
    if T.shape[1] == 1:
        T = np.concatenate([1 - T, T], axis=1)
    return T, lb.classes_


def _check_classes(T, classes, n_columns, labels):
    if classes.shape[0] != n_columns:
        if labels is None:
            raise ValueError(
                f"y_true and the logits contain different number of classes: {T.shape[1]} vs "
                f"{n_columns}. Please provide the true labels explicitly through the labels "
                f"argument. Classes found in y_true: {classes}")
        raise ValueError(f"The number of classes in labels is different from that in the logits. "
                         f"Classes found in labels: {classes}")


def _check_weights(sample_weight, n):
    if sample_weight is None:
        return None
    sw = np.asarray(sample_weight)
    if sw.ndim == 0:
        return np.full(n, float(sw))
    if sw.ndim != 1:
        raise ValueError("Sample weights must be 1D array or scalar")
    if sw.shape != (n,):
        raise ValueError(f"sample_weight.shape == {sw.shape}, expected {(n,)}!")
    return sw


def _average(losses, sample_weight, normalize):
    if normalize:
        return float(np.average(losses, weights=sample_weight))
    if sample_weight is not None:
        return float(np.dot(losses, sample_weight))
    return float(np.sum(losses))


def log_loss(y_true, *args, from_logits=False, **kwargs):
    r"""Log loss (cross-entropy) of predicted probabilities, or of logits.

    With ``from_logits=False`` this *is* :func:`sklearn.metrics.log_loss` of the installed
    scikit-learn: the call is handed over unchanged, so its argument names (``y_proba`` since
    scikit-learn 1.9, ``y_pred`` before, with 1.9's ``FutureWarning`` for ``y_pred=``), its
    errors, warnings and clipping follow whichever version is installed.

    With ``from_logits=True``, the second argument holds unnormalised log-probabilities (e.g.
    ``decision_function`` or a network's last layer) and the loss is computed from them with
    a log-sum-exp (fastxent's softmax cross-entropy): exact where ``log(softmax(z))`` would
    round tiny probabilities to 0 and need clipping. Labels are handled as scikit-learn's
    ``log_loss`` handles them (:class:`~sklearn.preprocessing.LabelBinarizer` order).

    .. math::

        L = \frac{1}{\sum_i w_i} \sum_i w_i \sum_k -t_{ik} \log p_{ik},
        \qquad p_{ik} = \text{clip}(\hat p_{ik}) \ \text{or}\ \mathrm{softmax}(z_i)_k

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or label indicator matrix
        True labels.
    y_proba (or y_pred) : array-like of float, shape (n_samples, n_classes) or (n_samples,)
        Probabilities (columns in the sorted order of the labels), or logits with
        ``from_logits=True``. One column means the positive class of a binary problem: its
        probability, or its log-odds ``z`` (the logits are then ``[0, z]``). Passed
        positionally or under the installed scikit-learn's name.
    labels : array-like, default=None
        All class labels; inferred from ``y_true`` when None.
    normalize : bool, default=True
        Weighted mean over examples if True, else the weighted sum.
    sample_weight : array-like of shape (n_samples,), default=None
    from_logits : bool, default=False
        Whether the predictions are logits rather than probabilities.

    Returns
    -------
    loss : float

    Raises
    ------
    ValueError
        From logits: fewer than two classes; a class count that differs from the labels';
        labels in ``y_true`` missing from ``labels``; inconsistent lengths. From
        probabilities: whatever the installed scikit-learn raises.

    Examples
    --------
    >>> from fastxent.sklearn import log_loss
    >>> round(log_loss(["spam", "ham", "ham", "spam"],
    ...                [[.1, .9], [.9, .1], [.8, .2], [.35, .65]]), 5)
    0.21616
    >>> import numpy as np
    >>> z = np.array([[0.0, 800.0], [3.0, 0.0]])  # softmax(z)[0, 0] underflows to 0
    >>> round(log_loss([0, 0], z, labels=[0, 1], from_logits=True), 6)
    400.024294
    """
    if not from_logits:
        return _sk_log_loss(y_true, *args, **kwargs)
    names = [n for n in ("y_proba", "y_pred") if n in kwargs]
    if len(args) + len(names) != 1 or len(args) > 1:
        raise TypeError("log_loss(y_true, logits, *, labels=None, normalize=True, "
                        "sample_weight=None, from_logits=True): pass the logits once, as the "
                        f"second argument; got {len(args)} positional and {names} keywords")
    logits = args[0] if args else kwargs.pop(names[0])
    unknown = set(kwargs) - {"labels", "normalize", "sample_weight"}
    if unknown:
        raise TypeError(f"log_loss() got unexpected keyword arguments {sorted(unknown)}")
    return _log_loss_logits(y_true, logits, kwargs.get("labels"), kwargs.get("normalize", True),
                            kwargs.get("sample_weight"))


def _log_loss_logits(y_true, logits, labels, normalize, sample_weight):
    z = check_array(logits, ensure_2d=False, dtype=_FLOAT_DTYPES)
    if z.dtype == np.float16:
        z = z.astype(np.float32)
    check_consistent_length(z, y_true, sample_weight)
    sample_weight = _check_weights(sample_weight, z.shape[0])
    T, classes = _one_hot(y_true, labels)
    if z.ndim == 1:
        z = z[:, None]
    if z.shape[1] == 1:  # log-odds of the positive class: softmax([0, z]) = [1 - s, s]
        z = np.concatenate([np.zeros_like(z), z], axis=1)
    _check_classes(T, classes, z.shape[1], labels)
    T = np.asarray(T)
    if np.all(T.sum(axis=1) == 1):
        losses = _losses.sparse_softmax_cross_entropy_with_logits(T.argmax(axis=1), z)
    else:  # a multilabel indicator y_true: every positive label counts, as with probabilities
        losses = _losses.softmax_cross_entropy_with_logits(T.astype(z.dtype), z)
    # Averaged in float64: nothing to match here, and float32 sums lose digits.
    return _average(losses.astype(np.float64), sample_weight, normalize)
