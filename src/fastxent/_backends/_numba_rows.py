"""Per-row Numba helpers: one row of each kernel, the maths of ``numpy_.py``.

Shared conventions (see ``numba_.py`` for the design notes):

* Sums (sum of exp, label sums, label dot products) are accumulated per block of
  ``_BLOCK`` classes in the input dtype (the loop vectorises into VF x interleave partial
  sums, so each lane adds only a handful of terms) and the block sums are added into a
  float64 total. A single float32 accumulator is worse than NumPy's pairwise sum on wide
  rows; a float64 accumulator per element halves the vector width (the f32 -> f64
  conversion), this keeps float32 speed with better-than-pairwise accuracy.
* Scalars that enter element loops are converted to the dtype first (``cvt``), so float32
  rows stay float32 vector code.
* ``fastmath=_ROW_FLAGS``: ``reassoc`` lets the block sums vectorise; no ``nnan``/``ninf``
  (masked -inf logits and NaN rows must keep IEEE semantics). The exp/log helpers carry
  their own exact flags (see ``_numba_math``).
* In place (``inplace``: the output is x itself) every loop that stores reads x through the
  output array, so LLVM sees one base pointer and vectorises without a runtime overlap
  check; loops that reduce never store (same summation order in place or not). A row is
  read for its label terms before exp(x - m) overwrites it.
"""

import math

from numba import njit

from ._numba_math import _OPTS, cvt, fexp, fexp_neg, flog1p, maxnum

#: reassoc so the block sums vectorise; no nnan/ninf (-inf masking, NaN propagation).
_ROW_FLAGS = {"nsz", "arcp", "contract", "reassoc"}
#: Classes per block partial sum: long enough to amortise the horizontal add, short
#: enough that each vector lane adds at most 512 / (8 * 4) = 16 terms.
_BLOCK = 512
_INF = math.inf

_row = njit(fastmath=_ROW_FLAGS, **_OPTS)
#: Loop bodies inlined at Numba IR level (same flags as the caller).
_inline = njit(fastmath=_ROW_FLAGS, inline="always", **_OPTS)


# --------------------------------------------------------------------------- row statistics

@_row
def row_max(x, i):
    """max of row i (NaN ignored here: it reaches the row through the sum); -inf -> 0."""
    m = x[i, 0]
    for c in range(1, x.shape[1]):
        m = maxnum(m, x[i, c])
    if m == -_INF:  # all -inf row: shift by 0 so exp(x - m) = 0 and lse = -inf, as NumPy
        m = cvt(0.0, m)
    return m


# Blocked reductions: a ``*_block`` body (inlined at Numba IR level) runs over full blocks
# ``range(c0, c0 + _BLOCK)`` and once over the remainder. The constant trip count matters:
# a clipped ``range(c0, min(c0 + _BLOCK, C))`` vectorises about 2x worse.

@_inline
def sumexp_block(x, i, m, c0, c1):
    bs = cvt(0.0, m)
    for c in range(c0, c1):
        bs += fexp_neg(x[i, c] - m)
    return bs


@_row
def row_sumexp(x, i, m):
    """sum_c exp(x[i, c] - m) in float64."""
    n_classes = x.shape[1]
    n_full = n_classes - n_classes % _BLOCK
    s = 0.0
    for c0 in range(0, n_full, _BLOCK):
        s += sumexp_block(x, i, m, c0, c0 + _BLOCK)
    return s + sumexp_block(x, i, m, n_full, n_classes)


@_row
def exp_store(x, i, m, e, inplace):
    """e[i, c] = exp(x[i, c] - m); in place (e is x) it reads e itself, one base pointer."""
    if inplace:
        for c in range(x.shape[1]):
            e[i, c] = fexp_neg(e[i, c] - m)
    else:
        for c in range(x.shape[1]):
            e[i, c] = fexp_neg(x[i, c] - m)


@_inline
def sum_block(e, i, c0, c1):
    bs = cvt(0.0, e[i, 0])
    for c in range(c0, c1):
        bs += e[i, c]
    return bs


