"""Numba kernels: one function per contract kernel and row, and thin batch loops over rows.

Each kernel has a ``*_row`` function (all the work for row i) and two batch loops with the
same body: ``*_par`` (``parallel=True``, ``prange``) and ``*_ser`` (plain ``range``). They are
separate functions, not one function compiled twice, because Numba's cache index is keyed by
the function, not by the ``parallel`` flag. Rows are independent and each row's arithmetic
is the same in both, so results do not depend on the thread count.
"""

import math

import numpy as np
from numba import njit, prange

from ._numba_math import _EXACT_FLAGS, _OPTS, cvt, fexp, fexp_neg, flog_t, maxnum
from ._numba_rows import (
    _ROW_FLAGS, dense_grad_from_e, dense_grad_from_x, dense_label_sum, dense_sums,
    dense_sums_store, hessp_row, label_grad_row, row_loss, row_max, row_sumexp,
    row_sumexp_store, sigmoid_label_grad_row, sigmoid_row, softmax_coef, sparse_grad_from_e,
    sparse_grad_from_x, sparse_smooth_dot, zero_row)

_row = njit(fastmath=_ROW_FLAGS, **_OPTS)
_ser = njit(fastmath=_ROW_FLAGS, **_OPTS)
_par = njit(fastmath=_ROW_FLAGS, parallel=True, **_OPTS)


@_row
def row_scale(scale, i):
    return scale[i] if scale.shape[0] > 1 else scale[0]


@_row
def label_of(t, i, n_classes, has_ignore, ignore_index):
    """(label, bad): label -1 for a dropped row; bad 1 for an out-of-range, not ignored one."""
    ti = t[i]
    if has_ignore and ti == ignore_index:
        return -1, 0
    if ti < 0 or ti >= n_classes:
        return -1, 1
    return ti, 0


@_row
def weight_sum(cw, n_classes):
    if cw.shape[0] == 0:
        return float(n_classes)
    total = 0.0
    for c in range(n_classes):
        total += cw[c]
    return total


@_row
def sparse_target(cw, wsum, eps, ti, n_classes):
    """(lab, bsm, S): label coefficient (1 - eps) w_t, smoothing eps / C, S = sum wy."""
    wt = cw[ti] if cw.shape[0] > 0 else 1.0
    lab = (1.0 - eps) * wt
    bsm = eps / n_classes
    return lab, bsm, bsm * wsum + lab


# ---------------------------------------------------------------------------- dense rows

@_row
def dense_forward_row(x, y, cw, eps, z, loss, lse, i):
    m = row_max(x, i)
    a = cvt(1.0 - eps, m)
    b = cvt(eps / x.shape[1], m)
    s, big_s, dot = dense_sums(x, y, cw, a, b, i, m, True)
    loss[i] = row_loss(s, big_s, dot, m, z)
    if lse.shape[0] > 0:
        lse[i] = m + math.log(s)


@_row
def dense_backward_row(x, y, cw, eps, z, scale, lse, grad, inplace, i):
    a = cvt(1.0 - eps, x[i, 0])
    b = cvt(eps / x.shape[1], x[i, 0])
    sc = row_scale(scale, i)
    big_s = dense_label_sum(y, cw, a, b, i)
    if lse.shape[0] > 0:
        shift = lse[i]
        cp = cvt(softmax_coef(big_s, z, shift, 1.0), sc)
        dense_grad_from_x(x, y, cw, a, b, i, shift, cp, sc, grad, inplace)
    else:
        m = row_max(x, i)
        s = row_sumexp_store(x, i, m, grad, inplace)
        cp = cvt(softmax_coef(big_s, z, m, s), sc)
        dense_grad_from_e(y, cw, a, b, i, cp, sc, grad)


@_row
def dense_fused_row(x, y, cw, eps, z, scale, loss, grad, inplace, i):
    m = row_max(x, i)
    a = cvt(1.0 - eps, m)
    b = cvt(eps / x.shape[1], m)
    s, big_s, dot = dense_sums_store(x, y, cw, a, b, i, m, grad, inplace)
    loss[i] = row_loss(s, big_s, dot, m, z)
    cp = cvt(softmax_coef(big_s, z, m, s), m)
    dense_grad_from_e(y, cw, a, b, i, cp, row_scale(scale, i), grad)


