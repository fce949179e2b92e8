"""The Numba backend's row kernels: one row of each family, the maths of ``numpy_.py`` and
of the C kernels (``_cython/fxe_rows.h``), with one signature ``row(A, S, i, scratch, cnt)``.

``A`` is the tuple of arrays of a KernelCall in numba layout (absent arrays are empty; row
weights, losses and one-column outputs are 2-D so that every family types the same way):
``(x, y, t, cw, rs, lse_in, coef_in, v, loss, grad, lse_out)``; ``S`` the tuple of scalars
(see ``numba_.py``); ``scratch`` two rows of the logits' dtype per task; ``cnt`` the task's
counters (``[nbad, diag..., first...]``). A row returns its loss times its row weight.

Per softmax row: pass 1 the max (from memory), pass 2 exp(x - m) stored once per element
(into the gradient, or the scratch row when the gradient is the logits themselves) with the
sums, pass 3 the gradient from the stored values (in L2). A softcapped row is capped into
the second scratch row first and read from there.

Vectorisation: LLVM vectorises a loop over a 1-D row view whose body has no data-dependent
branch; so the hot loops below each do one thing over ``x[i]`` (flags tested outside them),
and a comparison enters a sum as a 0/1 factor, not as a select. Sums run over blocks of
``_BLOCK`` classes in the input dtype and are added in float64; row scalars are float64.
``fastmath=_ROW_FLAGS`` (reassoc lets the block sums vectorise; no nnan/ninf: -inf masking
and NaN propagation keep their meaning).
"""

import math

from numba import njit

from ._numba_math import EXACT_FLAGS, OPTS, cvt, exp_neg, expm1_neg, log1p_unit, maxnum, writable

_ROW_FLAGS = {"nsz", "arcp", "contract", "reassoc"}
_BLOCK = 128
_INF = math.inf
_NDIAG = 8
# diagnostics (the C kernels' order: fastxent._backends.DIAG)
_PROB, _NONFIN, _NANLAB, _NEGLAB, _SUMLAB, _BIGLAB, _UNIT = 0, 1, 2, 3, 4, 5, 6

_row = njit(fastmath=_ROW_FLAGS, **OPTS)
#: row scalars whose rounding matters (no reassoc: it would cancel a confident row's tail)
_exact = njit(fastmath=EXACT_FLAGS, inline="never", **OPTS)


@njit(fastmath=_ROW_FLAGS, inline="always", **OPTS)
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


# ------------------------------------------------------------------------- row loops

@_row
def row_max(xr):
    m = xr[0]
    for c in range(1, xr.shape[0]):
        m = maxnum(m, xr[c])
    return m


@_row
def row_stats(xr):
    """(min, sum) of a row, for the diagnostics."""
    lo = xr[0]
    s = 0.0
    for c0 in range(0, xr.shape[0], _BLOCK):
        b = cvt(0.0, lo)
        for c in range(c0, min(xr.shape[0], c0 + _BLOCK)):
            lo = min(lo, xr[c])
            b += xr[c]
        s += b
    return lo, s


@_row
def cap_row(xr, out, cap, inv_cap):
    for c in range(xr.shape[0]):
        out[c] = capv(xr[c], cap, inv_cap)


@_row
def first_index(xr, m):
    """The first index of m in a row (-1 if absent): a vectorised count per block, then a
    scalar scan of the block that holds it."""
    C = xr.shape[0]
    for c0 in range(0, C, _BLOCK):
        c1 = min(C, c0 + _BLOCK)
        hits = 0
        for c in range(c0, c1):
            hits += xr[c] == m
        if hits > 0:
            for c in range(c0, c1):
                if xr[c] == m:
                    return c
    return -1


@_row
def sum_exp(xr, m, er, store):
    """(s1, n): s1 = sum of exp(x - m) over x != m, n = #(x == m); the exponentials into er
    when ``store``. (x == m enters as a 0/1 factor: e (1 - f) is exact, no e - 1 that
    reassoc could regroup.)"""
    one = cvt(1.0, m)
    C = xr.shape[0]
    s1 = 0.0
    n = 0.0
    for c0 in range(0, C, _BLOCK):
        bs = cvt(0.0, m)
        bn = cvt(0.0, m)
        for c in range(c0, min(C, c0 + _BLOCK)):
            xc = xr[c]
            e = exp_neg(xc - m)
            f = cvt(xc == m, m)
            bs += e * (one - f)
            bn += f
            if store:
                er[c] = e
        s1 += bs
        n += bn
    return s1, n


