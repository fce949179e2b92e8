"""``python -m fastxent demo``: SoftmaxRegression next to LogisticRegression on digits.

Uses scikit-learn's bundled digits data (1797 8x8 images, 10 classes; no download), pixels
scaled to [0, 1], a stratified 75/25 split. Both models minimise the same objective with
the same C and tol; the demo prints fastxent's per-iteration progress, then accuracy and
log-loss on the held-out quarter and the fit time of each.
"""

import time
import warnings


def main(args=None):
    try:
        import numpy as np
        from sklearn.datasets import load_digits
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import train_test_split

        from . import SoftmaxRegression, log_loss
    except ImportError as exc:  # the optional extra is missing
        print(f"the demo needs scikit-learn and scipy: pip install \"fastxent[sklearn]\" "
              f"({exc})")
        return 1

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y,
                                                        random_state=0)
    print(f"digits: {X_train.shape[0]} training and {X_test.shape[0]} test images, "
          f"{X.shape[1]} features, {len(np.unique(y))} classes; C=1, tol=1e-4\n")
    params = dict(C=1.0, tol=1e-4, max_iter=1000)
    models = [("fastxent", SoftmaxRegression(verbose=1, **params)),
              ("scikit-learn", LogisticRegression(**params))]
    results = []
    for name, model in models:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a ConvergenceWarning shows in the iterations
            t0 = time.perf_counter()
            model.fit(X_train, y_train)
            elapsed = time.perf_counter() - t0
        accuracy = model.score(X_test, y_test)
        loss = log_loss(y_test, model.decision_function(X_test), from_logits=True)
        results.append((name, accuracy, loss, elapsed, int(model.n_iter_[0])))
        if name == "fastxent":
            print()
    for name, accuracy, loss, elapsed, n_iter in results:
        print(f"{name:<13} accuracy {accuracy:.4f}   test log-loss {loss:.6f}   "
              f"fit {elapsed * 1e3:8.1f} ms   {n_iter} iterations")
    return 0
