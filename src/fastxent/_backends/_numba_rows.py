"""The Numba backend's row kernels: one row of each family, the maths of ``numpy_.py`` and
of the C kernels (``_cython/fxe_rows.h``), with one signature ``row(A, S, i, scratch, cnt)``.

``A`` is the tuple of arrays of a KernelCall in numba layout (absent arrays are empty; row
weights, losses and one-column outputs are 2-D so that every family types the same way):
``(x, y, t, cw, rs, lse_in, coef_in, v, loss, grad, lse_out)``; ``S`` the tuple of scalars
(see ``numba_.py``); ``scratch`` one row of the logits' dtype per task; ``cnt`` the task's
counters (``[nbad, diag..., first...]``). A row returns its loss times its row weight.

Per softmax row: pass 1 the max (from memory), pass 2 exp(x - m) stored once per element
(into the gradient, or the scratch row when the gradient is the logits themselves or the
logits are softcapped) with the sums, pass 3 the gradient from the stored values (in L2).
Sums run over blocks of ``_BLOCK`` classes in the input dtype and are added in float64; row
scalars are float64. ``fastmath=_ROW_FLAGS`` (reassoc lets the block sums vectorise; no
nnan/ninf: -inf masking and NaN propagation keep their meaning).
"""

import math

from numba import njit

from ._numba_math import EXACT_FLAGS, OPTS, cvt, exp_neg, expm1_neg, log1p_t, log_t, maxnum

_ROW_FLAGS = {"nsz", "arcp", "contract", "reassoc"}
_BLOCK = 128
_INF = math.inf
_NDIAG = 8
# diagnostics (the C kernels' order: fastxent._backends.DIAG)
_PROB, _NONFIN, _NANLAB, _NEGLAB, _SUMLAB, _BIGLAB, _UNIT = 0, 1, 2, 3, 4, 5, 6

_row = njit(fastmath=_ROW_FLAGS, **OPTS)
#: row scalars whose rounding matters (no reassoc: it would cancel a confident row's tail)
_exact = njit(fastmath=EXACT_FLAGS, inline="never", **OPTS)
#: tiny helpers inlined at Numba IR level (no compilation per constant argument)
_inline = njit(fastmath=_ROW_FLAGS, inline="always", **OPTS)


@_inline
def count(cnt, k, i):
    """Count diagnostic k at row i (cnt = [nbad, diag[8], first[8]])."""
    if cnt[1 + k] == 0 or i < cnt[1 + _NDIAG + k]:
        cnt[1 + _NDIAG + k] = i
    cnt[1 + k] += 1


@_row
def capv(x, cap, inv_cap):
    """cap tanh(x / cap) from expm1, accurate for small |x|; NaN stays NaN."""
    u = x * inv_cap
    au = -u if u < 0 else u
    em = expm1_neg(cvt(-2.0, x) * au)
    th = -em / (cvt(2.0, x) + em)
    th = -th if u < 0 else th
    return u if u != u else cap * th


@_row
def row_max(x, i, C):
    m = x[i, 0]
    for c in range(1, C):
        m = maxnum(m, x[i, c])
    return m


@_row
def _sums_block(x, i, c0, c1, m, E, store, cap, inv_cap, capped, y, yr, cw, a, b, dense,
                smooth, rowbuf):
    bs = cvt(0.0, m)
    bn = cvt(0.0, m)
    bS = cvt(0.0, m)
    bD = cvt(0.0, m)
    for c in range(c0, c1):
        xc = x[i, c]
        if capped:
            xc = capv(xc, cap, inv_cap)
        d = m - xc
        e = exp_neg(-d)
        # a select, not e - 1: reassoc could turn the sum of (e - 1) into (sum e) - 1
        top = xc == m
        bs += cvt(0.0, m) if top else e
        bn += cvt(1.0, m) if top else cvt(0.0, m)
        if store:
            E[rowbuf, c] = e
        if dense:
            wy = a * y[yr, c] + b
            if cw.shape[0] > 0:
                wy = wy * cw[c]
            bS += wy
            bD += wy * d if wy != 0 else cvt(0.0, m)
        elif smooth:
            w = cw[c] if cw.shape[0] > 0 else cvt(1.0, m)
            bD += w * d if w != 0 else cvt(0.0, m)
    return bs, bn, bS, bD


