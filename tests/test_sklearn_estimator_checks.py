"""scikit-learn's own estimator checks on SoftmaxRegression (both solvers)."""

import pytest

pytest.importorskip("sklearn")
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastxent.sklearn import SoftmaxRegression  # noqa: E402


@parametrize_with_checks([SoftmaxRegression(), SoftmaxRegression(solver="newton-cg")])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
