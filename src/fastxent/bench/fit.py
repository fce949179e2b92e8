"""Fit time of fastxent's SoftmaxRegression against scikit-learn's LogisticRegression.

Both minimise the same objective (multinomial log-loss + ||W||^2 / (2 C), intercepts not
penalised) with L-BFGS-B and the same tolerance; they run side by side in one process, in
alternation, and the table shows the median of ``--repeats`` fits each, the iterations, the
training log-loss of each and their relative difference, and the speed-up::

    python -m fastxent fitbench [--repeats 5] [--tol 1e-4] [--synthetic-rows N] [--threads N]
                                [--datasets iris,digits,synthetic,make_classification]

Datasets: iris, digits (pixels / 16), and a synthetic 100k x 50 x 10 problem drawn from a
softmax model (``--synthetic-rows`` to change its size), in float32 and float64. Timings
depend on the machine's load. By default every thread pool is left as it is (what a user gets:
SoftmaxRegression runs BLAS on one thread for small problems, LogisticRegression does not);
``--threads N`` caps BLAS and fastxent's kernels at N threads for both.

Columns: ``d ll`` is fastxent's training log-loss relative to LogisticRegression's on the
same data (informative only: the log-loss alone trades against the penalty, so two solvers
stopping at the same tolerance can differ in it by more than the tolerance); ``d obj`` is
the relative difference of the penalised objective that both minimise, evaluated in float64,
from LogisticRegression's float64 fit (the quantity a converged solver guarantees: it is
quadratic in the distance to the optimum).
"""

import contextlib
import statistics
import sys
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits, load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from ..sklearn import SoftmaxRegression


def synthetic(n_samples, n_features=50, n_classes=10, seed=0):
    """Features N(0, 1); labels drawn from softmax(X W + b) for a random W (well posed)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    W = rng.standard_normal((n_features, n_classes)) / np.sqrt(n_features) * 2.0
    Z = X @ W + rng.standard_normal(n_classes)
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    y = (P.cumsum(axis=1) > rng.random((n_samples, 1))).argmax(axis=1)
    return X, y


DATASETS = ("iris", "digits", "synthetic", "make_classification")


def datasets(n_synthetic, names=DATASETS[:3]):
    if "iris" in names:
        X, y = load_iris(return_X_y=True)
        yield "iris", X, y
    if "digits" in names:
        X, y = load_digits(return_X_y=True)
        yield "digits", X / 16.0, y
    if "synthetic" in names:
        X, y = synthetic(n_synthetic)
        yield f"synthetic {n_synthetic // 1000}k x 50 x 10", X, y
    if "make_classification" in names:
        from sklearn.datasets import make_classification
        X, y = make_classification(n_synthetic, 50, n_informative=30, n_classes=10,
                                   random_state=0)
        yield f"make_clf {n_synthetic // 1000}k x 50 x 10", X, y


def objective(model, X, y, C):
    """Training log-loss and the penalised objective LogisticRegression minimises (/ n)."""
    P = model.predict_proba(X).astype(np.float64)
    P /= P.sum(axis=1, keepdims=True)
    ll = log_loss(y, P)
    return ll, ll + np.sum(model.coef_.astype(np.float64) ** 2) / (2 * C * len(y))


def time_fit(make, X, y, repeats):
    times, model = [], None
    for _ in range(repeats):
        model = make()
        t0 = time.perf_counter()
        model.fit(X, y)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), model


def add_arguments(parser):
    parser.add_argument("--repeats", type=int, default=5, help="fits timed per cell (>= 1)")
    parser.add_argument("--tol", type=float, default=1e-4, help="solver tolerance (> 0)")
    parser.add_argument("--C", type=float, default=1.0, help="inverse L2 strength (> 0)")
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--synthetic-rows", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=None,
                        help="cap BLAS and fastxent threads (default: leave as is)")
    parser.add_argument("--datasets", default="iris,digits,synthetic",
                        help=f"comma-separated subset of {','.join(DATASETS)} (the last: "
                             f"make_classification(rows, 50, n_informative=30, n_classes=10, "
                             f"random_state=0), issue 15's estimator target)")
    return parser


def main(args):
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    if args.repeats < 1 or not args.tol > 0 or not args.C > 0 or args.synthetic_rows < 100 \
            or not names or any(n not in DATASETS for n in names):
        print(f"fastxent fitbench: error: --repeats >= 1, --tol > 0, --C > 0, "
              f"--synthetic-rows >= 100 and --datasets a subset of {','.join(DATASETS)}",
              file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        if args.threads is not None:
            import fastxent
            from threadpoolctl import threadpool_limits
            stack.enter_context(threadpool_limits(limits=args.threads, user_api="blas"))
            stack.enter_context(fastxent.threads(args.threads))
        run(args)


def run(args):
    warnings.simplefilter("ignore", ConvergenceWarning)
    kw = dict(C=args.C, tol=args.tol, max_iter=args.max_iter)
    head = (f"{'dataset':<24} {'dtype':<8} {'fastxent s':>10} {'sklearn s':>10} "
            f"{'speed-up':>8} {'iters fx/sk':>12} {'log-loss fx':>12} {'d ll':>9} "
            f"{'d obj':>9}")
    print(head)
    print("-" * len(head))
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    for name, X, y in datasets(args.synthetic_rows, names):
        obj_f64 = None
        for dtype in (np.float64, np.float32):
            Xd = np.ascontiguousarray(X, dtype=dtype)
            # Warm both once (imports, kernel compilation, BLAS start-up) before timing.
            SoftmaxRegression(**kw).fit(Xd[:200], y[:200])
            LogisticRegression(**kw).fit(Xd[:200], y[:200])
            t_fx, fx = time_fit(lambda: SoftmaxRegression(**kw), Xd, y, args.repeats)
            t_sk, sk = time_fit(lambda: LogisticRegression(**kw), Xd, y, args.repeats)
            ll_fx, obj_fx = objective(fx, X, y, args.C)
            ll_sk, obj_sk = objective(sk, X, y, args.C)
            obj_f64 = obj_sk if obj_f64 is None else obj_f64
            print(f"{name:<24} {np.dtype(dtype).name:<8} {t_fx:10.4f} {t_sk:10.4f} "
                  f"{t_sk / t_fx:7.2f}x {fx.n_iter_[0]:>5d}/{sk.n_iter_[0]:<6d} "
                  f"{ll_fx:12.8f} {(ll_fx - ll_sk) / ll_sk:9.1e} "
                  f"{(obj_fx - obj_f64) / obj_f64:9.1e}", flush=True)