@_row
def dense_sums(xr, yr, cw, m, a, b, er):
    """(s1, n, S, D) of a row with dense labels, in one pass: ``sum_exp``'s (s1, n), the
    exponentials into er (always: a second flag in this loop stops LLVM vectorising it), and
    S = sum wy, D = sum_{wy != 0} wy (m - x), wy = (a y + b) cw."""
    one = cvt(1.0, m)
    zero = cvt(0.0, m)
    C = xr.shape[0]
    s1 = 0.0
    n = 0.0
    S = 0.0
    D = 0.0
    use_cw = cw.shape[0] > 0
    for c0 in range(0, C, _BLOCK):
        bs = zero
        bn = zero
        bS = zero
        bD = zero
        for c in range(c0, min(C, c0 + _BLOCK)):
            xc = xr[c]
            d = m - xc
            e = exp_neg(-d)
            f = cvt(xc == m, m)
            bs += e * (one - f)
            bn += f
            er[c] = e
            wy = a * yr[c] + b
            if use_cw:
                wy = wy * cw[c]
            bS += wy
            # select the factor, not the product: LLVM vectorises this form
            bD += wy * (d if wy != 0 else zero)
        s1 += bs
        n += bn
        S += bS
        D += bD
    return s1, n, S, D


@_row
def label_mass(yr, cw, a, b):
    """S = sum (a y + b) cw of a dense label row."""
    S = 0.0
    use_cw = cw.shape[0] > 0
    for c0 in range(0, yr.shape[0], _BLOCK):
        bS = cvt(0.0, a)
        for c in range(c0, min(yr.shape[0], c0 + _BLOCK)):
            wy = a * yr[c] + b
            bS += wy * cw[c] if use_cw else wy
        S += bS
    return S


@_row
def smooth_d(xr, cw, m):
    """sum_{w != 0} w (m - x), w = cw or 1 (integer labels with smoothing)."""
    C = xr.shape[0]
    D = 0.0
    use_cw = cw.shape[0] > 0
    for c0 in range(0, C, _BLOCK):
        bD = cvt(0.0, m)
        for c in range(c0, min(C, c0 + _BLOCK)):
            if use_cw:
                w = cw[c]
                bD += w * (m - xr[c]) if w != 0 else cvt(0.0, m)
            else:
                bD += m - xr[c]
        D += bD
    return D


@_row
def grad_pass(g, E, yr, cw, k, sa, sb, dense):
    """g = k E - wy, wy = (sa y + sb) cw (dense) or sb cw (integer); E may be g."""
    C = g.shape[0]
    use_cw = cw.shape[0] > 0
    if dense:
        if use_cw:
            for c in range(C):
                g[c] = k * E[c] - (sa * yr[c] + sb) * cw[c]
        else:
            for c in range(C):
                g[c] = k * E[c] - (sa * yr[c] + sb)
    elif use_cw and sb != 0:
        for c in range(C):
            g[c] = k * E[c] - sb * cw[c]
    else:
        for c in range(C):
            g[c] = k * E[c] - sb


@_row
def cap_chain(g, xcap, inv_cap):
    """g *= 1 - tanh(x / cap)^2, from the capped row (cap tanh(x / cap))."""
    one = cvt(1.0, inv_cap)
    for c in range(g.shape[0]):
        th = xcap[c] * inv_cap
        g[c] = g[c] * (one - th * th)


@_row
def fill(g, value):
    for c in range(g.shape[0]):
        g[c] = value


# ------------------------------------------------------------------------- row scalars

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
def row_lse(xr):
    m = row_max(xr)
    if m == -_INF:
        m = cvt(0.0, m)
    s1, n = sum_exp(xr, m, writable(xr), xr.shape[0] < 0)  # a bool, not a literal: one
    # compilation of sum_exp serves every caller
    return m + log_s(s1, n)