@_row
def dense_hessp_row(x, y, cw, eps, z, scale, v, out, inplace, i):
    m = row_max(x, i)
    a = cvt(1.0 - eps, m)
    b = cvt(eps / x.shape[1], m)
    big_s = dense_label_sum(y, cw, a, b, i)
    s = row_sumexp(x, i, m)
    hessp_row(x, i, m, s, big_s, z, v, row_scale(scale, i), out, inplace)


@_row
def dense_label_grad_row(x, cw, eps, scale, lse, out, inplace, i):
    sc = row_scale(scale, i)
    k = cvt(1.0 - eps, sc)
    if lse.shape[0] > 0:
        label_grad_row(x, cw, k, i, lse[i], sc - sc, sc, out, inplace)
    else:
        m = row_max(x, i)
        logs = cvt(math.log(row_sumexp(x, i, m)), m)
        label_grad_row(x, cw, k, i, m, logs, sc, out, inplace)


# --------------------------------------------------------------------------- sparse rows

@_row
def sparse_forward_row(x, t, cw, wsum, eps, z, has_ignore, ignore_index, loss, lse, i):
    n_classes = x.shape[1]
    ti, bad = label_of(t, i, n_classes, has_ignore, ignore_index)
    want_lse = lse.shape[0] > 0
    if ti < 0:
        loss[i] = 0.0
        if want_lse:
            m = row_max(x, i)
            lse[i] = m + math.log(row_sumexp(x, i, m))
        return bad
    m = row_max(x, i)
    lab, bsm, big_s = sparse_target(cw, wsum, eps, ti, n_classes)
    s = row_sumexp(x, i, m)
    dot = bsm * sparse_smooth_dot(x, cw, i, m) if eps != 0.0 else 0.0
    if lab != 0.0:
        dot += lab * (m - x[i, ti])
    loss[i] = row_loss(s, big_s, dot, m, z)
    if want_lse:
        lse[i] = m + math.log(s)
    return 0


@_row
def sparse_label_fixup(grad, cw, i, ti, et, cp, bsm, lab, sc):
    """grad[i, t] with the label term: (cp e_t - (bsm w_t + lab)) sc."""
    wt = cw[ti] if cw.shape[0] > 0 else cvt(1.0, sc)
    p = cp * et if cp != 0 else cp - cp
    grad[i, ti] = (p - (bsm * wt + lab)) * sc


@_row
def sparse_backward_row(x, t, cw, wsum, eps, z, has_ignore, ignore_index, scale, lse, grad,
                        inplace, i):
    n_classes = x.shape[1]
    ti, bad = label_of(t, i, n_classes, has_ignore, ignore_index)
    if ti < 0:
        zero_row(grad, i)
        return bad
    sc = row_scale(scale, i)
    lab, bsm, big_s = sparse_target(cw, wsum, eps, ti, n_classes)
    bsm_d = cvt(bsm, sc)
    lab_d = cvt(lab, sc)
    if lse.shape[0] > 0:
        shift = lse[i]
        et = x[i, ti] - shift  # read before the row is overwritten (in place)
        cp = cvt(softmax_coef(big_s, z, shift, 1.0), sc)
        sparse_grad_from_x(x, cw, i, shift, cp, bsm_d, sc, grad, inplace)
        sparse_label_fixup(grad, cw, i, ti, fexp(et), cp, bsm_d, lab_d, sc)
    else:
        m = row_max(x, i)
        s = row_sumexp_store(x, i, m, grad, inplace)
        et = grad[i, ti]
        cp = cvt(softmax_coef(big_s, z, m, s), sc)
        sparse_grad_from_e(cw, i, cp, bsm_d, sc, grad)
        sparse_label_fixup(grad, cw, i, ti, et, cp, bsm_d, lab_d, sc)
    return 0


