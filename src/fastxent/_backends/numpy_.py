"""NumPy reference backend: the readable specification of every kernel, and the asv baseline.

Per softmax row, with z the (softcapped) logits, m = max z, d = m - z >= 0, e = exp(-d),
s1 = the sum of e over the classes where z < m, cnt = the number of classes where z == m:

    s      = cnt + s1
    log s  = log1p(s1 + cnt - 1)           a confident row keeps its tail (s1 < eps)
    lse    = m + log s,   p = e / s
    loss   = S log s + sum_c wy_c d_c      (S = sum_c wy_c; never lse - x: no cancellation)
    d/dz   = coef p - wy,  coef = S + 2 z lse   right even when S != 1
             the dominant class (cnt = 1): (coef - wy_a) - coef s1 / s, without cancellation
    d/dy   = (1 - eps) w (lse - z)          TF2 backpropagates into labels

where wy = class_weight * ((1 - eps) y + eps / C). Terms whose coefficient is 0 are dropped so
that a -inf logit with label 0 contributes exactly 0. Idiomatic vectorised NumPy in the
input dtype: what a careful user would write, and the fair baseline.
"""

import numpy as np

from . import (CHECK_LABELS, CHECK_NONFINITE, CHECK_PROB, DIAG, HESSP, LABEL_GRAD, LOG_SOFTMAX,
               LOGSUMEXP, SIGMOID, SIGMOID_LABEL_GRAD, SIGNAL_BLOCK_ELEMS, SOFTMAX, SOFTMAX_PROB,
               Status, in_row_blocks)

NAME = "numpy"


def is_available():
    return True


def why_unavailable():
    return ""


#: NumPy makes ~20 passes per element: a sixteenth of the compiled backends' block.
_SIGNAL_BLOCK_ELEMS = SIGNAL_BLOCK_ELEMS >> 4