@_row
def row_sums(x, i, C, m, E, store, rowbuf, cap, inv_cap, capped, y, yr, cw, a, b, dense,
             smooth):
    """(s1, cnt, S, D) of a row: s1 = sum of exp(x - m) over x != m, cnt = #(x == m),
    S = sum wy, D = sum_{wy != 0} wy (m - x) (integer labels with smoothing: over w = cw)."""
    s1 = 0.0
    n = 0.0
    S = 0.0
    D = 0.0
    n_full = C - C % _BLOCK
    for c0 in range(0, n_full, _BLOCK):
        bs, bn, bS, bD = _sums_block(x, i, c0, c0 + _BLOCK, m, E, store, cap, inv_cap, capped,
                                     y, yr, cw, a, b, dense, smooth, rowbuf)
        s1 += bs
        n += bn
        S += bS
        D += bD
    bs, bn, bS, bD = _sums_block(x, i, n_full, C, m, E, store, cap, inv_cap, capped, y, yr,
                                 cw, a, b, dense, smooth, rowbuf)
    return s1 + bs, n + bn, S + bS, D + bD


@_exact
def log_s(s1, cnt):
    """log of cnt + s1 without cancellation in a confident row (s1 < eps)."""
    return math.log1p(s1 + (cnt - 1.0)) if cnt >= 1.0 else math.log(s1)


@_exact
def dominant(coef, wya, s1, s):
    """coef p_a - wy_a for the dominant class (p_a = 1 / s), without cancellation."""
    return (coef - wya) - coef * s1 / s


@_exact
def target_from_lse(coef, xt, lse, wyt):
    """coef p_t - wy_t = coef expm1(x_t - lse) + (coef - wy_t), exact where p_t is near 1."""
    pm1 = math.expm1(xt - lse) if coef != 0.0 else -1.0
    return coef * pm1 + (coef - wyt)


@_exact
def row_loss(Sm, logs, Dm, z, lse):
    loss = (Sm * logs if Sm != 0.0 else 0.0) + Dm
    return loss + z * lse * lse if z != 0.0 else loss


@_row
def row_lse(x, i, C, scratch, y, cw):
    """logsumexp of row i (y and cw only lend their types: one compilation of row_sums)."""
    m = row_max(x, i, C)
    if m == -_INF:
        m = cvt(0.0, m)
    s1, cnt, _, _ = row_sums(x, i, C, m, scratch, False, 0, m, m, False, y, 0, cw, m, m,
                             False, False)
    return m + log_s(s1, cnt)


@_row
def zero_row(g, i):
    for c in range(g.shape[1]):
        g[i, c] = 0


# ------------------------------------------------------------------------- softmax

