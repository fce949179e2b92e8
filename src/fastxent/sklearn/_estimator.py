"""``SoftmaxRegression``: multinomial logistic regression on fastxent's fused kernels."""

import numbers
import sys
import time
import warnings
from contextlib import nullcontext as _nullcontext

import numpy as np
import scipy.sparse as sp
from scipy import optimize
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted
from threadpoolctl import threadpool_limits

from .. import linear as _linear
from .. import losses as _losses
from ._compat import compute_class_weight, validate_data

_SOLVERS = ("lbfgs", "newton-cg")

# Below this many multiply-adds per X W^T product, BLAS runs on one thread during a fit. A
# threaded BLAS wins nothing on such products, and its spinning workers then compete with
# fastxent's own kernel threads between calls: on a loaded 2-core machine that made a digits
# fit 40x slower (2 s instead of 0.05 s).
_BLAS_SERIAL_BELOW = 1 << 22


class _Objective:
    """The penalised training objective as a function of the flat float64 parameters.

    With ``w_i = s_i / sum(s)`` (``s`` = sample weight times the class weight of the label),
    ``Z = X W^T + b`` and ``l_i`` the (smoothed) softmax cross-entropy of row ``i``::

        f(W, b) = sum_i w_i l_i(Z_i) + l2 / 2 ||W||^2,      l2 = 1 / (C sum(s))
        df/dW   = G^T X + l2 W,   df/db = sum_i G_i,        G = dF/dZ (one fused pass)

    which is scikit-learn's ``LogisticRegression`` objective (its ``C sum_i s_i l_i +
    ||W||^2 / 2`` divided by ``C sum(s)``). The parameters are ``[W.ravel(), b]`` with ``W``
    of shape (n_classes, n_features).

    An evaluation is one :class:`fastxent.LinearSoftmaxCrossEntropy` pass over row blocks
    of X: per block the logits (BLAS), the fused loss-and-gradient kernel in place, and
    ``G^T [X, 1]`` (BLAS, accumulated) while the block is in cache, so X is read from memory
    once per evaluation and the N x C logits are never held whole. The N x C work stays in
    the data's dtype; only the coefficient-sized vectors that scipy owns are float64.
    Per-example losses come back weighted (``reduction="none"``) and are summed in float64,
    so float32 rounding does not accumulate over N rows (the line search compares objective
    values that differ by ~1e-10 near the optimum).
    """

    def __init__(self, X, y, weights, n_classes, fit_intercept, l2, label_smoothing=0.0,
                 backend=None, n_threads=None):
        self.X, self.y, self.weights = X, y, weights
        self.n_classes, self.n_features = n_classes, X.shape[1]
        self.fit_intercept, self.l2 = fit_intercept, l2
        options = dict(label_smoothing=label_smoothing, reduction="none", backend=backend,
                       n_threads=n_threads)
        self.loss = _linear.LinearSoftmaxCrossEntropy(**options)
        self.plain = _losses.SparseSoftmaxCrossEntropy(**options)  # hessp, per row block
        self.dtype = X.dtype
        self.last = None  # (f, max |g|) of the latest evaluation, for the progress display
        self.n_evals = 0

    def split(self, w):
        k = self.n_classes * self.n_features
        W = w[:k].reshape(self.n_classes, self.n_features)
        return W, (w[k:] if self.fit_intercept else None)

    def _params(self, w):
        W, b = self.split(w)
        return W.astype(self.dtype), (None if b is None else b.astype(self.dtype))

    def _flat(self, gW, gb, W, out):
        """``out = [gW + l2 W, gb]`` (flat float64)."""
        k = self.n_classes * self.n_features
        out[:k] = gW.reshape(-1) if gW.flags.c_contiguous else gW.ravel()
        if self.l2:
            out[:k] += self.l2 * W.reshape(-1)
        if self.fit_intercept:
            out[k:] = gb
        return out

    def __call__(self, w):
        Wd, bd = self._params(w)
        values, _, gW, gb = self.loss.loss_gradient(self.y, self.X, Wd, bd,
                                                    sample_weight=self.weights,
                                                    wrt=("weight", "bias"))
        f = float(np.sum(values, dtype=np.float64))
        W = self.split(w)[0]
        if self.l2:
            f += 0.5 * self.l2 * float(W.ravel() @ W.ravel())
        g = self._flat(gW, gb, W, np.empty_like(w))
        self.last = (f, float(np.max(np.abs(g))) if g.size else 0.0)
        self.n_evals += 1
        return f, g

    def hessp(self, w, v):
        """Hessian-vector product ``H v`` at ``w`` (Newton-CG / trust-region), over the same
        row blocks: per block the logits at ``w``, ``X V^T + vb``, the loss's ``hessp`` in
        place and ``HZ^T [X, 1]``, while the block is in cache."""
        from .._linear import chunk_rows
        Wd, bd = self._params(w)
        Vd, vbd = self._params(v)
        X, n, K = self.X, self.X.shape[0], self.n_classes
        step = chunk_rows(n, K, self.n_features, self.dtype.itemsize)
        Z = np.empty((min(step, n), K), self.dtype)
        Zv = np.empty_like(Z)
        gV = np.zeros((K, self.n_features), np.float64)
        gb = np.zeros(K, np.float64)
        for r0 in range(0, n, step):
            r1 = min(n, r0 + step)
            xc, z, zv = X[r0:r1], Z[:r1 - r0], Zv[:r1 - r0]
            np.copyto(z, xc @ Wd.T) if sp.issparse(X) else np.matmul(xc, Wd.T, out=z)
            np.copyto(zv, xc @ Vd.T) if sp.issparse(X) else np.matmul(xc, Vd.T, out=zv)
            if bd is not None:
                z += bd
                zv += vbd
            hz = self.plain.hessp(self.y[r0:r1], z, zv, sample_weight=self.weights[r0:r1],
                                  hessp_out=zv)
            gV += (xc.T @ hz).T if sp.issparse(X) else hz.T @ xc
            if bd is not None:
                gb += hz.sum(axis=0, dtype=np.float64)
        return self._flat(gV, gb, self.split(v)[0], np.empty_like(v))