def run(call, n_threads):
    """Run one KernelCall (``n_threads`` is ignored: NumPy's ufuncs are single-threaded), in
    row blocks of about a million elements so that Ctrl-C is taken between them."""
    n, C = call.x.shape
    rows = max(1, _SIGNAL_BLOCK_ELEMS // max(C, 1))
    family = _FAMILIES[call.family]
    with np.errstate(all="ignore"):
        if n <= rows:
            return family(call)
        return in_row_blocks(lambda block, r0, r1: family(block), call, rows)


# --------------------------------------------------------------------------- row statistics

def _softcap(x, cap):
    return x if not cap else (cap * np.tanh(x / cap)).astype(x.dtype, copy=False)


def _stats(z):
    """(m, d, e, s1, cnt, log s) per row, as columns: see the module docstring."""
    m = np.max(z, axis=1, keepdims=True)
    m[m == -np.inf] = 0  # an all -inf row: shift by 0 so d = +inf (e = 0, lse = -inf)
    d = m - z
    e = np.exp(-d)
    top = z == m
    cnt = np.sum(top, axis=1, keepdims=True).astype(z.dtype)
    s1 = np.sum(np.where(top, 0, e), axis=1, keepdims=True)
    logs = np.where(cnt >= 1, np.log1p(s1 + (cnt - 1)), np.log(s1))
    return m, d, e, s1, cnt, logs


def _masked_dot(w, d):
    """Row sums of w * d with the terms where w == 0 dropped (0 * inf = 0)."""
    return np.sum(np.where(w != 0, w * d, 0), axis=1, keepdims=True)


def _col(a, dtype):
    return np.asarray(a, dtype=dtype).reshape(-1, 1)


def _targets(call):
    """(wy (n, C), dropped rows (n,) bool or None, n_bad) for dense or integer labels."""
    x = call.x
    n, C = x.shape
    eps, ncls = call.eps, call.n_classes or C
    w = call.cw if call.cw is not None else np.ones(C, x.dtype)
    if call.y is not None:
        y = np.broadcast_to(call.y, x.shape)
        wy = ((1 - eps) * y + eps / ncls) * w if eps else y * w
        return wy.astype(x.dtype, copy=False), None, 0
    t = call.t
    valid = (t >= 0) & (t < C)
    ignored = (t == call.ignore_index) if call.ignore_index is not None else np.zeros(n, bool)
    if call.shard:
        keep, dropped, n_bad = ~ignored, ignored, 0
    else:
        keep = valid & ~ignored
        dropped = ~keep
        n_bad = int(np.count_nonzero(~valid & ~ignored))
    wy = np.zeros_like(x)
    if eps:
        wy[keep] = (eps / ncls) * w
    rows = np.flatnonzero(keep & valid)
    wy[rows, t[rows]] += (1 - eps) * w[t[rows]]
    return wy, dropped, n_bad


def _row_scale(call, dtype):
    scale = call.gscale if call.rs is None else call.gscale * call.rs
    return _col(scale, dtype) if np.ndim(scale) <= 1 else np.asarray(scale, dtype)


def _total(call, loss_rows):
    if call.loss is None and not call.want_total:
        return 0.0
    w = 1.0 if call.rs is None else np.asarray(call.rs, np.float64).reshape(loss_rows.shape)
    return float(np.sum(loss_rows.astype(np.float64) * w))


# ------------------------------------------------------------------------- softmax kernels

def _softmax(call):
    x = call.x
    z = _softcap(x, call.softcap)
    wy, dropped, n_bad = _targets(call)
    S = np.sum(wy, axis=1, keepdims=True)
    if call.lse_in is not None:
        _backward_from_lse(call, z, wy, S, dropped)
        return Status(n_bad, 0.0, None, None)
    m, d, e, s1, cnt, logs = _stats(z)
    lse = m + logs
    loss = np.where(S != 0, S * logs, 0) + _masked_dot(wy, d)
    if call.z:
        loss = loss + call.z * lse ** 2
    if dropped is not None:
        loss[dropped] = 0
    if call.lse_out is not None:
        call.lse_out[:] = lse[:, 0]
    if call.loss is not None:
        call.loss[:] = loss[:, 0]
    diag = _check_softmax(call, x, wy, d) if call.check else None
    if call.grad is not None:
        coef = S + 2 * call.z * lse if call.z else S
        s = cnt + s1
        g = np.where(coef != 0, coef * e / s, 0) - wy
        # the dominant class without cancellation: coef p_a - wy_a = (coef - wy_a) - coef s1/s
        rows = np.flatnonzero((cnt[:, 0] == 1) & (coef[:, 0] != 0))
        a = np.argmax(z[rows], axis=1)
        g[rows, a] = (coef[rows, 0] - wy[rows, a]) - coef[rows, 0] * s1[rows, 0] / s[rows, 0]
        _store_grad(call, g, x, dropped)
    return Status(n_bad, _total(call, loss[:, 0]), *(diag or (None, None)))


def _backward_from_lse(call, z, wy, S, dropped):
    lse = _col(call.lse_in, z.dtype)
    if call.coef_in is not None:
        coef = _col(call.coef_in, z.dtype)
    else:
        coef = S + 2 * call.z * lse if call.z else S
    g = np.where(coef != 0, coef * np.exp(z - lse), 0) - wy
    if call.t is not None:
        # the target's term from expm1: coef p_t - wy_t = coef expm1(z_t - lse) + coef - wy_t
        n, C = z.shape
        rows = np.flatnonzero((call.t >= 0) & (call.t < C))
        t = call.t[rows]
        pm1 = np.where(coef[rows, 0] != 0, np.expm1(z[rows, t] - lse[rows, 0]), -1)
        g[rows, t] = coef[rows, 0] * pm1 + (coef[rows, 0] - wy[rows, t])
    _store_grad(call, g, call.x, dropped)


def _store_grad(call, g, x, dropped):
    g = g * _row_scale(call, x.dtype)
    if call.softcap:
        th = np.tanh(x / call.softcap)
        g = g * (1 - th * th)
    if dropped is not None:
        g[dropped] = 0
    call.grad[:] = g


def _hessp(call):
    x = call.x
    wy, dropped, n_bad = _targets(call)
    S = np.sum(wy, axis=1, keepdims=True)
    m, d, e, s1, cnt, logs = _stats(x)
    p = e / (cnt + s1)
    pv = np.sum(p * call.v, axis=1, keepdims=True)
    centred = p * call.v - p * pv
    hv = S * centred
    if call.z:
        hv = hv + 2 * call.z * ((m + logs) * centred + p * pv)
    hv = hv * _row_scale(call, x.dtype)
    if dropped is not None:
        hv[dropped] = 0
    call.grad[:] = hv
    return Status(n_bad, 0.0, None, None)


def _label_grad(call):
    x = _softcap(call.x, call.softcap)
    if call.lse_in is not None:
        neg_logp = _col(call.lse_in, x.dtype) - x
    else:
        _, d, _, _, _, logs = _stats(x)
        neg_logp = d + logs
    w = call.cw if call.cw is not None else 1
    call.grad[:] = neg_logp * ((1 - call.eps) * w) * _row_scale(call, x.dtype)
    return Status(0, 0.0, None, None)


# ------------------------------------------------------------------------- sigmoid kernels

def _softplus_pair(x):
    """(softplus(x), softplus(-x)) = (max(x, 0) + l, max(-x, 0) + l), l = log1p(exp(-|x|))."""
    l = np.log1p(np.exp(-np.abs(x)))
    return np.maximum(x, 0) + l, np.maximum(-x, 0) + l


def _sigmoid(call):
    """loss = a sp(x) + b sp(-x), a = 1 - y', b = q y', y' = (1 - eps) y + eps / 2;
    d/dx = a sigmoid(x) - b sigmoid(-x). Zero-coefficient terms are dropped."""
    x, eps = call.x, call.eps
    yy = call.y if eps == 0 else (1 - eps) * call.y + eps / 2
    a = 1 - yy
    b = yy * call.cw if call.cw is not None else yy
    diag = None
    if call.loss is not None or call.want_total or call.check:
        sp_pos, sp_neg = _softplus_pair(x)
        values = (np.where(a != 0, a * sp_pos, 0) + np.where(b != 0, b * sp_neg, 0)).astype(
            x.dtype, copy=False)
        if call.loss is not None:
            call.loss[:] = values if call.loss.ndim == 2 else values.sum(axis=1)
        if call.check:
            diag = _check_sigmoid(call, x, values)
    if call.grad is not None:
        # sigma(x) and sigma(-x) both from e = exp(-|x|): neither overflows nor cancels
        e = np.exp(-np.abs(x))
        r = 1 / (1 + e)
        pos = x >= 0
        sig, sig_neg = np.where(pos, r, e * r), np.where(pos, e * r, r)
        call.grad[:] = (a * sig - b * sig_neg) * _row_scale(call, x.dtype)
    total = 0.0
    if call.loss is not None or call.want_total:
        w = 1.0 if call.rs is None else (call.rs if call.rs.ndim == 2 else call.rs[:, None])
        total = float(np.sum(values.astype(np.float64) * w))
    return Status(0, total, *(diag or (None, None)))


def _sigmoid_label_grad(call):
    """d/dy [(1 - y') sp(x) + q y' sp(-x)] = (1 - eps) (-x + (q - 1) sp(-x))."""
    x = call.x
    g = -x
    if call.cw is not None:
        _, sp_neg = _softplus_pair(x)
        qm1 = call.cw - 1
        g = -x + np.where(qm1 != 0, qm1 * sp_neg, 0)
    call.grad[:] = (1 - call.eps) * g * _row_scale(call, x.dtype)
    return Status(0, 0.0, None, None)


# ------------------------------------------------------------------------------- utilities

def _logsumexp(call):
    m, _, _, _, _, logs = _stats(call.x)
    call.grad[:] = (m + logs)[:, 0]
    return Status(0, 0.0, None, None)


def _log_softmax(call):
    _, d, _, _, _, logs = _stats(call.x)
    call.grad[:] = -d - logs
    return Status(0, 0.0, None, None)


def _softmax_prob(call):
    _, _, e, s1, cnt, _ = _stats(call.x)
    call.grad[:] = e / (cnt + s1)
    return Status(0, 0.0, None, None)


# ----------------------------------------------------------------------------- diagnostics

def _count(flags):
    rows = np.flatnonzero(flags)
    return int(rows.size), int(rows[0]) if rows.size else -1


def _check_softmax(call, x, wy, d):
    diag, first = dict.fromkeys(DIAG, 0), dict.fromkeys(DIAG, -1)

    def put(name, flags):
        diag[name], first[name] = _count(flags)
    if call.check & CHECK_PROB:
        put("prob_rows", (x.min(axis=1) >= 0) & (x.max(axis=1) <= 1) &
            (np.abs(x.sum(axis=1, dtype=np.float64) - 1) <= call.prob_tol))
    if call.check & CHECK_NONFINITE:
        # NaN or +inf anywhere, or -inf under a target (-inf masking a class is documented)
        bad = np.isnan(x).any(axis=1) | np.isposinf(x).any(axis=1)
        bad |= (np.isneginf(x) & (wy != 0)).any(axis=1)
        put("nonfinite_rows", bad)
    if call.check & CHECK_LABELS and call.y is not None:
        y = call.y
        nan = np.isnan(y).any(axis=1)
        ysum = y.sum(axis=1, dtype=np.float64)
        put("nan_label_rows", nan)
        put("neg_label_rows", ~nan & (y < 0).any(axis=1))
        put("big_label_rows", ~nan & (y > 1).any(axis=1))
        put("sum_label_rows", ~nan & (np.abs(ysum - 1) > call.label_tol))
    return diag, first


def _check_sigmoid(call, x, values):
    diag, first = dict.fromkeys(DIAG, 0), dict.fromkeys(DIAG, -1)
    unit = (x > 0) & (x <= 1)  # all-zero logits (a zero-initialised model) are not outputs
    diag["unit_elems"] = int(np.count_nonzero(unit))
    first["unit_elems"] = _count(unit.any(axis=1))[1]
    diag["nonfinite_rows"], first["nonfinite_rows"] = _count(~np.isfinite(values).all(axis=1))
    return diag, first


_FAMILIES = {SOFTMAX: _softmax, HESSP: _hessp, LABEL_GRAD: _label_grad, SIGMOID: _sigmoid,
             SIGMOID_LABEL_GRAD: _sigmoid_label_grad, LOGSUMEXP: _logsumexp,
             LOG_SOFTMAX: _log_softmax, SOFTMAX_PROB: _softmax_prob}