@_row
def sparse_fused_row(x, t, cw, wsum, eps, z, has_ignore, ignore_index, scale, loss, grad,
                     inplace, i):
    n_classes = x.shape[1]
    ti, bad = label_of(t, i, n_classes, has_ignore, ignore_index)
    if ti < 0:
        loss[i] = 0.0
        zero_row(grad, i)
        return bad
    m = row_max(x, i)
    lab, bsm, big_s = sparse_target(cw, wsum, eps, ti, n_classes)
    xt = x[i, ti]  # read before the row is overwritten (in place)
    dot = bsm * sparse_smooth_dot(x, cw, i, m) if eps != 0.0 else 0.0
    s = row_sumexp_store(x, i, m, grad, inplace)
    if lab != 0.0:
        dot += lab * (m - xt)
    loss[i] = row_loss(s, big_s, dot, m, z)
    sc = row_scale(scale, i)
    et = grad[i, ti]
    cp = cvt(softmax_coef(big_s, z, m, s), sc)
    bsm_d = cvt(bsm, sc)
    sparse_grad_from_e(cw, i, cp, bsm_d, sc, grad)
    sparse_label_fixup(grad, cw, i, ti, et, cp, bsm_d, cvt(lab, sc), sc)
    return 0


@_row
def sparse_hessp_row(x, t, cw, wsum, eps, z, has_ignore, ignore_index, scale, v, out,
                     inplace, i):
    n_classes = x.shape[1]
    ti, bad = label_of(t, i, n_classes, has_ignore, ignore_index)
    if ti < 0:
        zero_row(out, i)
        return bad
    m = row_max(x, i)
    big_s = sparse_target(cw, wsum, eps, ti, n_classes)[2]
    s = row_sumexp(x, i, m)
    hessp_row(x, i, m, s, big_s, z, v, row_scale(scale, i), out, inplace)
    return 0


# -------------------------------------------------------------------------- utility rows

@_row
def logsumexp_row(x, out, i):
    m = row_max(x, i)
    out[i] = m + math.log(row_sumexp(x, i, m))


@_row
def log_softmax_row(x, out, inplace, i):
    m = row_max(x, i)
    logs = cvt(math.log(row_sumexp(x, i, m)), m)
    for c in range(x.shape[1]):
        out[i, c] = ((out[i, c] if inplace else x[i, c]) - m) - logs


@_row
def softmax_row(x, out, inplace, i):
    m = row_max(x, i)
    inv = cvt(1.0 / row_sumexp_store(x, i, m, out, inplace), m)
    for c in range(x.shape[1]):
        out[i, c] = out[i, c] * inv


# --------------------------------------------------------------------------- batch loops
# Written from one template: each *_par and *_ser pair must keep identical bodies.
# ``inplace`` (the output is x itself): the row code then reads x through the output array
# in every loop that stores, so LLVM sees one base pointer and vectorises without a runtime
# overlap check (whose scalar fallback is slow); loops that reduce never store.
# ``xs = x[:]`` in a prange body: an array alias there stops Numba from marking the
# kernel's array arguments ``noalias``, which would be undefined behaviour in place.


@_par
def dense_forward_par(x, y, cw, eps, z, loss, lse):
    for i in prange(x.shape[0]):
        xs = x[:]
        dense_forward_row(xs, y, cw, eps, z, loss, lse, i)
    return 0


@_ser
def dense_forward_ser(x, y, cw, eps, z, loss, lse):
    for i in range(x.shape[0]):
        dense_forward_row(x, y, cw, eps, z, loss, lse, i)
    return 0


@_par
def dense_backward_par(x, y, cw, eps, z, scale, lse, grad, inplace):
    for i in prange(x.shape[0]):
        xs = x[:]
        dense_backward_row(xs, y, cw, eps, z, scale, lse, grad, inplace, i)
    return 0


@_ser
def dense_backward_ser(x, y, cw, eps, z, scale, lse, grad, inplace):
    for i in range(x.shape[0]):
        dense_backward_row(x, y, cw, eps, z, scale, lse, grad, inplace, i)
    return 0


@_par
def dense_fused_par(x, y, cw, eps, z, scale, loss, grad, inplace):
    for i in prange(x.shape[0]):
        xs = x[:]
        dense_fused_row(xs, y, cw, eps, z, scale, loss, grad, inplace, i)
    return 0


@_ser
def dense_fused_ser(x, y, cw, eps, z, scale, loss, grad, inplace):
    for i in range(x.shape[0]):
        dense_fused_row(x, y, cw, eps, z, scale, loss, grad, inplace, i)
    return 0