@_row
def softmax_row(A, S, i, scratch, cnt):
    x, y, t, cw, rs, lse_in, coef_in, v, loss, grad, lse_out = A
    (has_ignore, ignore_index, eps, epsc, z, softcap, gscale, sum_cw, want_total, shard,
     check, prob_tol, label_tol, mode, inplace) = S
    C = x.shape[1]
    dense = y.shape[0] > 0
    yr = 0 if y.shape[0] == 1 else i
    rw = rs[i, 0] if rs.shape[0] > 0 else 1.0
    sc = cvt(gscale * rw, x[0, 0])
    a = cvt(1.0 - eps, sc)
    bsm = cvt(epsc, sc)
    capped = softcap != 0.0
    cap = cvt(softcap, sc)
    inv_cap = cvt(1.0 / softcap if capped else 0.0, sc)
    want_grad = grad.shape[0] > 0
    want_loss = loss.shape[0] > 0 or want_total
    ti = -1
    at = 0.0
    if not dense:
        tr = t[i]
        ign = has_ignore and tr == ignore_index
        valid = 0 <= tr < C
        if not valid and not ign and not shard:
            cnt[0] += 1
        if ign or (not valid and not shard):
            if lse_out.shape[0] > 0:
                lse_out[i] = row_lse(x, i, C, scratch, y, cw)
            if loss.shape[0] > 0:
                loss[i, 0] = 0
            if want_grad:
                zero_row(grad, i)
            return 0.0
        if valid:
            ti = tr
            at = (1.0 - eps) * (cw[ti] if cw.shape[0] > 0 else 1.0)
    if lse_in.shape[0] > 0:
        _softmax_row_lse(x, y, yr, cw, lse_in, coef_in, grad, i, ti, at, sc, a, bsm, z,
                         sum_cw, dense, cap, inv_cap, capped, scratch)
        return 0.0
    smooth = (not dense) and eps != 0.0 and want_loss
    xt = x[i, ti] if ti >= 0 else x[i, 0]
    m = row_max(x, i, C)
    if check != 0:
        xmin = x[i, 0]
        xsum = 0.0
        for c in range(C):
            xmin = min(xmin, x[i, c])
            xsum += x[i, c]
    if m == -_INF:
        m = cvt(0.0, m)
    if capped:
        m = capv(m, cap, inv_cap)
    # the exponentials: into the gradient, or the scratch row when the gradient is the
    # logits themselves (the dominant class is found from x afterwards) or softcapped
    use_scratch = inplace or capped
    store = want_grad
    s1, n, Ssum, Dsum = row_sums(x, i, C, m, scratch if use_scratch else grad, store,
                                 0 if use_scratch else i, cap, inv_cap, capped, y, yr, cw, a,
                                 bsm, dense, smooth)
    s = n + s1
    logs = log_s(s1, n)
    lse = m + logs
    if lse_out.shape[0] > 0:
        lse_out[i] = lse
    if dense:
        Sm = Ssum
        Dm = Dsum
    else:
        xtc = capv(xt, cap, inv_cap) if capped else xt
        Sm = at + epsc * sum_cw
        Dm = (at * (m - xtc) if at != 0.0 else 0.0) + (epsc * Dsum if smooth else 0.0)
    lval = 0.0
    if want_loss:
        lval = row_loss(Sm, logs, Dm, z, lse)
        if loss.shape[0] > 0:
            loss[i, 0] = lval
    if check != 0:
        _check_row(check, prob_tol, label_tol, cnt, i, xmin, m, xsum, x, y, yr, dense, ti,
                   Dm, C)
    if not want_grad:
        return lval * rw
    coef = Sm + 2.0 * z * lse if z != 0.0 else Sm
    # the dominant class, found while x is intact (its exponentials went to the scratch row,
    # or to a gradient that is not x)
    am = -1
    if coef != 0.0 and n == 1.0:
        for c in range(C):
            xc = capv(x[i, c], cap, inv_cap) if capped else x[i, c]
            if xc == m:
                am = c
                break
    if capped:  # the raw row, for the softcap's chain rule once x may be overwritten
        for c in range(C):
            scratch[1, c] = x[i, c]
    sa = a * sc
    sb = bsm * sc
    if coef == 0.0:
        for c in range(C):
            wy = sa * y[yr, c] + sb if dense else sb
            grad[i, c] = -(wy * cw[c] if cw.shape[0] > 0 else wy)
    else:
        k = cvt(coef / s * (gscale * rw), sc)
        if use_scratch:
            for c in range(C):
                wy = sa * y[yr, c] + sb if dense else sb
                if cw.shape[0] > 0:
                    wy = wy * cw[c]
                grad[i, c] = k * scratch[0, c] - wy
        else:
            for c in range(C):
                wy = sa * y[yr, c] + sb if dense else sb
                if cw.shape[0] > 0:
                    wy = wy * cw[c]
                grad[i, c] = k * grad[i, c] - wy
    if ti >= 0:
        grad[i, ti] -= cvt(at, sc) * sc
    if am >= 0:
        # without cancellation: coef p_a - wy_a = (coef - wy_a) - coef s1 / s
        wya = (a * y[yr, am] + bsm) if dense else bsm + (1.0 - eps if am == ti else 0.0)
        if cw.shape[0] > 0:
            wya = wya * cw[am]
        grad[i, am] = dominant(coef, wya, s1, s) * (gscale * rw)
    if capped:
        for c in range(C):
            th = capv(scratch[1, c], cap, inv_cap) * inv_cap
            grad[i, c] = grad[i, c] * (cvt(1.0, th) - th * th)
    return lval * rw