# ------------------------------------------------------------------------- softmax

@_row
def softmax_row(A, S, i, scratch, cnt):
    """A softmax row without value checks, softcap or saved logsumexp (numba_.py picks the
    variants below for those): compiling it skips their code."""
    return _softmax(A, S, i, scratch, cnt, False, False)


@_row
def softmax_checked_row(A, S, i, scratch, cnt):
    return _softmax(A, S, i, scratch, cnt, True, False)


@_row
def softmax_full_row(A, S, i, scratch, cnt):
    return _softmax(A, S, i, scratch, cnt, True, True)


@njit(fastmath=_ROW_FLAGS, inline="always", **OPTS)
def _softmax(A, S, i, scratch, cnt, checks, full):
    """One softmax row. ``checks`` enables the value checks, ``full`` also softcap and the
    backward from a saved logsumexp; both literals (inlined: the branches they disable are
    pruned before compilation)."""
    x, y, t, cw, rs, lse_in, coef_in, v, loss, grad, lse_out = A
    (has_ignore, ignore_index, eps, epsc, z, softcap, gscale, sum_cw, want_total, shard,
     check, prob_tol, label_tol, mode, inplace) = S
    C = x.shape[1]
    xi = writable(x[i])
    dense = y.shape[0] > 0
    yr = writable(y[i if y.shape[0] > 1 else 0]) if dense else xi
    rw = rs[i, 0] if rs.shape[0] > 0 else 1.0
    sc = cvt(gscale * rw, xi[0])
    a = cvt(1.0 - eps, sc)
    bsm = cvt(epsc, sc)
    capped = softcap != 0.0
    cap = cvt(softcap, sc)
    inv_cap = cvt(1.0 / softcap if full and capped else 0.0, sc)
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
                lse_out[i] = row_lse(xi)
            if loss.shape[0] > 0:
                loss[i, 0] = 0
            if want_grad:
                fill(grad[i], cvt(0.0, sc))
            return 0.0
        if valid:
            ti = tr
            at = (1.0 - eps) * (cw[ti] if cw.shape[0] > 0 else 1.0)
    # the row the sums read: x, or its capped copy in the second scratch row
    xr = xi
    if full:
        if capped:
            xr = scratch[1]
            cap_row(xi, xr, cap, inv_cap)
        if lse_in.shape[0] > 0:
            _softmax_row_lse(xr, yr, cw, lse_in[i], coef_in, grad[i], i, ti, at, sc, a, bsm,
                             z, sum_cw, dense, inv_cap, capped)
            return 0.0
    m = row_max(xr)
    if m == -_INF:
        m = cvt(0.0, m)
    # the exponentials: into the scratch row (in cache), whether or not the gradient is x:
    # the same code, so the same bits, in place or not
    er = scratch[0]
    if dense:
        s1, n, Sm, Dm = dense_sums(xr, yr, cw, m, a, bsm, er)
    else:
        s1, n = sum_exp(xr, m, er, want_grad)
    s = n + s1
    logs = log_s(s1, n)
    lse = m + logs
    if lse_out.shape[0] > 0:
        lse_out[i] = lse
    if not dense:
        Sm = at + epsc * sum_cw
        Dm = at * (m - xr[ti]) if at != 0.0 else 0.0
        if eps != 0.0 and want_loss:
            Dm += epsc * smooth_d(xr, cw, m)
    lval = 0.0
    if want_loss:
        lval = row_loss(Sm, logs, Dm, z, lse)
        if loss.shape[0] > 0:
            loss[i, 0] = lval
    if checks:
        if check != 0:
            _check_row(check, prob_tol, label_tol, cnt, i, xi, yr,
                       dense and (y.shape[0] > 1 or i == 0), ti, Dm)
    if not want_grad:
        return lval * rw
    coef = Sm + 2.0 * z * lse if z != 0.0 else Sm
    am = first_index(xr, m) if coef != 0.0 and n == 1.0 else -1   # the dominant class
    gi = grad[i]
    sa = a * sc
    sb = bsm * sc
    if coef == 0.0:  # no (coef p) term: no 0 * inf from the exponentials
        fill(er, cvt(0.0, sc))
        grad_pass(gi, er, yr, cw, cvt(0.0, sc), sa, sb, dense)
    else:
        grad_pass(gi, er, yr, cw, cvt(coef / s * (gscale * rw), sc), sa, sb, dense)
    if ti >= 0:
        gi[ti] -= cvt(at, sc) * sc
    if am >= 0:
        # without cancellation: coef p_a - wy_a = (coef - wy_a) - coef s1 / s
        wya = (a * yr[am] + bsm) if dense else bsm + (1.0 - eps if am == ti else 0.0)
        if cw.shape[0] > 0:
            wya = wya * cw[am]
        gi[am] = dominant(coef, wya, s1, s) * (gscale * rw)
    if full:
        if capped:
            cap_chain(gi, xr, inv_cap)
    return lval * rw