@_par
def dense_label_grad_par(x, cw, eps, scale, lse, out, inplace):
    for i in prange(x.shape[0]):
        xs = x[:]
        dense_label_grad_row(xs, cw, eps, scale, lse, out, inplace, i)
    return 0


@_ser
def dense_label_grad_ser(x, cw, eps, scale, lse, out, inplace):
    for i in range(x.shape[0]):
        dense_label_grad_row(x, cw, eps, scale, lse, out, inplace, i)
    return 0


@_par
def dense_hessp_par(x, y, cw, eps, z, scale, v, out, inplace):
    for i in prange(x.shape[0]):
        xs = x[:]
        dense_hessp_row(xs, y, cw, eps, z, scale, v, out, inplace, i)
    return 0


@_ser
def dense_hessp_ser(x, y, cw, eps, z, scale, v, out, inplace):
    for i in range(x.shape[0]):
        dense_hessp_row(x, y, cw, eps, z, scale, v, out, inplace, i)
    return 0


@_par
def sparse_forward_par(x, t, cw, eps, z, has_ignore, ignore_index, loss, lse):
    wsum = weight_sum(cw, x.shape[1])
    n_bad = 0
    for i in prange(x.shape[0]):
        xs = x[:]
        n_bad += sparse_forward_row(xs, t, cw, wsum, eps, z, has_ignore, ignore_index, loss, lse,
                                    i)
    return n_bad


@_ser
def sparse_forward_ser(x, t, cw, eps, z, has_ignore, ignore_index, loss, lse):
    wsum = weight_sum(cw, x.shape[1])
    n_bad = 0
    for i in range(x.shape[0]):
        n_bad += sparse_forward_row(x, t, cw, wsum, eps, z, has_ignore, ignore_index, loss, lse, i)
    return n_bad


@_par
def sparse_backward_par(x, t, cw, eps, z, has_ignore, ignore_index, scale, lse, grad, inplace):
    wsum = weight_sum(cw, x.shape[1])
    n_bad = 0
    for i in prange(x.shape[0]):
        xs = x[:]
        n_bad += sparse_backward_row(xs, t, cw, wsum, eps, z, has_ignore, ignore_index, scale, lse,
                                     grad, inplace, i)
    return n_bad


@_ser
def sparse_backward_ser(x, t, cw, eps, z, has_ignore, ignore_index, scale, lse, grad, inplace):
    wsum = weight_sum(cw, x.shape[1])
    n_bad = 0
    for i in range(x.shape[0]):
        n_bad += sparse_backward_row(x, t, cw, wsum, eps, z, has_ignore, ignore_index, scale, lse,
                                     grad, inplace, i)
    return n_bad


@_par
def sparse_fused_par(x, t, cw, eps, z, has_ignore, ignore_index, scale, loss, grad, inplace):
    wsum = weight_sum(cw, x.shape[1])
    n_bad = 0
    for i in prange(x.shape[0]):
        xs = x[:]
        n_bad += sparse_fused_row(xs, t, cw, wsum, eps, z, has_ignore, ignore_index, scale, loss,
                                  grad, inplace, i)
    return n_bad


@_ser
def sparse_fused_ser(x, t, cw, eps, z, has_ignore, ignore_index, scale, loss, grad, inplace):
    wsum = weight_sum(cw, x.shape[1])
    n_bad = 0
    for i in range(x.shape[0]):
        n_bad += sparse_fused_row(x, t, cw, wsum, eps, z, has_ignore, ignore_index, scale, loss,
                                  grad, inplace, i)
    return n_bad


@_par
def sparse_hessp_par(x, t, cw, eps, z, has_ignore, ignore_index, scale, v, out, inplace):
    wsum = weight_sum(cw, x.shape[1])
    n_bad = 0
    for i in prange(x.shape[0]):
        xs = x[:]
        n_bad += sparse_hessp_row(xs, t, cw, wsum, eps, z, has_ignore, ignore_index, scale, v, out,
                                  inplace, i)
    return n_bad


@_ser
def sparse_hessp_ser(x, t, cw, eps, z, has_ignore, ignore_index, scale, v, out, inplace):
    wsum = weight_sum(cw, x.shape[1])
    n_bad = 0
    for i in range(x.shape[0]):
        n_bad += sparse_hessp_row(x, t, cw, wsum, eps, z, has_ignore, ignore_index, scale, v, out,
                                  inplace, i)
    return n_bad


