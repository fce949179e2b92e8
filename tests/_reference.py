"""A naive float64 oracle: obvious loops over rows and classes with math.fsum.

Independent of the package: no shared helper, no vectorisation, every reduction spelled out.
Only for small problems.
"""

import math

import numpy as np


def _lse(row):
    m = max(row)
    if m == -math.inf:
        return -math.inf
    return m + math.log(math.fsum(math.exp(v - m) for v in row))


def softmax_row(x, y, cw=None, eps=0.0, z=0.0):
    """(loss, d/dx, d/dy) of one row with dense targets, all in float64."""
    C = len(x)
    lse = _lse(x)
    w = cw if cw is not None else [1.0] * C
    wy = [w[c] * ((1 - eps) * y[c] + eps / C) for c in range(C)]
    loss = math.fsum(wy[c] * (lse - x[c]) for c in range(C) if wy[c] != 0)
    if z:
        loss += z * lse * lse
    S = math.fsum(wy)
    p = [math.exp(v - lse) for v in x]
    grad = [(S + 2 * z * lse) * p[c] - wy[c] for c in range(C)]
    dy = [(1 - eps) * w[c] * (lse - x[c]) for c in range(C)]
    return loss, grad, dy


def softmax_hessp_row(x, y, v, cw=None, eps=0.0, z=0.0):
    C = len(x)
    lse = _lse(x)
    w = cw if cw is not None else [1.0] * C
    S = math.fsum(w[c] * ((1 - eps) * y[c] + eps / C) for c in range(C))
    p = [math.exp(t - lse) for t in x]
    pv = math.fsum(p[c] * v[c] for c in range(C))
    # H = (S + 2 z lse)(diag p - p p^T) + 2 z p p^T
    return [(S + 2 * z * lse) * (p[c] * v[c] - p[c] * pv) + 2 * z * p[c] * pv
            for c in range(C)]


def _softplus(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _sigmoid(x):
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def sigmoid_elem(x, y, q=1.0, eps=0.0):
    """(loss, d/dx, d/dy) for one element: TF's weighted_cross_entropy_with_logits."""
    ys = (1 - eps) * y + eps / 2
    loss = (1 - ys) * _softplus(x) + q * ys * _softplus(-x)
    grad = (1 - ys) * _sigmoid(x) - q * ys * _sigmoid(-x)
    dy = (1 - eps) * (-_softplus(x) + q * _softplus(-x))
    return loss, grad, dy


def onehot(t, C):
    y = np.zeros((len(t), C))
    for i, k in enumerate(t):
        if 0 <= k < C:
            y[i, k] = 1.0
    return y


def softmax_batch(x, y, *, cw=None, eps=0.0, z=0.0, sw=None, reduction="none",
                  keep=None, denom_w=None, grad_loss=None):
    """Loss, gradient, label gradient over a 2-D batch with reduction, in float64.

    ``keep``: rows that count (ignore_index); ``denom_w``: per-row weight in the mean's
    denominator besides the sample weight (class weight of the target for integer labels).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n, C = x.shape
    cwl = None if cw is None else [float(v) for v in cw]
    keep = [True] * n if keep is None else list(keep)
    sw = [1.0] * n if sw is None else [float(v) for v in sw]
    dw = [1.0] * n if denom_w is None else [float(v) for v in denom_w]
    losses, grads, dys = np.zeros(n), np.zeros((n, C)), np.zeros((n, C))
    for i in range(n):
        if not keep[i]:
            continue
        loss, g, dy = softmax_row(list(x[i]), list(y[i]), cwl, eps, z)
        losses[i], grads[i], dys[i] = loss, g, dy
    if reduction == "none":
        up = [1.0] * n if grad_loss is None else list(np.broadcast_to(grad_loss, (n,)))
        scale = [sw[i] * up[i] for i in range(n)]
        value = np.array([sw[i] * losses[i] for i in range(n)])
    else:
        g0 = 1.0 if grad_loss is None else float(grad_loss)
        total = math.fsum(sw[i] * losses[i] for i in range(n))
        W = math.fsum(sw[i] * dw[i] for i in range(n) if keep[i])
        div = W if reduction == "mean" else 1.0
        value = (total / div) if div else 0.0
        scale = [(sw[i] * g0 / div) if div else 0.0 for i in range(n)]
    s = np.array(scale).reshape(-1, 1)
    return value, grads * s, dys * s, s


def sigmoid_batch(x, y, *, pw=None, eps=0.0, sw=None, reduction="none"):
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n, C = x.shape
    q = [1.0] * C if pw is None else list(np.broadcast_to(pw, (C,)))
    sw = np.ones((n, 1)) if sw is None else np.asarray(sw, np.float64).reshape(n, -1)
    L, G, D = np.zeros((n, C)), np.zeros((n, C)), np.zeros((n, C))
    for i in range(n):
        for c in range(C):
            L[i, c], G[i, c], D[i, c] = sigmoid_elem(x[i, c], y[i, c], q[c], eps)
    swf = np.broadcast_to(sw, (n, C))
    if reduction == "none":
        return L * swf, G * swf, D * swf
    total = math.fsum((L * swf).ravel())
    W = math.fsum(swf.ravel()) if reduction == "mean" else 1.0
    return total / W, G * swf / W, D * swf / W