def _on_dask(*arrays):
    """True for dask arrays (``fastxent.dask`` takes over; dask is not imported here)."""
    return any(type(a).__module__.startswith("dask.") for a in arrays)


class _Progress:
    """The ``verbose`` display: a line per iteration with the objective, the largest
    gradient entry (what ``tol`` is compared with), function evaluations and elapsed time."""

    def __init__(self, objective, tol, stream=None):
        self.objective, self.tol = objective, tol
        self.stream = stream
        self.it = 0
        self.t0 = time.perf_counter()

    def _print(self, text):
        print(text, file=self.stream if self.stream is not None else sys.stdout, flush=True)

    def header(self, solver):
        self._print(f"{solver} (tol {self.tol:.1e})\n  iter      objective    max|grad|  "
                    f"evals      time")

    def __call__(self, intermediate_result):
        self.it += 1
        f, gmax = self.objective.last  # L-BFGS: its last evaluation is the accepted point
        if "jac" in intermediate_result:  # trust-region: the last one may be a rejected trial
            f = float(intermediate_result.fun)
            gmax = float(np.max(np.abs(intermediate_result.jac)))
        self._print(f"{self.it:6d}  {f:13.10f}  {gmax:11.3e}  {self.objective.n_evals:5d}  "
                    f"{time.perf_counter() - self.t0:8.3f}s")