@_row
def _softmax_row_lse(x, y, yr, cw, lse_in, coef_in, grad, i, ti, at, sc, a, bsm, z, sum_cw,
                     dense, cap, inv_cap, capped, scratch):
    """Backward from a saved logsumexp: g = (coef exp(x - lse) - wy) sc; the target's term
    from expm1 (exact where p_t is close to 1)."""
    C = x.shape[1]
    lse = lse_in[i]
    if coef_in.shape[0] > 0:
        coef = float(coef_in[i])
    else:
        if dense:
            Sd = 0.0
            for c in range(C):
                w = a * y[yr, c] + bsm
                Sd += w * cw[c] if cw.shape[0] > 0 else w
        else:
            Sd = at + bsm * sum_cw
        coef = Sd + 2.0 * z * lse if z != 0.0 else Sd
    xt = x[i, ti] if ti >= 0 else x[i, 0]
    if capped:
        xt = capv(xt, cap, inv_cap)
    k = cvt(coef, sc) * sc
    sa = a * sc
    sb = bsm * sc
    for c in range(C):
        xc = x[i, c]
        if capped:
            scratch[1, c] = xc
            xc = capv(xc, cap, inv_cap)
        wy = sa * y[yr, c] + sb if dense else sb
        if cw.shape[0] > 0:
            wy = wy * cw[c]
        pe = k * exp_neg(xc - lse) if coef != 0.0 else cvt(0.0, sc)
        grad[i, c] = pe - wy
    if ti >= 0:
        wyt = at + bsm * (cw[ti] if cw.shape[0] > 0 else 1.0)
        grad[i, ti] = target_from_lse(coef, float(xt), float(lse), wyt) * sc
    if capped:
        for c in range(C):
            th = capv(scratch[1, c], cap, inv_cap) * inv_cap
            grad[i, c] = grad[i, c] * (cvt(1.0, th) - th * th)


@_row
def _check_row(check, prob_tol, label_tol, cnt, i, xmin, xmax, xsum, x, y, yr, dense, ti, Dm,
               C):
    xmx = row_max(x, i, C)
    if (check & 1) and xmin >= 0 and xmx <= 1 and abs(xsum - 1.0) <= prob_tol:
        count(cnt, _PROB, i)
    if check & 2:
        bad = xsum != xsum or not (xmx < _INF) or Dm == _INF
        if not dense and ti >= 0 and x[i, ti] == -_INF:
            bad = True
        if bad:
            count(cnt, _NONFIN, i)
    if (check & 4) and dense and (y.shape[0] > 1 or i == 0):
        ymin = y[yr, 0]
        ymax = y[yr, 0]
        ysum = 0.0
        for c in range(C):
            ymin = min(ymin, y[yr, c])
            ymax = max(ymax, y[yr, c])
            ysum += y[yr, c]
        if ysum != ysum:
            count(cnt, _NANLAB, i)
        else:
            if ymin < 0:
                count(cnt, _NEGLAB, i)
            if ymax > 1:
                count(cnt, _BIGLAB, i)
            if abs(ysum - 1.0) > label_tol:
                count(cnt, _SUMLAB, i)


# ------------------------------------------------------------------------- hessp

