"""Small bridges over scikit-learn versions (the extra declares ``scikit-learn>=1.3``)."""

import inspect

from sklearn.utils.class_weight import compute_class_weight as _compute_class_weight

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    def validate_data(estimator, X="no_validation", y="no_validation", **kwargs):
        return estimator._validate_data(X, y, **kwargs)

_CW_TAKES_SW = "sample_weight" in inspect.signature(_compute_class_weight).parameters


def compute_class_weight(class_weight, *, classes, y, sample_weight):
    """``compute_class_weight`` as the installed ``LogisticRegression`` calls it.

    Recent versions weight the "balanced" class frequencies by ``sample_weight``; older ones
    ignore sample weights there, and so does their ``LogisticRegression``.
    """
    if _CW_TAKES_SW:
        return _compute_class_weight(class_weight, classes=classes, y=y,
                                     sample_weight=sample_weight)
    return _compute_class_weight(class_weight, classes=classes, y=y)  # pragma: no cover