@_par
def logsumexp_par(x, out):
    for i in prange(x.shape[0]):
        xs = x[:]
        logsumexp_row(xs, out, i)
    return 0


@_ser
def logsumexp_ser(x, out):
    for i in range(x.shape[0]):
        logsumexp_row(x, out, i)
    return 0


@_par
def log_softmax_par(x, out, inplace):
    for i in prange(x.shape[0]):
        xs = x[:]
        log_softmax_row(xs, out, inplace, i)
    return 0


@_ser
def log_softmax_ser(x, out, inplace):
    for i in range(x.shape[0]):
        log_softmax_row(x, out, inplace, i)
    return 0


@_par
def softmax_par(x, out, inplace):
    for i in prange(x.shape[0]):
        xs = x[:]
        softmax_row(xs, out, inplace, i)
    return 0


@_ser
def softmax_ser(x, out, inplace):
    for i in range(x.shape[0]):
        softmax_row(x, out, inplace, i)
    return 0


@_par
def sigmoid_par(x, y, pw, eps, scale, loss, rowsum, grad, want_loss, want_grad, inplace):
    ya = cvt(1.0 - eps, x[0, 0])
    yb = cvt(0.5 * eps, x[0, 0])
    for i in prange(x.shape[0]):
        xs = x[:]
        sigmoid_row(xs, y, pw, ya, yb, i, scale, loss, rowsum, grad, want_loss, want_grad,
                    inplace)
    return 0


@_ser
def sigmoid_ser(x, y, pw, eps, scale, loss, rowsum, grad, want_loss, want_grad, inplace):
    ya = cvt(1.0 - eps, x[0, 0])
    yb = cvt(0.5 * eps, x[0, 0])
    for i in range(x.shape[0]):
        sigmoid_row(x, y, pw, ya, yb, i, scale, loss, rowsum, grad, want_loss, want_grad,
                    inplace)
    return 0


@_par
def sigmoid_label_grad_par(x, pw, eps, scale, out, inplace):
    k = cvt(1.0 - eps, x[0, 0])
    for i in prange(x.shape[0]):
        xs = x[:]
        sigmoid_label_grad_row(xs, pw, k, i, scale, out, inplace)
    return 0


@_ser
def sigmoid_label_grad_ser(x, pw, eps, scale, out, inplace):
    k = cvt(1.0 - eps, x[0, 0])
    for i in range(x.shape[0]):
        sigmoid_label_grad_row(x, pw, k, i, scale, out, inplace)
    return 0


# --------------------------------------------------------------------- small class counts
# With a handful of classes the row loops above are all overhead (a few non-inlined calls,
# scalar exp and log per row). The small-C kernels take a block of ``SMALL_BLOCK`` rows at a
# time, copy it transposed into per-thread scratch (class-major: ``xt[c, r]``) and run every
# step as a loop over the block's rows, which vectorises whatever C is: row max, exp, row
# sums, a vector log of the row sums, loss and gradient; the gradient is written back
# row-major at the end. The whole block is read into scratch before anything is written, so
# in place (grad is x) needs no special case. Block boundaries depend only on the number of
# rows and the sums run over the classes in order with no reassociation (``_EXACT_FLAGS``), so
# the bits do not depend on the thread count nor on the serial/parallel compilation.

#: Rows per block for up to 16 classes, and for more (scratch stays in L2). Fixed per class
#: count: block boundaries must not depend on the thread count.
SMALL_BLOCK = 1024
SMALL_BLOCK_WIDE = 256

_blk = njit(fastmath=_EXACT_FLAGS, **_OPTS)
#: Block steps inlined at Numba IR level: a call with a dozen array arguments costs a
#: reference count update per array, per block.
_blk_inline = njit(fastmath=_EXACT_FLAGS, inline="always", **_OPTS)


@_blk_inline
def _load_t(x, r0, nb, xt):
    """xt[c, r] = x[r0 + r, c] for the block's rows (class-outer: a strided gather)."""
    for c in range(x.shape[1]):
        for r in range(nb):
            xt[c, r] = x[r0 + r, c]