@_row
def hessp_row(A, S, i, scratch, cnt):
    """out = sc [coef (p v - p (p.v)) + 2 z p (p.v)], coef = S + 2 z lse."""
    x, y, t, cw, rs, lse_in, coef_in, v, loss, grad, lse_out = A
    (has_ignore, ignore_index, eps, epsc, z, softcap, gscale, sum_cw, want_total, shard,
     check, prob_tol, label_tol, mode, inplace) = S
    C = x.shape[1]
    dense = y.shape[0] > 0
    yr = 0 if y.shape[0] == 1 else i
    sc = gscale * (rs[i, 0] if rs.shape[0] > 0 else 1.0)
    if dense:
        Sm = 0.0
        for c in range(C):
            w = (1.0 - eps) * y[yr, c] + epsc
            Sm += w * cw[c] if cw.shape[0] > 0 else w
    else:
        tr = t[i]
        ign = has_ignore and tr == ignore_index
        valid = 0 <= tr < C
        if not valid and not ign:
            cnt[0] += 1
        if ign or not valid:
            zero_row(grad, i)
            return 0.0
        Sm = (1.0 - eps) * (cw[tr] if cw.shape[0] > 0 else 1.0) + epsc * sum_cw
    m = row_max(x, i, C)
    if m == -_INF:
        m = cvt(0.0, m)
    s = 0.0
    ev = 0.0
    for c in range(C):
        e = exp_neg(x[i, c] - m)
        s += e
        ev += e * v[i, c]
        scratch[0, c] = e
    lse = m + math.log(s)
    inv = cvt(1.0 / s, m)
    pv = cvt(ev / s, m)
    coef = cvt((Sm + 2.0 * z * lse if z != 0.0 else Sm) * sc, m)
    zp = cvt(2.0 * z * (ev / s) * sc, m)
    for c in range(C):
        pc = scratch[0, c] * inv
        grad[i, c] = coef * (pc * v[i, c] - pc * pv) + zp * pc
    return 0.0


# ------------------------------------------------------------------------- label gradient

@_row
def label_grad_row(A, S, i, scratch, cnt):
    """d loss / d y = (1 - eps) cw (lse - x) sc (softcapped: of the capped logits)."""
    x, y, t, cw, rs, lse_in, coef_in, v, loss, grad, lse_out = A
    (has_ignore, ignore_index, eps, epsc, z, softcap, gscale, sum_cw, want_total, shard,
     check, prob_tol, label_tol, mode, inplace) = S
    C = x.shape[1]
    k = cvt((1.0 - eps) * gscale * (rs[i, 0] if rs.shape[0] > 0 else 1.0), x[0, 0])
    if lse_in.shape[0] > 0:
        lse = lse_in[i]
    else:
        lse = cvt(row_lse(x, i, C, scratch, y, cw), k)
    for c in range(C):
        w = cw[c] if cw.shape[0] > 0 else cvt(1.0, k)
        grad[i, c] = ((lse - x[i, c]) * w) * k
    return 0.0


# ------------------------------------------------------------------------- sigmoid

