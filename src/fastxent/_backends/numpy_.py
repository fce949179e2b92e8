"""NumPy reference backend: the readable specification of every kernel, and the asv baseline.

Per row (x = logits, m = max x, d = m - x >= 0, s = sum exp(-d), lse = m + log s):

    p      = exp(-d) / s
    loss   = S log s + sum_c wy_c d_c        (S = sum_c wy_c; = sum wy (lse - x) without
                                              cancelling lse against x)
    d/dx   = S p - wy  (+ 2 z lse p)          right even when S != 1
    d/dy   = (1 - eps) w (lse - x)            TF2 backpropagates into labels

where wy = class_weight * ((1 - eps) y + eps / C). Terms whose coefficient is 0 are skipped so
that a -inf logit with label 0 contributes exactly 0. Idiomatic vectorised NumPy, computed in
the input dtype (that is the fair baseline: what a careful user would write).
"""

import numpy as np

NAME = "numpy"


def is_available():
    return True


def why_unavailable():
    return ""


# --------------------------------------------------------------------------- row statistics

def _shifted(x):
    """Return (m, d = m - x, e = exp(-d), s, log s) for each row."""
    m = np.max(x, axis=1, keepdims=True)
    # An all -inf row has m = -inf; shift by 0 so d stays +inf (e = 0, lse = -inf), not NaN.
    m[m == -np.inf] = 0
    d = m - x
    e = np.exp(-d)
    s = np.sum(e, axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        logs = np.log(s)
    return m, d, e, s, logs


def _masked_dot(w, d):
    """Row sums of w * d with the terms where w == 0 dropped (0 * inf = 0)."""
    with np.errstate(invalid="ignore"):
        return np.sum(np.where(w != 0, w * d, 0), axis=1, keepdims=True)


def _dense_targets(y, cw, eps):
    n_classes = y.shape[1]
    wy = y if eps == 0 else (1 - eps) * y + eps / n_classes
    if len(cw):
        wy = wy * cw
    return wy.astype(y.dtype, copy=False)


def _sparse_targets(x, t, cw, eps, has_ignore, ignore_index):
    """Dense wy for integer labels (rows ignored or out of range are all zero), and n_bad."""
    n, n_classes = x.shape
    valid = (t >= 0) & (t < n_classes)
    keep = valid & ~(t == ignore_index) if has_ignore else valid
    n_bad = int(np.count_nonzero(~valid & ~(t == ignore_index))) if has_ignore else int(
        np.count_nonzero(~valid))
    w = cw if len(cw) else np.ones(n_classes, dtype=x.dtype)
    wy = np.zeros_like(x)
    if eps:
        wy[keep] = (eps / n_classes) * w
    rows = np.flatnonzero(keep)
    wy[rows, t[rows]] += (1 - eps) * w[t[rows]]
    return wy, n_bad


def _scale_col(scale, dtype):
    return np.asarray(scale, dtype=dtype).reshape(-1, 1)


def _losses(wy, d, logs, m, z):
    S = np.sum(wy, axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        loss = np.where(S != 0, S * logs, 0) + _masked_dot(wy, d)
        if z:
            loss = loss + z * (m + logs) ** 2
    return S, loss


def _grad(S, e, s, wy, z, m, logs, scale):
    with np.errstate(invalid="ignore", divide="ignore"):  # s = 0: an all -inf row
        p = e / s
        coef = S + 2 * z * (m + logs) if z else S
        g = np.where(coef != 0, coef * p, 0) - wy
    return g * scale


# ------------------------------------------------------------------------- softmax kernels

def _forward(x, wy, z, loss, lse):
    m, d, _, _, logs = _shifted(x)
    _, row = _losses(wy, d, logs, m, z)
    loss[:] = row[:, 0]
    if len(lse):
        lse[:] = (m + logs)[:, 0]


def _backward(x, wy, z, scale, lse, grad):
    if len(lse):
        lse_col = lse.reshape(-1, 1)
        with np.errstate(invalid="ignore"):
            e = np.exp(x - lse_col)
        m, logs, s = lse_col, np.zeros_like(lse_col), np.ones_like(lse_col)
    else:
        m, _, e, s, logs = _shifted(x)
    S = np.sum(wy, axis=1, keepdims=True)
    grad[:] = _grad(S, e, s, wy, z, m, logs, _scale_col(scale, x.dtype))


def _fused(x, wy, z, scale, loss, grad):
    m, d, e, s, logs = _shifted(x)
    S, row = _losses(wy, d, logs, m, z)
    loss[:] = row[:, 0]
    grad[:] = _grad(S, e, s, wy, z, m, logs, _scale_col(scale, x.dtype))


def _hessp(x, wy, z, scale, v, out):
    m, _, e, s, logs = _shifted(x)
    p = e / s
    S = np.sum(wy, axis=1, keepdims=True)
    pv = np.sum(p * v, axis=1, keepdims=True)
    centred = p * v - p * pv
    hv = S * centred
    if z:
        lse = m + logs
        hv = hv + 2 * z * (lse * centred + p * pv)
    out[:] = hv * _scale_col(scale, x.dtype)


def dense_forward(x, y, cw, eps, z, loss, lse, n_threads):
    _forward(x, _dense_targets(y, cw, eps), z, loss, lse)
    return 0


def dense_backward(x, y, cw, eps, z, scale, lse, grad, n_threads):
    _backward(x, _dense_targets(y, cw, eps), z, scale, lse, grad)
    return 0


def dense_fused(x, y, cw, eps, z, scale, loss, grad, n_threads):
    _fused(x, _dense_targets(y, cw, eps), z, scale, loss, grad)
    return 0


def dense_hessp(x, y, cw, eps, z, scale, v, out, n_threads):
    _hessp(x, _dense_targets(y, cw, eps), z, scale, v, out)
    return 0


def dense_label_grad(x, cw, eps, scale, lse, out, n_threads):
    if len(lse):
        neg_logp = lse.reshape(-1, 1) - x
    else:
        _, d, _, _, logs = _shifted(x)
        neg_logp = d + logs
    coef = (1 - eps) * (cw if len(cw) else 1)
    out[:] = neg_logp * coef * _scale_col(scale, x.dtype)
    return 0


def sparse_forward(x, t, cw, eps, z, has_ignore, ignore_index, loss, lse, n_threads):
    wy, n_bad = _sparse_targets(x, t, cw, eps, has_ignore, ignore_index)
    _forward(x, wy, z, loss, lse)
    _zero_dropped_rows(wy, t, x.shape[1], has_ignore, ignore_index, loss)
    return n_bad


def sparse_backward(x, t, cw, eps, z, has_ignore, ignore_index, scale, lse, grad, n_threads):
    wy, n_bad = _sparse_targets(x, t, cw, eps, has_ignore, ignore_index)
    _backward(x, wy, z, scale, lse, grad)
    _zero_dropped_rows(wy, t, x.shape[1], has_ignore, ignore_index, grad)
    return n_bad


def sparse_fused(x, t, cw, eps, z, has_ignore, ignore_index, scale, loss, grad, n_threads):
    wy, n_bad = _sparse_targets(x, t, cw, eps, has_ignore, ignore_index)
    _fused(x, wy, z, scale, loss, grad)
    _zero_dropped_rows(wy, t, x.shape[1], has_ignore, ignore_index, loss, grad)
    return n_bad


def sparse_hessp(x, t, cw, eps, z, has_ignore, ignore_index, scale, v, out, n_threads):
    wy, n_bad = _sparse_targets(x, t, cw, eps, has_ignore, ignore_index)
    _hessp(x, wy, z, scale, v, out)
    _zero_dropped_rows(wy, t, x.shape[1], has_ignore, ignore_index, out)
    return n_bad


def _zero_dropped_rows(wy, t, n_classes, has_ignore, ignore_index, *outs):
    """Ignored and out-of-range rows contribute nothing (the z-loss included)."""
    dropped = (t < 0) | (t >= n_classes)
    if has_ignore:
        dropped |= t == ignore_index
    for out in outs:
        out[dropped] = 0


# ------------------------------------------------------------------------- sigmoid kernels

def _softplus_pair(x):
    """(softplus(x), softplus(-x)) = (max(x, 0) + l, max(-x, 0) + l), l = log1p(exp(-|x|))."""
    with np.errstate(invalid="ignore"):
        l = np.log1p(np.exp(-np.abs(x)))
    return np.maximum(x, 0) + l, np.maximum(-x, 0) + l


def _sigmoid_coefs(y, pw, eps):
    """Coefficients of softplus(x) and softplus(-x): loss = a sp(x) + b sp(-x)."""
    yy = y if eps == 0 else (1 - eps) * y + eps / 2
    a = 1 - yy
    b = yy * pw if len(pw) else yy
    return a, b


def _sigmoid_loss(x, a, b):
    sp_pos, sp_neg = _softplus_pair(x)
    with np.errstate(invalid="ignore"):
        return np.where(a != 0, a * sp_pos, 0) + np.where(b != 0, b * sp_neg, 0)


def _sigmoid_grad(x, a, b, scale):
    # sigma(x) and sigma(-x) both from e = exp(-|x|), so neither overflows nor cancels.
    e = np.exp(-np.abs(x))
    r = 1 / (1 + e)
    pos = x >= 0
    sig, sig_neg = np.where(pos, r, e * r), np.where(pos, e * r, r)
    return (a * sig - b * sig_neg) * scale


def _store_sigmoid_loss(values, loss):
    if loss.ndim == 2:
        loss[:] = values
    else:
        loss[:] = values.sum(axis=1)


def sigmoid_forward(x, y, pw, eps, loss, n_threads):
    a, b = _sigmoid_coefs(y, pw, eps)
    _store_sigmoid_loss(_sigmoid_loss(x, a, b), loss)
    return 0


def sigmoid_backward(x, y, pw, eps, scale, grad, n_threads):
    a, b = _sigmoid_coefs(y, pw, eps)
    grad[:] = _sigmoid_grad(x, a, b, scale)
    return 0


def sigmoid_fused(x, y, pw, eps, scale, loss, grad, n_threads):
    a, b = _sigmoid_coefs(y, pw, eps)
    values = _sigmoid_loss(x, a, b)
    grad[:] = _sigmoid_grad(x, a, b, scale)
    _store_sigmoid_loss(values, loss)
    return 0


def sigmoid_label_grad(x, pw, eps, scale, out, n_threads):
    # d/dy [(1 - y') sp(x) + q y' sp(-x)] = (1 - eps) (q sp(-x) - sp(x)) = (1 - eps)(-x + (q-1) sp(-x))
    if len(pw):
        _, sp_neg = _softplus_pair(x)
        qm1 = pw - 1
        with np.errstate(invalid="ignore"):
            g = -x + np.where(qm1 != 0, qm1 * sp_neg, 0)
    else:
        g = -x
    out[:] = (1 - eps) * g * scale
    return 0


# ----------------------------------------------------------------------------- utilities

def logsumexp(x, out, n_threads):
    m, _, _, _, logs = _shifted(x)
    out[:] = (m + logs)[:, 0]
    return 0


def log_softmax(x, out, n_threads):
    _, d, _, _, logs = _shifted(x)
    out[:] = -d - logs
    return 0


def softmax(x, out, n_threads):
    _, _, e, s, _ = _shifted(x)
    out[:] = e / s
    return 0