@_row
def row_sum(e, i):
    """sum_c e[i, c] in float64 (blocked, as everywhere)."""
    n_classes = e.shape[1]
    n_full = n_classes - n_classes % _BLOCK
    s = 0.0
    for c0 in range(0, n_full, _BLOCK):
        s += sum_block(e, i, c0, c0 + _BLOCK)
    return s + sum_block(e, i, n_full, n_classes)


@_row
def row_sumexp_store(x, i, m, e, inplace):
    """sum_c exp(x[i, c] - m) in float64, storing each exp in e[i, c].

    The store and the sum are separate loops: a loop that both stores and reduces would
    need a runtime overlap check, whose scalar fallback sums in a different order.
    """
    exp_store(x, i, m, e, inplace)
    return row_sum(e, i)


@_row
def row_lse(x, i):
    m = row_max(x, i)
    return m + math.log(row_sumexp(x, i, m))


# ---------------------------------------------------------------------------- dense labels

@_inline
def dense_block(x, y, cw, a, b, i, m, c0, c1, with_exp):
    """Block sums of exp(x - m) (if with_exp), wy and wy (m - x) over wy != 0."""
    has_cw = cw.shape[0] > 0
    zero = cvt(0.0, m)
    bs = zero
    bw = zero
    bd = zero
    for c in range(c0, c1):
        xc = x[i, c]
        w = a * y[i, c] + b
        if has_cw:
            w = w * cw[c]
        if with_exp:
            bs += fexp_neg(xc - m)
        bw += w
        bd += w * (m - xc) if w != zero else zero
    return bs, bw, bd


@_row
def dense_sums(x, y, cw, a, b, i, m, with_exp):
    """(s, S, dot): sum exp(x - m) (0 unless with_exp), sum wy, sum_{wy != 0} wy (m - x);
    wy = (a y + b) cw."""
    n_classes = x.shape[1]
    n_full = n_classes - n_classes % _BLOCK
    s = 0.0
    big_s = 0.0
    dot = 0.0
    for c0 in range(0, n_full, _BLOCK):
        bs, bw, bd = dense_block(x, y, cw, a, b, i, m, c0, c0 + _BLOCK, with_exp)
        s += bs
        big_s += bw
        dot += bd
    bs, bw, bd = dense_block(x, y, cw, a, b, i, m, n_full, n_classes, with_exp)
    return s + bs, big_s + bw, dot + bd


@_row
def dense_sums_store(x, y, cw, a, b, i, m, e, inplace):
    """dense_sums, storing exp(x - m) in e[i] (after the label terms have read x)."""
    _, big_s, dot = dense_sums(x, y, cw, a, b, i, m, False)
    return row_sumexp_store(x, i, m, e, inplace), big_s, dot


@_inline
def label_block(y, cw, a, b, i, c0, c1):
    has_cw = cw.shape[0] > 0
    bw = a - a
    for c in range(c0, c1):
        w = a * y[i, c] + b
        if has_cw:
            w = w * cw[c]
        bw += w
    return bw


@_row
def dense_label_sum(y, cw, a, b, i):
    n_classes = y.shape[1]
    n_full = n_classes - n_classes % _BLOCK
    big_s = 0.0
    for c0 in range(0, n_full, _BLOCK):
        big_s += label_block(y, cw, a, b, i, c0, c0 + _BLOCK)
    return big_s + label_block(y, cw, a, b, i, n_full, n_classes)


@_row
def row_loss(s, big_s, dot, m, z):
    """S log s + dot + z lse**2 in float64 (S = 0 drops the first term, as NumPy)."""
    logs = math.log(s)
    loss = dot
    if big_s != 0.0:
        loss += big_s * logs
    if z != 0.0:
        lse = m + logs
        loss += z * lse * lse
    return loss


@_row
def dense_grad_from_e(y, cw, a, b, i, cp, sc, grad):
    """grad[i] = (cp e - wy) sc, with e = exp(x - m) already in grad[i]."""
    n_classes = grad.shape[1]
    has_cw = cw.shape[0] > 0
    zero = cp - cp
    for c in range(n_classes):
        w = a * y[i, c] + b
        if has_cw:
            w = w * cw[c]
        p = cp * grad[i, c] if cp != zero else zero
        grad[i, c] = (p - w) * sc