@_row
def _softmax_row_lse(xr, yr, cw, lse, coef_in, g, i, ti, at, sc, a, bsm, z, sum_cw, dense,
                     inv_cap, capped):
    """Backward from a saved logsumexp: g = (coef exp(x - lse) - wy) sc; the target's term
    from expm1 (exact where p_t is close to 1). xr: the (capped) row, which may be g."""
    C = xr.shape[0]
    if coef_in.shape[0] > 0:
        coef = float(coef_in[i])
    else:
        if dense:
            Sd = label_mass(yr, cw, a, bsm)
        else:
            Sd = at + bsm * sum_cw
        coef = Sd + 2.0 * z * lse if z != 0.0 else Sd
    xt = float(xr[ti]) if ti >= 0 else 0.0
    sa = a * sc
    sb = bsm * sc
    if coef == 0.0:
        fill(g, cvt(0.0, sc))
        grad_pass(g, g, yr, cw, cvt(0.0, sc), sa, sb, dense)
    else:
        k = cvt(coef, sc) * sc
        for c in range(C):
            g[c] = exp_neg(xr[c] - lse)
        grad_pass(g, g, yr, cw, k, sa, sb, dense)
    if ti >= 0:
        wyt = at + bsm * (cw[ti] if cw.shape[0] > 0 else 1.0)
        g[ti] = target_from_lse(coef, xt, float(lse), wyt) * sc
    if capped:
        cap_chain(g, xr, inv_cap)


@_row
def _check_row(check, prob_tol, label_tol, cnt, i, xi, yr, labels, ti, Dm):
    """The diagnostics of one row (``labels``: check this row's dense labels)."""
    xmx = row_max(xi)
    xmin, xsum = row_stats(xi)
    if (check & 1) and xmin >= 0 and xmx <= 1 and abs(xsum - 1.0) <= prob_tol:
        count(cnt, _PROB, i)
    if check & 2:
        bad = xsum != xsum or not (xmx < _INF) or Dm == _INF
        if ti >= 0 and xi[ti] == -_INF:
            bad = True
        if bad:
            count(cnt, _NONFIN, i)
    if (check & 4) and labels:
        ymax = row_max(yr)
        ymin, ysum = row_stats(yr)
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
    xi = writable(x[i])
    vi = writable(v[i])
    gi = grad[i]
    sc = gscale * (rs[i, 0] if rs.shape[0] > 0 else 1.0)
    if y.shape[0] > 0:
        Sm = label_mass(writable(y[i if y.shape[0] > 1 else 0]), cw, cvt(1.0 - eps, xi[0]),
                        cvt(epsc, xi[0]))
    else:
        tr = t[i]
        ign = has_ignore and tr == ignore_index
        valid = 0 <= tr < C
        if not valid and not ign:
            cnt[0] += 1
        if ign or not valid:
            fill(gi, cvt(0.0, xi[0]))
            return 0.0
        Sm = (1.0 - eps) * (cw[tr] if cw.shape[0] > 0 else 1.0) + epsc * sum_cw
    m = row_max(xi)
    if m == -_INF:
        m = cvt(0.0, m)
    e = scratch[0]
    s = 0.0
    ev = 0.0
    for c0 in range(0, C, _BLOCK):
        bs = cvt(0.0, m)
        bv = cvt(0.0, m)
        for c in range(c0, min(C, c0 + _BLOCK)):
            ec = exp_neg(xi[c] - m)
            bs += ec
            bv += ec * vi[c]
            e[c] = ec
        s += bs
        ev += bv
    lse = m + math.log(s)
    inv = cvt(1.0 / s, m)
    pv = cvt(ev / s, m)
    coef = cvt((Sm + 2.0 * z * lse if z != 0.0 else Sm) * sc, m)
    zp = cvt(2.0 * z * (ev / s) * sc, m)
    for c in range(C):
        pc = e[c] * inv
        gi[c] = coef * (pc * vi[c] - pc * pv) + zp * pc
    return 0.0