@_blk_inline
def _store_t(gt, r0, nb, grad):
    n_classes = grad.shape[1]
    if n_classes <= 8:  # measured: a scatter per class wins for the narrowest rows
        for c in range(n_classes):
            for r in range(nb):
                grad[r0 + r, c] = gt[c, r]
    else:
        for r in range(nb):
            for c in range(n_classes):
                grad[r0 + r, c] = gt[c, r]


@_blk_inline
def _small_stats(xt, nb, m, s, et, lse_src, r0):
    """m = row max (or the given lse), et = exp(xt - m), s = row sums of et (dtype)."""
    n_classes = xt.shape[0]
    if lse_src.shape[0] > 0:
        for r in range(nb):
            m[r] = lse_src[r0 + r]
    else:
        for r in range(nb):
            m[r] = xt[0, r]
        for c in range(1, n_classes):
            for r in range(nb):
                m[r] = maxnum(m[r], xt[c, r])
        zero = cvt(0.0, m[0])
        for r in range(nb):
            if m[r] == -math.inf:
                m[r] = zero
    if lse_src.shape[0] > 0:  # x - lse may round above 0
        for c in range(n_classes):
            for r in range(nb):
                et[c, r] = fexp(xt[c, r] - m[r])
    else:
        for c in range(n_classes):
            for r in range(nb):
                et[c, r] = fexp_neg(xt[c, r] - m[r])
    for r in range(nb):
        s[r] = et[0, r]
    for c in range(1, n_classes):
        for r in range(nb):
            s[r] = s[r] + et[c, r]


@_blk_inline
def _small_finish(nb, r0, m, s, big_s, dot, valid, z, lse_src, want_loss, want_grad, scale,
                  loss, lse, cp, sc, lg):
    """Row scalars: loss and lse in float64 (log in the data type), gradient multiplier cp
    and scale sc in the data type.

    One short loop per output: a loop that stores many arrays needs more runtime overlap
    checks than LLVM allows and stays scalar (flog then becomes a call per row).
    """
    lse_in = lse_src.shape[0] > 0
    if lse_in:
        for r in range(nb):
            lg[r] = 0.0
    else:
        for r in range(nb):
            lg[r] = float(flog_t(s[r]))  # float32 log for float32 data (8 lanes)
    if want_loss:
        for r in range(nb):
            lo = dot[r]
            bs = big_s[r]
            lgr = lg[r]
            ok = valid[r] != 0.0
            if bs != 0.0:
                lo += bs * lgr
            if z != 0.0:
                ls = float(m[r]) + lgr
                lo += z * ls * ls
            loss[r0 + r] = lo if ok else 0.0
        if lse.shape[0] > 0 and not lse_in:
            for r in range(nb):
                lse[r0 + r] = float(m[r]) + lg[r]
    if want_grad:
        for r in range(nb):
            coef = big_s[r]
            mr = float(m[r])
            lgr = lg[r]
            ok = valid[r] != 0.0
            if z != 0.0:
                coef += 2.0 * z * (mr + lgr)
            # the division in x's type (float32: 8 lanes); coef = 0 drops the term
            kt = cvt(coef, s[r]) if lse_in else cvt(coef, s[r]) / s[r]
            cp[r] = kt if (ok and coef != 0.0) else cvt(0.0, kt)
        if scale.shape[0] > 1:
            for r in range(nb):
                v = scale[r0 + r]
                sc[r] = v if valid[r] != 0.0 else cvt(0.0, m[0])
        else:
            for r in range(nb):
                sc[r] = scale[0] if valid[r] != 0.0 else cvt(0.0, m[0])