@_row
def dense_grad_from_x(x, y, cw, a, b, i, shift, cp, sc, grad, inplace):
    """grad[i] = (cp exp(x - shift) - wy) sc."""
    n_classes = grad.shape[1]
    has_cw = cw.shape[0] > 0
    zero = cp - cp
    for c in range(n_classes):
        w = a * y[i, c] + b
        if has_cw:
            w = w * cw[c]
        xc = grad[i, c] if inplace else x[i, c]
        p = cp * fexp(xc - shift) if cp != zero else zero
        grad[i, c] = (p - w) * sc


@_row
def softmax_coef(big_s, z, m, s):
    """(coef / s, as float64): gradient multiplier of exp(x - m), coef = S + 2 z lse."""
    coef = big_s
    if z != 0.0:
        coef += 2.0 * z * (m + math.log(s))
    return coef / s if coef != 0.0 else 0.0


# --------------------------------------------------------------------------- sparse labels

@_inline
def smooth_block(x, cw, i, m, c0, c1):
    """Block sum of w (m - x) over w != 0, w = cw or 1 (the label smoothing term)."""
    has_cw = cw.shape[0] > 0
    zero = m - m
    bd = zero
    for c in range(c0, c1):
        if has_cw:
            w = cw[c]
            bd += w * (m - x[i, c]) if w != zero else zero
        else:
            bd += m - x[i, c]
    return bd


@_row
def sparse_smooth_dot(x, cw, i, m):
    n_classes = x.shape[1]
    n_full = n_classes - n_classes % _BLOCK
    dot = 0.0
    for c0 in range(0, n_full, _BLOCK):
        dot += smooth_block(x, cw, i, m, c0, c0 + _BLOCK)
    return dot + smooth_block(x, cw, i, m, n_full, n_classes)


@_row
def sparse_grad_from_e(cw, i, cp, bsm, sc, grad):
    """grad[i] = (cp e - bsm w) sc; the label term at t is added by the caller."""
    n_classes = grad.shape[1]
    has_cw = cw.shape[0] > 0
    zero = cp - cp
    for c in range(n_classes):
        p = cp * grad[i, c] if cp != zero else zero
        if has_cw:
            grad[i, c] = (p - bsm * cw[c]) * sc
        else:
            grad[i, c] = (p - bsm) * sc


@_row
def sparse_grad_from_x(x, cw, i, shift, cp, bsm, sc, grad, inplace):
    n_classes = grad.shape[1]
    has_cw = cw.shape[0] > 0
    zero = cp - cp
    for c in range(n_classes):
        xc = grad[i, c] if inplace else x[i, c]
        p = cp * fexp(xc - shift) if cp != zero else zero
        if has_cw:
            grad[i, c] = (p - bsm * cw[c]) * sc
        else:
            grad[i, c] = (p - bsm) * sc


# ------------------------------------------------------------------------------- hessp

@_inline
def pv_block(x, i, m, v, c0, c1):
    bp = m - m
    for c in range(c0, c1):
        bp += fexp_neg(x[i, c] - m) * v[i, c]
    return bp


@_row
def hessp_row(x, i, m, s, big_s, z, v, sc, out, inplace):
    """out[i] = sc (coef p (v - p.v) + 2 z (p.v) p), p = softmax, coef = S + 2 z lse."""
    n_classes = x.shape[1]
    inv = cvt(1.0 / s, m)
    n_full = n_classes - n_classes % _BLOCK
    pv = 0.0
    for c0 in range(0, n_full, _BLOCK):
        pv += pv_block(x, i, m, v, c0, c0 + _BLOCK)
    pv = (pv + pv_block(x, i, m, v, n_full, n_classes)) / s
    lse = m + math.log(s)
    coef = big_s + 2.0 * z * lse
    k1 = cvt(coef, m)
    k2 = cvt(2.0 * z * pv, m)
    pvd = cvt(pv, m)
    for c in range(n_classes):
        xc = out[i, c] if inplace else x[i, c]
        p = fexp_neg(xc - m) * inv
        out[i, c] = (k1 * (p * (v[i, c] - pvd)) + k2 * p) * sc