# ------------------------------------------------------------------------- label gradient

@_row
def label_grad_row(A, S, i, scratch, cnt):
    """d loss / d y = (1 - eps) cw (lse - x) sc (softcapped: of the capped logits)."""
    x, y, t, cw, rs, lse_in, coef_in, v, loss, grad, lse_out = A
    eps = S[2]
    gscale = S[6]
    xi = writable(x[i])
    gi = grad[i]
    k = cvt((1.0 - eps) * gscale * (rs[i, 0] if rs.shape[0] > 0 else 1.0), xi[0])
    lse = lse_in[i] if lse_in.shape[0] > 0 else cvt(row_lse(xi), k)
    if cw.shape[0] > 0:
        for c in range(x.shape[1]):
            gi[c] = ((lse - xi[c]) * cw[c]) * k
    else:
        for c in range(x.shape[1]):
            gi[c] = (lse - xi[c]) * k
    return 0.0


# ------------------------------------------------------------------------- sigmoid

@_row
def sigmoid_terms(xc, yc, ome, eh, pwc):
    """(a, b, e) of one element: a = 1 - y', b = q y', e = exp(-|x|)."""
    yy = ome * yc + eh
    ax = -xc if xc < 0 else xc
    ax = xc if xc != xc else ax
    return cvt(1.0, yy) - yy, yy * pwc, exp_neg(-ax)


@_row
def sigmoid_loss_pass(xi, yi, pw, ome, eh, out):
    """The losses a sp(x) + b sp(-x) of a row into out (always: a flag-free loop
    vectorises), and their sum. pw: the positive weights (ones when absent, see numba_.py)."""
    C = xi.shape[0]
    zero = cvt(0.0, ome)
    acc = 0.0
    for c0 in range(0, C, _BLOCK):
        bl = zero
        for c in range(c0, min(C, c0 + _BLOCK)):
            xc = xi[c]
            av, bv, e = sigmoid_terms(xc, yi[c], ome, eh, pw[c])
            lg = log1p_unit(e)
            spp = (xc if xc > 0 else zero) + lg
            spn = (-xc if xc < 0 else zero) + lg
            val = av * (spp if av != 0 else zero) + bv * (spn if bv != 0 else zero)
            out[c] = val
            bl += val
        acc += bl
    return acc


@_row
def dot(a, b):
    """sum a b of two rows (float64 across blocks)."""
    acc = 0.0
    for c0 in range(0, a.shape[0], _BLOCK):
        blk = cvt(0.0, a[0])
        for c in range(c0, min(a.shape[0], c0 + _BLOCK)):
            blk += a[c] * b[c]
        acc += blk
    return acc


@_row
def sigmoid_grad_pass(xi, yi, pw, ome, eh, gi, sc0):
    """g = (a sigma(x) - b sigma(-x)) sc0."""
    one = cvt(1.0, ome)
    for c in range(xi.shape[0]):
        xc = xi[c]
        av, bv, e = sigmoid_terms(xc, yi[c], ome, eh, pw[c])
        rr = one / (one + e)
        sp = rr if xc >= 0 else e * rr
        sn = e * rr if xc >= 0 else rr
        gi[c] = (av * sp - bv * sn) * sc0


@_row
def scale_by(g, w):
    for c in range(g.shape[0]):
        g[c] = g[c] * w[c]