@_blk
def sparse_small_block(x, t, cw, wsum, eps, z, has_ignore, ignore_index, scale, loss, lse,
                       grad, want_loss, want_grad, lse_src, r0, r1, xt, et, ts, fs):
    """Rows r0:r1 of a sparse-label kernel; the label is found by comparing its index
    (held as a float of x's type, -1 for a dropped row) with each class: no gathers."""
    n_classes = x.shape[1]
    nb = r1 - r0
    has_cw = cw.shape[0] > 0
    bsm = eps / n_classes
    bad = 0
    lab, big_s, bsv, valid, dot = fs[0], fs[1], fs[2], fs[3], fs[4]
    m, s, cp, sc, tf, aux = ts[0], ts[1], ts[2], ts[3], ts[4], ts[5]
    zero = cvt(0.0, m[0])
    for r in range(nb):
        ti = t[r0 + r]
        ign = has_ignore and ti == ignore_index
        inside = ti >= 0 and ti < n_classes
        ok = inside and not ign
        bad += 0 if (inside or ign) else 1
        tc = ti if ok else 0
        tf[r] = cvt(float(tc), zero) if ok else cvt(-1.0, zero)
        wt = float(cw[tc]) if has_cw else 1.0
        lb = (1.0 - eps) * wt
        lab[r] = lb if ok else 0.0
        big_s[r] = bsm * wsum + lb if ok else 0.0
        bsv[r] = bsm if ok else 0.0
        valid[r] = 1.0 if ok else 0.0
    _load_t(x, r0, nb, xt)
    _small_stats(xt, nb, m, s, et, lse_src, r0)
    if want_loss:
        sm = cp  # scratch: smoothing dot product (cp is written later)
        xl = sc  # scratch: the label's logit
        for r in range(nb):
            sm[r] = zero
            xl[r] = zero
        for c in range(n_classes):
            cf = cvt(float(c), zero)
            for r in range(nb):
                v = xt[c, r]
                old = xl[r]
                xl[r] = v if tf[r] == cf else old
        if eps != 0.0:
            for c in range(n_classes):
                w = cw[c] if has_cw else cvt(1.0, zero)
                if w != zero:
                    for r in range(nb):
                        d = m[r] - xt[c, r]
                        sm[r] = sm[r] + w * d
        for r in range(nb):
            d = bsv[r] * float(sm[r])
            lr = lab[r]
            dl = float(m[r] - xl[r])
            dot[r] = d + lr * dl if lr != 0.0 else d
    _small_finish(nb, r0, m, s, big_s, dot, valid, z, lse_src, want_loss, want_grad, scale,
                  loss, lse, cp, sc, fs[5])
    if want_grad:
        bst = s  # s is no longer needed
        for r in range(nb):
            bst[r] = cvt(bsv[r], zero)
            aux[r] = cvt(lab[r], zero)
        for c in range(n_classes):
            w = cw[c] if has_cw else cvt(1.0, zero)
            cf = cvt(float(c), zero)
            for r in range(nb):
                k = cp[r]
                e = et[c, r]
                ar = aux[r]
                p = k * e if k != zero else zero
                tw = bst[r] * w
                tw = tw + ar if tf[r] == cf else tw
                et[c, r] = (p - tw) * sc[r]
        _store_t(et, r0, nb, grad)
    return bad


@_blk
def dense_small_block(x, y, cw, eps, z, scale, loss, lse, grad, want_loss, want_grad, lse_src,
                      r0, r1, xt, et, yt, ts, fs):
    n_classes = x.shape[1]
    nb = r1 - r0
    has_cw = cw.shape[0] > 0
    _load_t(x, r0, nb, xt)
    _load_t(y, r0, nb, yt)
    m, s, cp, sc, bw, bd = ts[0], ts[1], ts[2], ts[3], ts[4], ts[5]
    zero = cvt(0.0, xt[0, 0])
    a = cvt(1.0 - eps, zero)
    b = cvt(eps / n_classes, zero)
    for c in range(n_classes):  # yt becomes wy = (a y + b) cw
        w = cw[c] if has_cw else cvt(1.0, zero)
        for r in range(nb):
            yt[c, r] = (a * yt[c, r] + b) * w if has_cw else a * yt[c, r] + b
    _small_stats(xt, nb, m, s, et, lse_src, r0)
    for r in range(nb):
        bw[r] = zero
        bd[r] = zero
    for c in range(n_classes):
        for r in range(nb):
            bw[r] = bw[r] + yt[c, r]
    if want_loss:
        for c in range(n_classes):
            for r in range(nb):
                w = yt[c, r]
                d = m[r] - xt[c, r]
                bd[r] = bd[r] + (w * d if w != zero else zero)
    big_s, dot, valid = fs[0], fs[1], fs[2]
    for r in range(nb):
        big_s[r] = float(bw[r])
        dot[r] = float(bd[r])
        valid[r] = 1.0
    _small_finish(nb, r0, m, s, big_s, dot, valid, z, lse_src, want_loss, want_grad, scale,
                  loss, lse, cp, sc, fs[5])
    if want_grad:
        for c in range(n_classes):
            for r in range(nb):
                k = cp[r]
                e = et[c, r]
                p = k * e if k != zero else zero
                et[c, r] = (p - yt[c, r]) * sc[r]
        _store_t(et, r0, nb, grad)