@_row
def sigmoid_row(A, S, i, scratch, cnt):
    """loss = a sp(x) + b sp(-x), a = 1 - y', b = q y', y' = (1 - eps) y + eps / 2;
    grad = (a sigma(x) - b sigma(-x)) sc, all from e = exp(-|x|)."""
    x, y, t, cw, rs, lse_in, coef_in, v, loss, grad, lse_out = A
    (has_ignore, ignore_index, eps, epsc, z, softcap, gscale, sum_cw, want_total, shard,
     check, prob_tol, label_tol, mode, inplace) = S
    C = x.shape[1]
    ome = cvt(1.0 - eps, x[0, 0])
    eh = cvt(eps / 2.0, x[0, 0])
    one = cvt(1.0, ome)
    zero = cvt(0.0, ome)
    elem = rs.shape[0] > 0 and rs.shape[1] > 1
    rw = rs[i, 0] if (rs.shape[0] > 0 and not elem) else 1.0
    sc0 = cvt(gscale * rw, ome)
    want_l = loss.shape[0] > 0 or want_total or check != 0
    want_g = grad.shape[0] > 0
    loss2d = loss.shape[0] > 0 and loss.shape[1] > 1
    rowsum = 0.0
    weighted = 0.0
    unit = 0
    bad = False
    for c in range(C):
        xc = x[i, c]
        yy = ome * y[i, c] + eh
        av = one - yy
        bv = yy * cw[c] if cw.shape[0] > 0 else yy
        ax = -xc if xc < 0 else xc
        if xc != xc:
            ax = xc
        e = exp_neg(-ax)
        sc = sc0 * rs[i, c] if elem else sc0
        if want_l:
            lg = log1p_t(e)
            spp = (xc if xc > 0 else zero) + lg
            spn = (-xc if xc < 0 else zero) + lg
            val = (av * spp if av != 0 else zero) + (bv * spn if bv != 0 else zero)
            if loss2d:
                loss[i, c] = val
            rowsum += val
            if elem:
                weighted += val * rs[i, c]
            if check != 0:
                if 0 <= xc <= 1:
                    unit += 1
                if val - val != 0:
                    bad = True
        if want_g:
            rr = one / (one + e)
            sp = rr if xc >= 0 else e * rr
            sn = e * rr if xc >= 0 else rr
            grad[i, c] = (av * sp - bv * sn) * sc
    if loss.shape[0] > 0 and not loss2d:
        loss[i, 0] = rowsum
    if check != 0:
        if unit > 0:
            if cnt[1 + _UNIT] == 0 or i < cnt[1 + _NDIAG + _UNIT]:
                cnt[1 + _NDIAG + _UNIT] = i
            cnt[1 + _UNIT] += unit
        if bad:
            count(cnt, _NONFIN, i)
    return weighted if elem else rowsum * rw


@_row
def sigmoid_label_grad_row(A, S, i, scratch, cnt):
    """d loss / d y = (1 - eps) (-x + (q - 1) sp(-x)) sc."""
    x, y, t, cw, rs, lse_in, coef_in, v, loss, grad, lse_out = A
    (has_ignore, ignore_index, eps, epsc, z, softcap, gscale, sum_cw, want_total, shard,
     check, prob_tol, label_tol, mode, inplace) = S
    C = x.shape[1]
    elem = rs.shape[0] > 0 and rs.shape[1] > 1
    rw = rs[i, 0] if (rs.shape[0] > 0 and not elem) else 1.0
    sc0 = cvt((1.0 - eps) * gscale * rw, x[0, 0])
    zero = cvt(0.0, sc0)
    for c in range(C):
        xc = x[i, c]
        gv = -xc
        if cw.shape[0] > 0:
            qm1 = cw[c] - 1
            if qm1 != 0:
                ax = -xc if xc < 0 else xc
                if xc != xc:
                    ax = xc
                spn = (-xc if xc < 0 else zero) + log1p_t(exp_neg(-ax))
                gv = gv + qm1 * spn
        grad[i, c] = gv * (sc0 * rs[i, c] if elem else sc0)
    return 0.0


# ------------------------------------------------------------------------- utilities

@_row
def logsumexp_row(A, S, i, scratch, cnt):
    x = A[0]
    A[9][i, 0] = row_lse(x, i, x.shape[1], scratch, A[1], A[3])
    return 0.0


@_row
def softmax_util_row(A, S, i, scratch, cnt):
    """softmax (mode 0) or log_softmax (mode 1) of row i into grad (may be x)."""
    x = A[0]
    out = A[9]
    mode = S[13]
    C = x.shape[1]
    m = row_max(x, i, C)
    if m == -_INF:
        m = cvt(0.0, m)
    if mode == 0:
        # the exponentials go to the scratch row (out may be x: the sum loop must read only x,
        # so it vectorises the same way in place or not: the same bits)
        s1, n, _, _ = row_sums(x, i, C, m, scratch, True, 0, m, m, False, A[1], 0, A[3], m, m,
                               False, False)
        inv = cvt(1.0 / (n + s1), m)
        for c in range(C):
            out[i, c] = scratch[0, c] * inv
    else:
        s1, n, _, _ = row_sums(x, i, C, m, out, False, i, m, m, False, A[1], 0, A[3], m, m,
                               False, False)
        logs = cvt(log_s(s1, n), m)
        for c in range(C):
            out[i, c] = (x[i, c] - m) - logs
    return 0.0