@_row
def sigmoid_row(A, S, i, scratch, cnt):
    """loss = a sp(x) + b sp(-x), a = 1 - y', b = q y', y' = (1 - eps) y + eps / 2;
    grad = (a sigma(x) - b sigma(-x)) sc, all from e = exp(-|x|). Terms with a zero
    coefficient are skipped: x = -inf with y = 0 gives exactly 0."""
    x, y, t, cw, rs, lse_in, coef_in, v, loss, grad, lse_out = A
    eps = S[2]
    gscale = S[6]
    want_total = S[8]
    check = S[10]
    xi = writable(x[i])
    yi = writable(y[i])
    ome = cvt(1.0 - eps, xi[0])
    eh = cvt(eps / 2.0, xi[0])
    elem = rs.shape[0] > 0 and rs.shape[1] > 1
    rw = rs[i, 0] if (rs.shape[0] > 0 and not elem) else 1.0
    loss2d = loss.shape[0] > 0 and loss.shape[1] > 1
    rowsum = 0.0
    weighted = 0.0
    if loss.shape[0] > 0 or want_total or check != 0:
        out = loss[i] if loss2d else scratch[0]
        rowsum = sigmoid_loss_pass(xi, yi, cw, ome, eh, out)
        if elem:
            weighted = dot(out, writable(rs[i]))
        if loss.shape[0] > 0 and not loss2d:
            loss[i, 0] = rowsum
    if grad.shape[0] > 0:
        gi = grad[i]
        sigmoid_grad_pass(xi, yi, cw, ome, eh, gi, cvt(gscale * rw, ome))
        if elem:
            scale_by(gi, writable(rs[i]))
    if check != 0:
        unit = 0
        bad = False
        for c in range(x.shape[1]):
            xc = xi[c]
            if 0 < xc <= 1:
                unit += 1
            if not (xc - xc == 0) and not (xc == -_INF and yi[c] == 0) and \
                    not (xc == _INF and yi[c] == 1):
                bad = True
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
    eps = S[2]
    gscale = S[6]
    xi = writable(x[i])
    gi = grad[i]
    elem = rs.shape[0] > 0 and rs.shape[1] > 1
    rsr = writable(rs[i]) if elem else xi
    rw = rs[i, 0] if (rs.shape[0] > 0 and not elem) else 1.0
    sc0 = cvt((1.0 - eps) * gscale * rw, xi[0])
    zero = cvt(0.0, sc0)
    if cw.shape[0] > 0:
        for c in range(x.shape[1]):
            xc = xi[c]
            qm1 = cw[c] - 1
            ax = -xc if xc < 0 else xc
            ax = xc if xc != xc else ax
            spn = (-xc if xc < 0 else zero) + log1p_unit(exp_neg(-ax))
            gv = -xc + qm1 * spn if qm1 != 0 else -xc
            gi[c] = gv * (sc0 * rsr[c] if elem else sc0)
    else:
        for c in range(x.shape[1]):
            gi[c] = -xi[c] * (sc0 * rsr[c] if elem else sc0)
    return 0.0


# ------------------------------------------------------------------------- utilities

@_row
def logsumexp_row(A, S, i, scratch, cnt):
    A[9][i, 0] = row_lse(writable(A[0][i]))
    return 0.0


@_row
def softmax_util_row(A, S, i, scratch, cnt):
    """softmax (mode 0) or log_softmax (mode 1) of row i into grad (may be x)."""
    xi = writable(A[0][i])
    out = A[9][i]
    m = row_max(xi)
    if m == -_INF:
        m = cvt(0.0, m)
    if S[13] == 0:
        # the exponentials go to the scratch row (out may be x: the sum loop must read only x,
        # so it vectorises the same way in place or not: the same bits)
        e = scratch[0]
        s1, n = sum_exp(xi, m, e, xi.shape[0] >= 0)
        inv = cvt(1.0 / (n + s1), m)
        for c in range(xi.shape[0]):
            out[c] = e[c] * inv
    else:
        s1, n = sum_exp(xi, m, scratch[0], xi.shape[0] < 0)
        logs = cvt(log_s(s1, n), m)
        for c in range(xi.shape[0]):
            out[c] = (xi[c] - m) - logs
    return 0.0