@_blk
def _block_rows(n_classes):
    return SMALL_BLOCK if n_classes <= 16 else SMALL_BLOCK_WIDE


@_blk
def _sparse_small_chunk(x, t, cw, wsum, eps, z, has_ignore, ignore_index, scale, loss, lse,
                        grad, want_loss, want_grad, lse_src, k, n_chunks):
    n, n_classes = x.shape
    step = _block_rows(n_classes)
    n_blocks = (n + step - 1) // step
    rows = min(n, step)
    xt = np.empty((n_classes, rows), x.dtype)
    et = np.empty((n_classes, rows), x.dtype)
    ts = np.empty((6, rows), x.dtype)
    fs = np.empty((6, rows), np.float64)
    bad = 0
    for blk in range(k * n_blocks // n_chunks, (k + 1) * n_blocks // n_chunks):
        r0 = blk * step
        bad += sparse_small_block(x, t, cw, wsum, eps, z, has_ignore, ignore_index, scale,
                                  loss, lse, grad, want_loss, want_grad, lse_src, r0,
                                  min(n, r0 + step), xt, et, ts, fs)
    return bad


@_blk
def _dense_small_chunk(x, y, cw, eps, z, scale, loss, lse, grad, want_loss, want_grad, lse_src,
                       k, n_chunks):
    n, n_classes = x.shape
    step = _block_rows(n_classes)
    n_blocks = (n + step - 1) // step
    rows = min(n, step)
    xt = np.empty((n_classes, rows), x.dtype)
    et = np.empty((n_classes, rows), x.dtype)
    yt = np.empty((n_classes, rows), x.dtype)
    ts = np.empty((6, rows), x.dtype)
    fs = np.empty((6, rows), np.float64)
    for blk in range(k * n_blocks // n_chunks, (k + 1) * n_blocks // n_chunks):
        r0 = blk * step
        dense_small_block(x, y, cw, eps, z, scale, loss, lse, grad, want_loss, want_grad,
                          lse_src, r0, min(n, r0 + step), xt, et, yt, ts, fs)
    return 0


@_par
def sparse_small_par(x, t, cw, eps, z, has_ignore, ignore_index, scale, loss, lse, grad,
                     want_loss, want_grad, lse_src, n_threads):
    wsum = weight_sum(cw, x.shape[1])
    step = _block_rows(x.shape[1])
    n_chunks = min(n_threads, (x.shape[0] + step - 1) // step)
    n_bad = 0
    for k in prange(n_chunks):
        xs = x[:]
        n_bad += _sparse_small_chunk(xs, t, cw, wsum, eps, z, has_ignore, ignore_index, scale,
                                     loss, lse, grad, want_loss, want_grad, lse_src, k, n_chunks)
    return n_bad


@_ser
def sparse_small_ser(x, t, cw, eps, z, has_ignore, ignore_index, scale, loss, lse, grad,
                     want_loss, want_grad, lse_src, n_threads):
    wsum = weight_sum(cw, x.shape[1])
    return _sparse_small_chunk(x, t, cw, wsum, eps, z, has_ignore, ignore_index, scale, loss,
                               lse, grad, want_loss, want_grad, lse_src, 0, 1)


@_par
def dense_small_par(x, y, cw, eps, z, scale, loss, lse, grad, want_loss, want_grad, lse_src,
                    n_threads):
    step = _block_rows(x.shape[1])
    n_chunks = min(n_threads, (x.shape[0] + step - 1) // step)
    for k in prange(n_chunks):
        xs = x[:]
        _dense_small_chunk(xs, y, cw, eps, z, scale, loss, lse, grad, want_loss, want_grad,
                           lse_src, k, n_chunks)
    return 0


@_ser
def dense_small_ser(x, y, cw, eps, z, scale, loss, lse, grad, want_loss, want_grad, lse_src,
                    n_threads):
    return _dense_small_chunk(x, y, cw, eps, z, scale, loss, lse, grad, want_loss, want_grad,
                              lse_src, 0, 1)