# ----------------------------------------------------------------------------- sigmoid

@_row
def sigmoid_loss_elem(xc, yc, pwc, ya, yb, has_pw):
    """a sp(x) + b sp(-x), a = 1 - y', b = y' pw, y' = ya y + yb (zero coefficients dropped)."""
    one = cvt(1.0, xc)
    zero = one - one
    yy = ya * yc + yb
    ca = one - yy
    cb = yy * pwc if has_pw else yy
    lg = cvt(flog1p(float(fexp_neg(-abs(xc)))), xc)
    sp_pos = (xc if xc > zero else zero) + lg
    sp_neg = (-xc if xc < zero else zero) + lg
    return (ca * sp_pos if ca != zero else zero) + (cb * sp_neg if cb != zero else zero)


@_row
def sigmoid_grad_elem(xc, yc, pwc, ya, yb, has_pw):
    """a sigma(x) - b sigma(-x), both from e = exp(-|x|) (no overflow, no cancellation)."""
    one = cvt(1.0, xc)
    zero = one - one
    yy = ya * yc + yb
    ca = one - yy
    cb = yy * pwc if has_pw else yy
    e = fexp_neg(-abs(xc))
    r = one / (one + e)
    er = e * r
    pos = xc >= zero
    return ca * (r if pos else er) - cb * (er if pos else r)


@_row
def sigmoid_row(x, y, pw, ya, yb, i, scale, loss, rowsum, grad, want_loss, want_grad, inplace):
    """Elementwise sigmoid cross-entropy of row i: its loss (row sum or per element), grad.

    The loss loop runs first and reads x before the gradient loop may overwrite it.
    """
    n_classes = x.shape[1]
    has_pw = pw.shape[0] > 0
    if want_loss:
        acc = 0.0
        for c in range(n_classes):
            xc = grad[i, c] if inplace else x[i, c]
            le = sigmoid_loss_elem(xc, y[i, c], pw[c] if has_pw else ya, ya, yb, has_pw)
            if rowsum:
                acc += le
            else:
                loss[i, c] = le
        if rowsum:
            loss[i, 0] = acc
    if want_grad:
        si = i if scale.shape[0] > 1 else i - i  # same int type as i (uint64 under prange)
        per_class_scale = scale.shape[1] > 1
        for c in range(n_classes):
            xc = grad[i, c] if inplace else x[i, c]
            g = sigmoid_grad_elem(xc, y[i, c], pw[c] if has_pw else ya, ya, yb, has_pw)
            grad[i, c] = g * (scale[si, c] if per_class_scale else scale[si, 0])


@_row
def sigmoid_label_grad_row(x, pw, k, i, scale, out, inplace):
    """out = k (-x + (pw - 1) sp(-x)) sc, k = 1 - eps; the pw term dropped where pw == 1."""
    n_classes = x.shape[1]
    has_pw = pw.shape[0] > 0
    si = i if scale.shape[0] > 1 else i - i  # same int type as i (uint64 under prange)
    per_class_scale = scale.shape[1] > 1
    zero = k - k
    for c in range(n_classes):
        xc = out[i, c] if inplace else x[i, c]
        g = -xc
        if has_pw:
            q = pw[c] - cvt(1.0, k)
            if q != zero:
                lg = cvt(flog1p(float(fexp_neg(-abs(xc)))), xc)
                g = g + q * ((-xc if xc < zero else zero) + lg)
        sc = scale[si, c] if per_class_scale else scale[si, 0]
        out[i, c] = k * g * sc


@_row
def label_grad_row(x, cw, k, i, shift, add, sc, out, inplace):
    """out = ((shift - x) + add) k cw sc: -log softmax times the label coefficient."""
    n_classes = x.shape[1]
    has_cw = cw.shape[0] > 0
    for c in range(n_classes):
        neg_logp = (shift - (out[i, c] if inplace else x[i, c])) + add
        if has_cw:
            out[i, c] = neg_logp * (k * cw[c]) * sc
        else:
            out[i, c] = neg_logp * k * sc


@_row
def zero_row(out, i):
    zero = cvt(0.0, out[i, 0])
    for c in range(out.shape[1]):
        out[i, c] = zero