class SoftmaxRegression(ClassifierMixin, BaseEstimator):
    r"""Multinomial (softmax) logistic regression trained on fastxent's fused kernels.

    The model of scikit-learn's :class:`~sklearn.linear_model.LogisticRegression` with an
    L2 penalty and a multinomial loss: one row of coefficients per class,
    :math:`P(y = k \mid x) = \mathrm{softmax}(W x + b)_k`, fitted by minimising

    .. math::

        \frac{1}{\sum_i s_i} \Big( \sum_i s_i \, \ell_i(W x_i + b)
        + \frac{1}{2C} \lVert W \rVert_F^2 \Big)

    where :math:`\ell_i` is the softmax cross-entropy of example :math:`i` (with optional
    label smoothing), :math:`s_i` its sample weight times the class weight of its label, and
    the intercepts are not penalised -- exactly ``LogisticRegression``'s objective, so the
    same ``C`` and ``tol`` give the same solution. Each objective evaluation is one pass of
    :class:`fastxent.LinearSoftmaxCrossEntropy` over row blocks of ``X``: per block a BLAS
    product for the logits, fastxent's fused loss-and-gradient kernel in place, and a BLAS
    product for the coefficient gradient while the block is in cache (``X`` is read from
    memory once per evaluation; the N x C logits are never held whole).

    Parameters
    ----------
    C : float, default=1.0
        Inverse L2 regularisation strength (> 0; ``np.inf`` for no penalty).
    fit_intercept : bool, default=True
        Fit one (unpenalised) intercept per class.
    class_weight : dict or "balanced", default=None
        Weights per class, multiplied into the sample weights (as ``LogisticRegression``);
        ``"balanced"`` uses ``n_samples / (n_classes * np.bincount(y))``.
    label_smoothing : float in [0, 1], default=0.0
        Targets ``(1 - eps) onehot(y) + eps / n_classes`` (0 gives ``LogisticRegression``).
    solver : {"lbfgs", "newton-cg"}, default="lbfgs"
        ``"lbfgs"``: scipy's L-BFGS-B with ``LogisticRegression``'s settings (``gtol=tol``,
        ``maxls=50``). ``"newton-cg"``: scipy's trust-region Newton-CG (``"trust-ncg"``)
        with exact Hessian-vector products from fastxent's ``hessp`` (``gtol=tol`` on the
        gradient's 2-norm); fewer, costlier iterations, good for ill-conditioned problems.
    max_iter : int, default=100
        Maximum number of solver iterations.
    tol : float, default=1e-4
        Stop when the largest gradient entry (lbfgs) or the gradient's norm (newton-cg)
        of the objective above falls below ``tol``.
    warm_start : bool, default=False
        Start from the previous ``coef_`` and ``intercept_`` when their shapes fit.
    backend : {None, "auto", "numpy", "numba", "cython"}, default=None
        fastxent kernel backend (see :func:`fastxent.explain`).
    n_threads : int, default=None
        Threads for the loss kernels (None: :func:`fastxent.get_num_threads`). BLAS uses
        its own thread pool.
    verbose : int, default=0
        If > 0, print a line per iteration (objective, largest gradient entry, time).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coef_ : ndarray of shape (n_classes, n_features)
        One row per class, also for two classes (unlike ``LogisticRegression``, whose binary
        model has one row; with two classes this model equals ``LogisticRegression`` with
        ``2 C`` and ``coef_[1] - coef_[0]``). In the training data's dtype.
    intercept_ : ndarray of shape (n_classes,)
    n_iter_ : ndarray of shape (1,)
        Solver iterations, as ``LogisticRegression``.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Only when ``X`` has string feature names.

    Notes
    -----
    float32 data is fitted in float32: the logits, the N x C gradient and the BLAS products
    stay float32 (half the memory traffic of float64); only the coefficient vector that
    scipy's optimiser owns is float64. Sparse ``X`` (CSR) is supported.

    ``decision_function`` returns the logits :math:`W x + b`, shape (n_samples, n_classes),
    except for two classes, where it returns :math:`z_1 - z_0`, shape (n_samples,) (the
    scikit-learn convention: positive means ``classes_[1]``).

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from fastxent.sklearn import SoftmaxRegression
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = SoftmaxRegression(max_iter=200).fit(X, y)
    >>> clf.coef_.shape, clf.predict(X[:3])
    ((3, 4), array([0, 0, 0]))
    >>> round(clf.score(X, y), 3)
    0.973
    >>> clf.predict_proba(X[:1]).round(3)
    array([[0.982, 0.018, 0.   ]])
    """

    def __init__(self, C=1.0, *, fit_intercept=True, class_weight=None, label_smoothing=0.0,
                 solver="lbfgs", max_iter=100, tol=1e-4, warm_start=False, backend=None,
                 n_threads=None, verbose=0):
        self.C = C
        self.fit_intercept = fit_intercept
        self.class_weight = class_weight
        self.label_smoothing = label_smoothing
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.warm_start = warm_start
        self.backend = backend
        self.n_threads = n_threads
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # ------------------------------------------------------------------------ validation

    def _check_params(self):
        C = self.C
        if not isinstance(C, numbers.Real) or isinstance(C, bool) or not C > 0:
            raise ValueError(f"C={C!r} must be a positive float (np.inf for no penalty)")
        if self.solver not in _SOLVERS:
            raise ValueError(f"solver={self.solver!r} is not one of "
                             f"{', '.join(map(repr, _SOLVERS))}")
        if (not isinstance(self.max_iter, numbers.Integral) or isinstance(self.max_iter, bool)
                or self.max_iter < 0):
            raise ValueError(f"max_iter={self.max_iter!r} must be an integer >= 0")
        if not isinstance(self.tol, numbers.Real) or not self.tol >= 0:
            raise ValueError(f"tol={self.tol!r} must be a float >= 0")
        if not (self.class_weight is None or self.class_weight == "balanced"
                or isinstance(self.class_weight, dict)):
            raise ValueError(f"class_weight={self.class_weight!r} must be None, a dict or "
                             f"'balanced'")

    # ---------------------------------------------------------------------------- fit

    def fit(self, X, y, sample_weight=None):
        """Fit the model.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            float32 stays float32; other dtypes become float64. Sparse input becomes CSR.
        y : array-like of shape (n_samples,)
            Class labels (any hashable, sortable type).
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each example in the loss (multiplied by ``class_weight``).

        Returns
        -------
        self : SoftmaxRegression
        """
        if _on_dask(X, y, sample_weight):  # blocks stay on the workers: fastxent.dask
            from ..dask import fit_softmax_regression
            return fit_softmax_regression(self, X, y, sample_weight)
        self._check_params()
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        n_classes = len(self.classes_)
        if n_classes < 2:
            raise ValueError(
                f"SoftmaxRegression needs samples of at least 2 classes in the data, but the "
                f"data contains only one class: {self.classes_[0]!r}")
        n_samples, n_features = X.shape
        dtype = X.dtype
        y_enc = np.ascontiguousarray(y_enc.reshape(-1), dtype=np.intp)

        if sample_weight is not None or self.class_weight is not None:
            sw = _check_sample_weight(sample_weight, X, dtype=dtype)
            if self.class_weight is not None:
                cw = compute_class_weight(self.class_weight, classes=self.classes_, y=y,
                                          sample_weight=sw)
                sw = sw * cw[y_enc].astype(dtype)  # never in place: sw may be the caller's
            sw_sum = float(np.sum(sw, dtype=np.float64))
            weights = (sw / sw_sum).astype(dtype)
        else:
            sw_sum = float(n_samples)
            weights = np.full(n_samples, 1.0 / n_samples, dtype=dtype)
        l2 = 0.0 if np.isinf(self.C) else 1.0 / (self.C * sw_sum)

        objective = _Objective(X, y_enc, weights, n_classes, self.fit_intercept, l2,
                               self.label_smoothing, self.backend, self.n_threads)

        small = n_samples * n_features * n_classes < _BLAS_SERIAL_BELOW
        return self._solve(objective, n_classes, n_features, dtype, serial_blas=small)

    def _solve(self, objective, n_classes, n_features, dtype, serial_blas=False):
        """Minimise ``objective`` from zero (or the previous coefficients with warm_start)
        and set ``coef_``, ``intercept_``, ``n_iter_`` (the in-memory and the dask fit)."""
        n_params = n_classes * (n_features + int(self.fit_intercept))
        w0 = np.zeros(n_params, dtype=np.float64)
        coef = getattr(self, "coef_", None) if self.warm_start else None
        if coef is not None and coef.shape == (n_classes, n_features):
            w0[:n_classes * n_features] = coef.ravel()
            if self.fit_intercept:
                w0[n_classes * n_features:] = self.intercept_

        progress = None
        if self.verbose:
            progress = _Progress(objective, self.tol)
            progress.header(self.solver)
        with threadpool_limits(limits=1, user_api="blas") if serial_blas else _nullcontext():
            res, n_iter, failed = self._minimize(objective, w0, progress)
        if failed:
            hint = (" Increase max_iter or scale the data (e.g. StandardScaler)."
                    if n_iter >= self.max_iter else "")
            warnings.warn(f"{self.solver} failed to converge after {n_iter} iteration(s) "
                          f"(status={res.status}): {res.message}.{hint}", ConvergenceWarning,
                          stacklevel=3)
        W, b = objective.split(res.x)
        self.coef_ = W.astype(dtype)
        self.intercept_ = (b.astype(dtype) if self.fit_intercept
                           else np.zeros(n_classes, dtype=dtype))
        self.n_iter_ = np.array([n_iter], dtype=np.int32)
        return self

    def _minimize(self, objective, w0, progress):
        if self.solver == "lbfgs":
            # LogisticRegression's settings, so that the same tol means the same thing.
            res = optimize.minimize(
                objective, w0, method="L-BFGS-B", jac=True, callback=progress,
                options={"maxiter": self.max_iter, "maxls": 50, "gtol": self.tol,
                         "ftol": 64 * np.finfo(float).eps})
            n_iter = min(res.nit, self.max_iter)
            failed = res.status != 0
        else:
            res = optimize.minimize(
                objective, w0, method="trust-ncg", jac=True, hessp=objective.hessp,
                callback=progress, options={"maxiter": self.max_iter, "gtol": self.tol})
            n_iter = res.nit
            # Status 2: the trust region collapsed because the model's predicted decrease fell
            # below rounding noise. With a gradient already at the working precision's noise
            # floor that is convergence as far as the arithmetic allows (float32 data with a
            # tight tol), not a failure.
            floor = np.sqrt(np.finfo(objective.dtype).eps)
            failed = not res.success and not (res.status == 2
                                              and np.linalg.norm(res.jac) <= floor)
        return res, n_iter, failed

    # ------------------------------------------------------------------------ predict

    def _logits(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", dtype=[np.float64, np.float32],
                          reset=False)
        coef = self.coef_.astype(np.result_type(X.dtype, self.coef_.dtype), copy=False)
        Z = X @ coef.T
        Z = np.ascontiguousarray(Z)
        Z += self.intercept_
        return Z

    def decision_function(self, X):
        """Logits ``X W^T + b``; for two classes the difference ``z_1 - z_0``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes), or (n_samples,) for two classes
        """
        if _on_dask(X):  # lazy, block by block
            from ..dask import predict_softmax_regression
            return predict_softmax_regression(self, X, "decision_function")
        Z = self._logits(X)
        if Z.shape[1] == 2:
            return Z[:, 1] - Z[:, 0]
        return Z

    def predict(self, X):
        """The most probable class of each example (``argmax`` of the logits)."""
        if _on_dask(X):  # lazy, block by block
            from ..dask import predict_softmax_regression
            return predict_softmax_regression(self, X, "predict")
        Z = self._logits(X)  # first: it raises NotFittedError before classes_ is read
        return self.classes_[np.argmax(Z, axis=1)]

    def predict_proba(self, X):
        r"""Class probabilities :math:`\mathrm{softmax}(W x + b)`, shape (n_samples, n_classes)."""
        if _on_dask(X):  # lazy, block by block
            from ..dask import predict_softmax_regression
            return predict_softmax_regression(self, X, "predict_proba")
        Z = self._logits(X)
        return _losses.softmax(Z, out=Z, backend=self.backend, n_threads=self.n_threads)

    def predict_log_proba(self, X):
        r"""Log-probabilities :math:`z - \mathrm{logsumexp}(z)` (never ``log(softmax)``)."""
        if _on_dask(X):  # lazy, block by block
            from ..dask import predict_softmax_regression
            return predict_softmax_regression(self, X, "predict_log_proba")
        Z = self._logits(X)
        return _losses.log_softmax(Z, out=Z, backend=self.backend, n_threads=self.n_threads)
