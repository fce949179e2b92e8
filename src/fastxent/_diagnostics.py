"""Diagnostics: catch the mistakes users make, from the values, inside the kernels' pass.

The kernels count, per call, rows whose logits look like probabilities (every value in
[0, 1] and the row summing to 1 within ``prob_tol``), rows holding NaN or +inf logits (or
-inf under a target: -inf on a class with target 0 is the documented way to mask it), and
dense label rows holding NaN, negative entries, entries above 1, or not summing to 1; the
sigmoid kernels count logits inside (0, 1] (not [0, 1]: the all-zero logits of a
zero-initialised model are not sigmoid outputs, which are never 0). The boundary's ``check``
mode turns the counts into an :class:`InputWarning` ("warn"), a ValueError with the same
text ("raise"), or nothing ("off"). Each message names the argument, what was seen, the
first offending row, and the fix.

Tolerances. A softmax output in a float format with unit roundoff u sums to 1 within about
C u (each of the C values rounded once, plus the sum): float32 rows of 32768 classes within
~2e-3 at worst, typically far less. The check accepts ``16 C u`` of the logits' own dtype
(bfloat16 and float16 probabilities keep theirs), at least 1e-5 and at most 1e-2; real
logits all inside [0, 1] whose rows sum to 1 that closely do not occur in practice
(tests/test_diagnostics.py feeds trained and random logits and asserts silence). Labels use
the same tolerance for "does not sum to 1".
"""

import os
import sys
import warnings

import numpy as np

from ._backends import CHECK_LABELS, CHECK_NONFINITE, CHECK_PROB, DIAG


class InputWarning(UserWarning):
    """fastxent saw inputs that look like a mistake (see ``check=`` on every loss)."""


_UNIT_ROUNDOFF = {np.dtype(np.float16): 2.0 ** -11, np.dtype(np.float32): 2.0 ** -24,
                  np.dtype(np.float64): 2.0 ** -53}


def tolerance(n_classes, dtype):
    """|row sum - 1| within which a row of C values in [0, 1] counts as a distribution."""
    u = _UNIT_ROUNDOFF.get(np.dtype(dtype), 2.0 ** -8)  # bfloat16 and anything narrower
    return min(1e-2, max(1e-5, 16 * n_classes * u))


def bits(p):
    """The kernel's ``check`` bits for problem p."""
    if p.check == "off":
        return 0
    if p.kind == "dense":
        return CHECK_PROB | CHECK_NONFINITE | CHECK_LABELS
    return CHECK_PROB | CHECK_NONFINITE


def tolerances(p):
    """(prob_tol, label_tol) of problem p (its logits' dtype as the user gave them)."""
    if p.check == "off":
        return 0.0, 0.0
    dtype = getattr(p.user_x, "dtype", p.x.dtype)
    tol = tolerance(p.n_classes, dtype)
    return tol, tol


def _where(p, row):
    """The user's index of canonical row ``row``."""
    if not p.lead:
        return "0"
    pos = np.unravel_index(row, p.lead)
    return ", ".join(str(int(i)) for i in pos)


def messages(p, status):
    """The texts of what a call's counts say, in order of seriousness."""
    d, f = status.diag, status.first
    n = p.n_rows
    lname, xname = p.names
    out = []
    if d["nonfinite_rows"]:
        out.append(
            f"{d['nonfinite_rows']} of {n} rows of {xname} hold NaN or +inf (or -inf on a class "
            f"with a nonzero target), first row [{_where(p, f['nonfinite_rows'])}]: their "
            f"losses and gradients are NaN or inf; find where the {xname} overflow (a "
            f"learning rate too high, a log of 0), or mask a class with -inf only where its "
            f"target is 0")
    if p.kind == "sigmoid":
        size = p.x.size
        if size and d["unit_elems"] == size and size >= 2:
            out.append(
                f"all {size} values of {xname} lie in (0, 1]: they look like sigmoid outputs "
                f"(probabilities), not logits; pass the values before the sigmoid, or use "
                f"binary_crossentropy(..., from_logits=False)")
    elif n and d["prob_rows"] == n and p.n_classes >= 2:
        out.append(
            f"all {n} rows of {xname} lie in [0, 1] and sum to 1 within "
            f"{tolerance(p.n_classes, getattr(p.user_x, 'dtype', p.x.dtype)):.0e}: they look "
            f"like softmax outputs (probabilities), not logits; pass the values before the "
            f"softmax, or use from_logits=False (categorical_crossentropy)")
    if p.kind == "dense":
        if d["nan_label_rows"]:
            out.append(f"{d['nan_label_rows']} of {n} rows of {lname} hold NaN, first row "
                       f"[{_where(p, f['nan_label_rows'])}]: their losses and gradients are "
                       f"NaN; find where the {lname} are made (a division by a zero sum?), "
                       f"or drop those rows")
        if d["neg_label_rows"]:
            out.append(f"{d['neg_label_rows']} of {n} rows of {lname} have negative entries, "
                       f"first row [{_where(p, f['neg_label_rows'])}]: {lname} must be a "
                       f"distribution; pass one-hot or probability {lname} (entries in "
                       f"[0, 1] summing to 1)")
        if d["big_label_rows"] and d["big_label_rows"] == n:
            out.append(f"every one of the {n} rows of {lname} has entries above 1: they look "
                       f"like logits, not a distribution; pass one-hot or probability "
                       f"{lname} (softmax them first if they are scores)")
        elif d["sum_label_rows"]:
            out.append(
                f"{d['sum_label_rows']} of {n} rows of {lname} do not sum to 1 (first row "
                f"[{_where(p, f['sum_label_rows'])}]); fastxent's gradient is right for any "
                f"label mass, but {lname} are most likely meant to be a distribution: "
                f"normalise them, or pass check='off' if the mass is deliberate")
    return out


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn(text):
    """Issue an InputWarning attributed to the first caller outside fastxent (the depth of
    fastxent's own frames differs between entry points)."""
    level, frame = 2, sys._getframe(1)  # stacklevel 2: the caller of warn()
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        level, frame = level + 1, frame.f_back
    warnings.warn(text, InputWarning, stacklevel=level)


def report(p, status):
    """Warn or raise for what a call's counts say (``p.check`` is "warn" or "raise")."""
    texts = messages(p, status)
    if not texts:
        return
    text = "fastxent: " + "; ".join(texts)
    if p.check == "raise":
        raise ValueError(text)
    warn(text)


def empty_mean(p):
    """A mean over nothing: every example ignored or of weight 0."""
    if p.check == "off":
        return
    text = (f"fastxent: reduction='mean' over nothing: every one of the {p.n_rows} examples "
            f"is ignored (ignore_index) or has weight 0, so the loss is 0 with a zero gradient; "
            f"check the labels and weights of this batch")
    if p.check == "raise":
        raise ValueError(text)
    warn(text)
