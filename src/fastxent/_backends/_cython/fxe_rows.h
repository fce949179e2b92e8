/* fxe_rows.h -- the row kernels, instantiated once per (dtype, instruction set) by the
 * generated fxe_variants.h (see _variants.py). No include guard on purpose. Defined before
 * inclusion: T (float or double), FN(name) (the suffixed name), and the maths of fxe_math.h
 * for T: EXP (kernel exp, x <= 0), EXPFULL, EXPM1N, LOGT, LOG1PT, LOG1PU (log1p on [0, 1]).
 * Row scalars (log of a row's sum, rescaling factors) are computed in double with libm.
 *
 * Every kernel has the signature of fxe_kernel: rows [r0, r1), per-thread scratch, counters;
 * it returns the sum over its rows of rs_i * loss_i in double (0 when no loss is wanted).
 * Rows are independent and each row's reductions run in a fixed order, so results do not
 * depend on how rows are split between threads (the runner sums task totals in task order).
 *
 * Softmax rows (DESIGN.md, "The maths"): one streaming pass A over blocks of FXE_BLK
 * elements computes the running max m (online: the sum is rescaled when m rises), the sum
 * of exp(x - m) over the elements *not equal to m* (s1) and their count (cnt, usually 1),
 * the label sums, and stores exp(x - shift) once per element (into the gradient buffer, or
 * a per-thread scratch row when the logits are softcapped). Then
 * s = cnt + s1, log s = log1p(s1 + cnt - 1), lse = m + log s: for a confident row
 * (s1 < eps) the loss log1p(s1) and the dominant class's gradient -s1 / s keep their
 * digits instead of cancelling to 0 (TensorFlow's tail-accuracy tests). Pass B turns the
 * stored exponentials into the gradient while the row is in L2: exp is evaluated once per
 * element. Accumulators: 16 lanes, each summing 8 terms per 128-element chunk in T, then
 * adding that to its own double (at least as accurate as NumPy's pairwise sum); row
 * scalars in double.
 */


/* ------------------------------------------------------------------ small helpers */

/* max of x[0..n) (n >= 1), 32 independent lanes so the loop is not latency bound */
FXE_INLINE T FN(vmax)(const T *x, fxe_ssize n)
{
    T acc[32];
    fxe_ssize c = 0;
    T m = x[0];
    if (n >= 32) {
        for (int k = 0; k < 32; k++) acc[k] = x[k];
        for (c = 32; c + 32 <= n; c += 32)
            for (int k = 0; k < 32; k++) acc[k] = x[c + k] > acc[k] ? x[c + k] : acc[k];
        for (int k = 0; k < 32; k++) m = acc[k] > m ? acc[k] : m;
    }
    for (; c < n; c++) m = x[c] > m ? x[c] : m;
    return m;
}

/* the first index of v in x[0..n) (n >= 1), n - 1 if none: 64-element chunks tested with
 * a vectorised any-equal, the scalar search only inside the chunk that holds v */
FXE_INLINE fxe_ssize FN(first_eq)(const T *x, fxe_ssize n, T v)
{
    for (fxe_ssize c0 = 0; c0 < n; c0 += 64) {
        const fxe_ssize c1 = n - c0 < 64 ? n : c0 + 64;
        int any = 0;
#pragma omp simd reduction(|:any)
        for (fxe_ssize c = c0; c < c1; c++) any |= x[c] == v;
        if (any) {
            while (x[c0] != v) c0++;
            return c0;
        }
    }
    return n - 1;
}

/* max, min and sum of x[0..n) (diagnostics pass) */
FXE_INLINE T FN(vmax_stats)(const T *x, fxe_ssize n, T *mn_out, double *sum_out)
{
    T mx = x[0], mn = x[0];
    double s = 0.0;
    for (fxe_ssize c0 = 0; c0 < n; c0 += 128) {
        const fxe_ssize c1 = n - c0 < 128 ? n : c0 + 128;
        T bs = 0, bmx = x[c0], bmn = x[c0];
#pragma omp simd reduction(+:bs) reduction(max:bmx) reduction(min:bmn)
        for (fxe_ssize c = c0; c < c1; c++) {
            bs += x[c];
            bmx = x[c] > bmx ? x[c] : bmx;
            bmn = x[c] < bmn ? x[c] : bmn;
        }
        s += (double)bs;
        mx = bmx > mx ? bmx : mx;
        mn = bmn < mn ? bmn : mn;
    }
    *mn_out = mn;
    *sum_out = s;
    return mx;
}

/* softcap: cap * tanh(x / cap), from expm1 so small |x| keeps its relative accuracy:
 * tanh(u) = -expm1(-2|u|) / (2 + expm1(-2|u|)) * sign(u) */
FXE_INLINE T FN(capv)(T x, T cap, T inv_cap)
{
    T u = x * inv_cap;
    T au = u < 0 ? -u : u;
    T em = EXPM1N(-2 * au);
    T th = -em / (2 + em);
    th = u < 0 ? -th : th;
    th = u != u ? u : th;                        /* NaN stays NaN */
    return cap * th;
}

/* Ask for elements [from, from + n) of an array of `to` elements (never past its end). */
FXE_INLINE void FN(prefetch)(const T *a, fxe_ssize from, fxe_ssize n, fxe_ssize to)
{
#if defined(__GNUC__) || defined(__clang__)
    to = to < from + n ? to : from + n;
    for (fxe_ssize k = from; k < to; k += 64 / (fxe_ssize)sizeof(T))
        __builtin_prefetch(a + k, 0, 3);
#else
    (void)a; (void)from; (void)n; (void)to;
#endif
}

/* ------------------------------------------------------------------ softmax pass A */

/* One block of pass A, shift sh: sums of exp(x - sh) over x != sh (s1) and the count of
 * x == sh; for dense labels S = sum wy and D = sum_{wy != 0} wy (sh - x); for integer labels
 * with smoothing S = sum w, D = sum_{w != 0} w (sh - x) (w = cw or 1). Stores exp(x - sh)
 * when store. xin are the (possibly softcapped) logits of the block. The flags are
 * compile-time constants after inlining: each combination is its own vectorised loop.
 * Sums: FXE_LANES lanes, each summing FXE_SUMB / FXE_LANES terms of every FXE_SUMB-element
 * chunk in T and adding that to its own double; the last partial chunk is one `omp simd
 * reduction` added in double. */
#ifndef FXE_SUMB
#define FXE_SUMB 128
#endif
typedef struct { double s1, n, S, D; } FN(lanes);

FXE_INLINE void FN(lanes_init)(FN(lanes) *L) { L->s1 = L->n = L->S = L->D = 0.0; }

/* the terms of element c of pass A (see pass_a_) */
#define FXE_PASS_A_TERMS(c) do { \
        const T xc = xin[c], d = sh - xc, e = EXP(-d); \
        const int top = has_top && xc == sh;  /* e is exactly 1 there: s1 leaves it out */ \
        bs += top ? (T)0 : e; \
        bn += top ? (T)1 : (T)0; \
        if (store) E[c] = e; \
        if (dense) { \
            T wy = a * y[c] + b; \
            if (use_cw) wy = wy * cw[c]; \
            bS += wy; \
            bD += wy != 0 ? wy * d : (T)0; \
        } else if (smooth) { \
            const T w = use_cw ? cw[c] : (T)1; \
            bS += w; \
            bD += w != 0 ? w * d : (T)0; \
        } } while (0)

#define FXE_LANES 16                 /* lanes of pass A's sums (two AVX2 float vectors) */

/* pf: the logits one block (FXE_BLK elements) ahead in the array, which may be a later
 * row's, pfn of them left before its end; pfy, pfyn: the same for dense labels. Pass A is
 * compute-bound and the max of the next block memory-bound: asked for a chunk at a time
 * while pass A computes, the next block arrives without the two alternating, and without
 * a burst of requests that fills the core's miss queues (measured: 1.2x faster than one
 * burst per block). */

FXE_INLINE void FN(pass_a_)(const T *xin, const T *y, const T *cw, fxe_ssize nb, T sh,
                            T a, T b, T *E, FN(lanes) *L,
                            const int dense, const int store, const int smooth,
                            const int use_cw, const int has_top, const T *pf, fxe_ssize pfn,
                            const T *pfy, fxe_ssize pfyn)
{
    const int lab = dense || smooth;
    const fxe_ssize nfull = nb - nb % FXE_SUMB;
    fxe_ssize c0 = 0;
    if (nfull) {
        /* chunks of FXE_SUMB: lane k sums elements k, k + FXE_LANES, ... of each chunk in
         * T, then adds that partial sum to its own double; no horizontal sum per chunk */
        double As[FXE_LANES], An[FXE_LANES], AS[FXE_LANES], AD[FXE_LANES];
        for (int k = 0; k < FXE_LANES; k++) As[k] = An[k] = AS[k] = AD[k] = 0.0;
        for (; c0 < nfull; c0 += FXE_SUMB) {
            FN(prefetch)(pf, c0, FXE_SUMB, pfn);
            if (dense) FN(prefetch)(pfy, c0, FXE_SUMB, pfyn);
#pragma omp simd
            for (int k = 0; k < FXE_LANES; k++) {
                T bs = 0, bn = 0, bS = 0, bD = 0;
                for (int j = 0; j < FXE_SUMB / FXE_LANES; j++) {
                    const fxe_ssize c = c0 + j * FXE_LANES + k;
                    FXE_PASS_A_TERMS(c);
                }
                As[k] += (double)bs;
                An[k] += (double)bn;
                if (lab) {
                    AS[k] += (double)bS;
                    AD[k] += (double)bD;
                }
            }
        }
        for (int k = 0; k < FXE_LANES; k++) {
            L->s1 += As[k];
            L->n += An[k];
            if (lab) {
                L->S += AS[k];
                L->D += AD[k];
            }
        }
    }
    if (c0 < nb) {
        FN(prefetch)(pf, c0, nb - c0, pfn);
        if (dense) FN(prefetch)(pfy, c0, nb - c0, pfyn);
        T bs = 0, bn = 0, bS = 0, bD = 0;
#pragma omp simd reduction(+:bs, bn, bS, bD)
        for (fxe_ssize c = c0; c < nb; c++) FXE_PASS_A_TERMS(c);
        L->s1 += (double)bs;
        L->n += (double)bn;
        if (lab) {
            L->S += (double)bS;
            L->D += (double)bD;
        }
    }
}

/* has_top: the block may hold x == sh (its max is the shift); a block whose max is below
 * the shift takes the loop without the equality test (integer labels without smoothing,
 * and dense labels without class weights: the common calls) */
FXE_INLINE void FN(pass_a)(const T *xin, const T *y, const T *cw, fxe_ssize nb, T sh, T a,
                           T b, T *E, FN(lanes) *L, int dense, int smooth, int has_top,
                           const T *pf, fxe_ssize pfn, const T *pfy, fxe_ssize pfyn)
{
    const int st = E != NULL;
#define FXE_PA(d, s_, sm, w, t) \
    FN(pass_a_)(xin, y, cw, nb, sh, a, b, E, L, d, s_, sm, w, t, pf, pfn, pfy, pfyn)
    if (dense) {
        if (cw) {
            if (st) FXE_PA(1, 1, 0, 1, 1);
            else FXE_PA(1, 0, 0, 1, 1);
        } else if (has_top) {
            if (st) FXE_PA(1, 1, 0, 0, 1);
            else FXE_PA(1, 0, 0, 0, 1);
        } else {
            if (st) FXE_PA(1, 1, 0, 0, 0);
            else FXE_PA(1, 0, 0, 0, 0);
        }
    } else if (smooth) {
        if (cw) {
            if (st) FXE_PA(0, 1, 1, 1, 1);
            else FXE_PA(0, 0, 1, 1, 1);
        } else {
            if (st) FXE_PA(0, 1, 1, 0, 1);
            else FXE_PA(0, 0, 1, 0, 1);
        }
    } else if (has_top) {
        if (st) FXE_PA(0, 1, 0, 0, 1);
        else FXE_PA(0, 0, 0, 0, 1);
    } else {
        if (st) FXE_PA(0, 1, 0, 0, 0);
        else FXE_PA(0, 0, 0, 0, 0);
    }
#undef FXE_PA
}

/* ------------------------------------------------------------------ softmax pass B */

/* g_c = k E_c - (sa y_c + sb) w_c (dense) or k E_c - sb w_c (integer), w = cw or 1;
 * E may be g (in place). */
FXE_INLINE void FN(pass_b_)(T *g, const T *E, const T *y, const T *cw, fxe_ssize nb, T k,
                            T sa, T sb, const int dense, const int use_cw, const int lab)
{
#pragma omp simd
    for (fxe_ssize c = 0; c < nb; c++) {
        T wy = dense ? sa * y[c] + sb : sb;
        if (use_cw) wy = wy * cw[c];
        g[c] = lab ? k * E[c] - wy : k * E[c];
    }
}

FXE_INLINE void FN(pass_b)(T *g, const T *E, const T *y, const T *cw, fxe_ssize nb, T k, T sa,
                           T sb, int dense)
{
    if (dense) {
        if (cw) FN(pass_b_)(g, E, y, cw, nb, k, sa, sb, 1, 1, 1);
        else FN(pass_b_)(g, E, y, cw, nb, k, sa, sb, 1, 0, 1);
    } else if (cw && sb != 0) {
        FN(pass_b_)(g, E, y, cw, nb, k, sa, sb, 0, 1, 1);
    } else if (sb != 0) {
        FN(pass_b_)(g, E, y, cw, nb, k, sa, sb, 0, 0, 1);
    } else {
        FN(pass_b_)(g, E, y, cw, nb, k, sa, sb, 0, 0, 0);
    }
}

/* gradient of the softcap: g_c *= 1 - tanh(x_c / cap)^2, x the raw logits */
FXE_INLINE void FN(cap_chain)(T *g, const T *x, fxe_ssize nb, T cap, T inv_cap)
{
#pragma omp simd
    for (fxe_ssize c = 0; c < nb; c++) {
        T th = FN(capv)(x[c], cap, inv_cap) * inv_cap;
        g[c] = g[c] * (1 - th * th);
    }
}

/* ------------------------------------------------------------------ softmax rows */

#ifndef FXE_BLK
#define FXE_BLK 2048                 /* pass A block: x, E (and y) of a block stay in L1 */
#define FXE_MAXB 4096                /* blocks per row kept on the stack (8M classes) */
#endif

/* Backward from a saved logsumexp: one pass, g = (coef exp(x - lse) - wy) sc. With integer
 * labels the target's term uses expm1(x_t - lse), exact where p_t is close to 1. */
static void FN(softmax_row_lse)(const fxe_params *p, fxe_ssize r, const T *x, T *g,
                                fxe_ssize t, T at, T sc, int dense)
{
    const fxe_ssize C = p->C;
    const T *cw = (const T *)p->cw;
    const T *y = dense ? (const T *)p->y + (p->y_rows == 1 ? 0 : r * C) : NULL;
    const double lse = (double)((const T *)p->lse_in)[r];
    const T a = (T)(1.0 - p->eps), b = (T)p->epsc;
    double S;
    if (p->coef_in) {
        S = (double)((const T *)p->coef_in)[r];
    } else if (dense) {
        S = 0.0;
        for (fxe_ssize c0 = 0; c0 < C; c0 += 128) {
            const fxe_ssize c1 = C - c0 < 128 ? C : c0 + 128;
            T bS = 0;
            if (cw) {
#pragma omp simd reduction(+:bS)
                for (fxe_ssize c = c0; c < c1; c++) bS += (a * y[c] + b) * cw[c];
            } else {
#pragma omp simd reduction(+:bS)
                for (fxe_ssize c = c0; c < c1; c++) bS += a * y[c] + b;
            }
            S += (double)bS;
        }
    } else {
        S = (double)at + (double)b * p->sum_cw;
    }
    const double coef = p->coef_in ? S : (p->z != 0 ? S + 2 * p->z * lse : S);
    const T xt = t >= 0 ? x[t] : 0;                     /* before g (maybe x) is written */
    const T k = (T)(coef * (double)sc), lT = (T)lse;
    const T sa = a * sc, sb = b * sc;
    if (p->softcap != 0) {
        /* softcapped: z = cap tanh(x / cap) element by element (g may be x: each element
         * is read before it is written), times the chain rule 1 - tanh^2 */
        const T cap = (T)p->softcap, inv_cap = (T)(1.0 / p->softcap);
        const T xtc = FN(capv)(xt, cap, inv_cap), tht = xtc * inv_cap;
        for (fxe_ssize c = 0; c < C; c++) {
            const T zc = FN(capv)(x[c], cap, inv_cap), th = zc * inv_cap;
            const T w = cw ? cw[c] : (T)1;
            const T wy = dense ? (sa * y[c] + sb) * w : sb * w;
            const T e = coef != 0 ? k * EXPFULL(zc - lT) : (T)0;
            g[c] = (e - wy) * (1 - th * th);
        }
        if (t >= 0 && t < C) {
            const double wyt = (double)at + (double)b * (cw ? (double)cw[t] : 1.0);
            const double pm1 = coef != 0 ? expm1((double)xtc - lse) : -1.0;
            g[t] = (T)((coef * pm1 + (coef - wyt)) * (double)sc * (double)(1 - tht * tht));
        }
        return;
    }
    if (coef == 0) {                                    /* no (coef p) term: no 0 * inf */
        FN(pass_b)(g, g, y, cw, C, 0, sa, sb, dense);
        if (!dense) {
            for (fxe_ssize c = 0; c < C; c++) g[c] = cw || sb != 0 ? g[c] : 0;
        }
    } else if (dense) {
        if (cw) {
#pragma omp simd
            for (fxe_ssize c = 0; c < C; c++) g[c] = k * EXPFULL(x[c] - lT) - (sa * y[c] + sb) * cw[c];
        } else {
#pragma omp simd
            for (fxe_ssize c = 0; c < C; c++) g[c] = k * EXPFULL(x[c] - lT) - (sa * y[c] + sb);
        }
    } else if (cw) {
#pragma omp simd
        for (fxe_ssize c = 0; c < C; c++) g[c] = k * EXPFULL(x[c] - lT) - sb * cw[c];
    } else {
#pragma omp simd
        for (fxe_ssize c = 0; c < C; c++) g[c] = k * EXPFULL(x[c] - lT) - sb;
    }
    if (t >= 0 && t < C) {
        /* coef p_t - wy_t = coef expm1(x_t - lse) + (coef - wy_t) */
        const double wyt = (double)at + (double)b * (cw ? (double)cw[t] : 1.0);
        const double pm1 = coef != 0 ? expm1((double)xt - lse) : -1.0;
        g[t] = (T)((coef * pm1 + (coef - wyt)) * (double)sc);
    }
}

/* diagnostics of one row (check != 0): the logits look like softmax outputs (all in [0, 1]
 * and summing to 1 within prob_tol); they hold NaN or +inf, or -inf under a target; dense
 * labels hold NaN, negative entries, entries above 1, or do not sum to 1 */
static void FN(check_row)(const fxe_params *p, fxe_ssize r, fxe_counts *cn, T xmin, T xmax,
                          double xsum, const T *y, int target_on_neg_inf, double D)
{
    if ((p->check & FXE_CHK_PROB) && xmin >= 0 && xmax <= 1 && fabs(xsum - 1.0) <= p->prob_tol)
        FXE_COUNT(cn, FXE_D_PROB_ROWS, r);
    if ((p->check & FXE_CHK_NONFINITE) &&
        (!(xmax < INFINITY) || xsum != xsum || target_on_neg_inf || D == INFINITY))
        FXE_COUNT(cn, FXE_D_NONFINITE_ROWS, r);
    if ((p->check & FXE_CHK_LABELS) && y && (p->y_rows != 1 || r == 0)) {
        const fxe_ssize C = p->C;
        T ymin = y[0], ymax = y[0];
        double ysum = 0.0;
        ymax = FN(vmax_stats)(y, C, &ymin, &ysum);
        if (ysum != ysum) FXE_COUNT(cn, FXE_D_NAN_LABEL_ROWS, r);
        else {
            if (ymin < 0) FXE_COUNT(cn, FXE_D_NEG_LABEL_ROWS, r);
            if (ymax > 1) FXE_COUNT(cn, FXE_D_BIG_LABEL_ROWS, r);
            if (fabs(ysum - 1.0) > p->label_tol) FXE_COUNT(cn, FXE_D_SUM_LABEL_ROWS, r);
        }
    }
}

/* log s and lse from the shift m, the sum s1 of exp(x - m) over x != m, and the count of
 * x == m: log1p keeps a confident row's tail (s1 < eps) */
FXE_INLINE double FN(log_s)(double s1, double cnt)
{
    return cnt >= 1 ? log1p(s1 + (cnt - 1)) : log(s1);
}
FXE_INLINE double FN(lse_of)(T m, double s1, double cnt)
{
    return (double)m + FN(log_s)(s1, cnt);
}

/* logsumexp of a row without stores (dropped rows, utilities) */
static double FN(row_lse)(const T *x, fxe_ssize C)
{
    T m = FN(vmax)(x, C);
    m = m == -INFINITY ? (T)0 : m;
    FN(lanes) L;
    FN(lanes_init)(&L);
    FN(pass_a)(x, NULL, NULL, C, m, 0, 0, NULL, &L, 0, 0, 1, NULL, 0, NULL, 0);
    return FN(lse_of)(m, L.s1, L.n);
}

/* One softmax row (dense or integer labels): forward, backward, fused. Returns its loss
 * times its row weight (0 for a dropped row). */
static double FN(softmax_row)(const fxe_params *p, fxe_ssize r, T *scratch, fxe_counts *cn)
{
    const fxe_ssize C = p->C;
    const T *x = (const T *)p->x + r * C;
    const int dense = p->y != NULL;
    const T *y = dense ? (const T *)p->y + (p->y_rows == 1 ? 0 : r * C) : NULL;
    const T *cw = (const T *)p->cw;
    T *g = p->grad ? (T *)p->grad + r * C : NULL;
    const int want_loss = p->loss != NULL || p->want_total;
    const double rw = p->rs ? (double)((const T *)p->rs)[r] : 1.0;
    const T sc = (T)(p->gscale * rw);
    const double eps = p->eps;
    const T a = (T)(1.0 - eps), bsm = (T)p->epsc;
    const int capped = p->softcap != 0;
    const T cap = (T)p->softcap, inv_cap = capped ? (T)(1.0 / p->softcap) : 0;

    /* integer labels: the target, or a dropped row (ignored / out of range) */
    fxe_ssize t = -1;
    T at = 0;
    if (!dense) {
        const fxe_ssize tr = p->t[r];
        const int ign = p->has_ignore && tr == p->ignore_index;
        const int valid = tr >= 0 && tr < C;
        if (!valid && !ign && !p->shard) cn->nbad++;
        if (ign || (!valid && !p->shard)) {
            if (p->lse_out) ((T *)p->lse_out)[r] = (T)FN(row_lse)(x, C);
            if (p->loss) ((T *)p->loss)[r] = 0;
            if (g) for (fxe_ssize c = 0; c < C; c++) g[c] = 0;
            return 0.0;
        }
        if (valid) {
            t = tr;
            at = (T)((1.0 - eps) * (cw ? (double)cw[t] : 1.0));
        }
    }
    if (p->lse_in) {
        FN(softmax_row_lse)(p, r, x, g, t, at, sc, dense);
        return 0.0;
    }

    const int smooth = !dense && eps != 0 && want_loss;
    /* where the exponentials go: the gradient itself, or scratch when softcapped */
    T *E = g ? (capped ? scratch : g) : NULL;
    /* softcapped in place: the raw row, for the chain rule once g (= x) is written */
    const T *xraw = x;
    if (capped && g == x) {
        memcpy(scratch + C, x, (size_t)C * sizeof(T));
        xraw = scratch + C;
    }
    /* the target's logit: read here when the gradient overwrites the logits, else after
     * pass A, when the row is in cache (here it costs a cache miss per row) */
    T xt = t >= 0 && g == x ? x[t] : 0;
    const fxe_ssize y_left = dense ? (p->y_rows == 1 ? C : (p->n - r) * C) : 0;
    T sh = 0, m_run = -INFINITY;
    FN(lanes) L;
    FN(lanes_init)(&L);
    double xsum = 0.0;
    fxe_ssize bi = 0, amax = -1;
    T shifts[64];                       /* per-block shifts, for rows of up to 64 blocks */
    const int keep_shifts = (C + FXE_BLK - 1) / FXE_BLK <= 64;
    T xmin = INFINITY, xmax = -INFINITY;
    T capbuf[capped ? FXE_BLK : 1];
    for (fxe_ssize c0 = 0; c0 < C; c0 += FXE_BLK, bi++) {
        const fxe_ssize nb = C - c0 < FXE_BLK ? C - c0 : FXE_BLK;
        const T *xb = x + c0;
        T bm;
        /* the logits (and dense labels) one block ahead, asked for during pass A */
        const fxe_ssize pfo = r * C + c0 + FXE_BLK;
        const T *pfx = (const T *)p->x + (pfo < p->n * C ? pfo : 0);
        const fxe_ssize pfn = pfo < p->n * C ? p->n * C - pfo : 0;
        if (p->check) {
            T bmn;
            double bsum;
            bm = FN(vmax_stats)(xb, nb, &bmn, &bsum);
            xsum += bsum;
            xmin = bmn < xmin ? bmn : xmin;
            xmax = bm > xmax ? bm : xmax;
        } else {
            bm = FN(vmax)(xb, nb);
        }
        if (capped) {
#pragma omp simd
            for (fxe_ssize c = 0; c < nb; c++) capbuf[c] = FN(capv)(xb[c], cap, inv_cap);
            xb = capbuf;
            bm = FN(capv)(bm, cap, inv_cap);
        }
        if (bm > m_run) {                   /* a new row max (a NaN never rises) */
            const double f = m_run != -INFINITY ? exp((double)sh - (double)bm) : 0.0;
            const double dm = (double)bm - (double)sh;
            L.s1 = (L.s1 + L.n) * f;
            L.n = 0.0;
            if (L.S != 0) L.D += dm * L.S;      /* D is relative to the shift */
            m_run = sh = bm;
            /* the first index of the new max, found while x is intact (the gradient may be
             * x itself): the dominant class of the fix-up below */
            if (g) amax = c0 + FN(first_eq)(xb, nb, bm);
        }
        if (keep_shifts) shifts[bi] = sh;
        FN(pass_a)(xb, dense ? y + c0 : NULL, cw ? cw + c0 : NULL, nb, sh, a, bsm,
                   E ? E + c0 : NULL, &L, dense, smooth, bm == sh, pfx, pfn,
                   dense && c0 + FXE_BLK < y_left ? y + c0 + FXE_BLK : NULL,
                   dense && c0 + FXE_BLK < y_left ? y_left - c0 - FXE_BLK : 0);
    }
    if (t >= 0 && g != x) xt = x[t];
    const double s1 = L.s1, cnt = L.n;
    const double S = L.S, D = L.D;
    const double m = (double)sh;
    const double s = cnt + s1;
    const double logs = FN(log_s)(s1, cnt);
    const double lse = m + logs;
    if (p->lse_out) ((T *)p->lse_out)[r] = (T)lse;
    /* target mass Sm = sum wy and Dm = sum_{wy != 0} wy (m - x) */
    double Sm = S, Dm = D;
    if (!dense) {
        const double xtc = capped ? (double)FN(capv)(xt, cap, inv_cap) : (double)xt;
        Sm = (double)at + (double)bsm * p->sum_cw;
        Dm = (at != 0 ? (double)at * (m - xtc) : 0.0) + (smooth ? (double)bsm * D : 0.0);
    }
    double loss = 0.0;
    if (want_loss) {
        loss = (Sm != 0 ? Sm * logs : 0.0) + Dm;
        if (p->z != 0) loss += p->z * lse * lse;
        if (p->loss) ((T *)p->loss)[r] = (T)loss;
    }
    if (p->check) FN(check_row)(p, r, cn, xmin, xmax, xsum, dense ? y : NULL,
                                !dense && t >= 0 && xt == -INFINITY, dense ? D : 0.0);
    if (!g) return loss * rw;

    /* pass B */
    const double coef = p->z != 0 ? Sm + 2 * p->z * lse : Sm;
    const T sa = a * sc, sb = bsm * sc;
    T *out = g;
    if (coef == 0) {
        /* no (coef p) term: the gradient is -wy sc, with no 0 * inf from the exponentials */
        for (fxe_ssize c = 0; c < C; c++) {
            T wy = dense ? sa * y[c] + sb : sb;
            out[c] = -(cw ? wy * cw[c] : wy);
        }
    } else if (keep_shifts) {
        const double kd = coef / s * (double)sc;
        bi = 0;
        for (fxe_ssize c0 = 0; c0 < C; c0 += FXE_BLK, bi++) {
            const fxe_ssize nb = C - c0 < FXE_BLK ? C - c0 : FXE_BLK;
            /* block bi's exponentials are relative to its own shift */
            const T kb = shifts[bi] == sh ? (T)kd : (T)(kd * exp((double)shifts[bi] - m));
            FN(pass_b)(out + c0, E + c0, dense ? y + c0 : NULL, cw ? cw + c0 : NULL, nb, kb,
                       sa, sb, dense);
        }
    } else {
        /* rows of more than 64 blocks (C > 131072): recompute against the final max */
        const T k = (T)(coef / s * (double)sc);
        for (fxe_ssize c = 0; c < C; c++) {
            T xc = capped ? FN(capv)(x[c], cap, inv_cap) : x[c];
            T wy = dense ? sa * y[c] + sb : sb;
            out[c] = k * EXP(xc - sh) - (cw ? wy * cw[c] : wy);
        }
    }
    if (t >= 0) out[t] -= at * sc;
    if (coef != 0 && cnt == 1 && amax >= 0) {
        /* the dominant class, without cancellation: coef p_a - wy_a = (coef - wy_a) - coef s1/s */
        double wya = dense ? (double)a * (double)y[amax] + (double)bsm
                           : (double)bsm + (amax == t ? 1.0 - eps : 0.0);
        if (cw) wya *= (double)cw[amax];
        out[amax] = (T)(((coef - wya) - coef * s1 / s) * (double)sc);
    }
    if (capped) FN(cap_chain)(out, xraw, C, cap, inv_cap);
    return loss * rw;
}

static double FN(softmax_rows)(const fxe_params *p, fxe_ssize r0, fxe_ssize r1, void *scratch,
                               fxe_counts *cn)
{
    double total = 0.0;
    for (fxe_ssize r = r0; r < r1; r++) total += FN(softmax_row)(p, r, (T *)scratch, cn);
    return total;
}

/* ------------------------------------------------------- few classes: rows side by side */

/* C <= FXE_SMALL_C: blocks of FXE_SB rows are transposed into class-major scratch so that
 * every step (max, exp, sums, log, loss, gradient) is a unit-stride loop across the rows
 * of the block, vectorised for any C; the per-row formulas are softmax_row's. Row scalars
 * are computed in T here (vectorised log1p), the loss total in double. */
#ifndef FXE_SB
#define FXE_SB 64
#define FXE_SMALL_C 64
#endif

/* Transposes between a row-major block (nb rows of C) and class-major scratch (C rows of
 * FXE_SB): with C a compile-time constant (the switch below) gcc turns them into shuffles. */
FXE_INLINE void FN(t_in_)(T *xs, const T *xb, fxe_ssize nb, const fxe_ssize C)
{
    for (fxe_ssize i = 0; i < nb; i++)
        for (fxe_ssize c = 0; c < C; c++) xs[c * FXE_SB + i] = xb[i * C + c];
}
FXE_INLINE void FN(t_out_)(T *gb, const T *xs, fxe_ssize nb, const fxe_ssize C)
{
    for (fxe_ssize i = 0; i < nb; i++)
        for (fxe_ssize c = 0; c < C; c++) gb[i * C + c] = xs[c * FXE_SB + i];
}
#define FXE_SMALL_CASES(F, ...) \
    switch (C) { case 1: F(__VA_ARGS__, 1); break; case 2: F(__VA_ARGS__, 2); break; \
    case 3: F(__VA_ARGS__, 3); break; case 4: F(__VA_ARGS__, 4); break; \
    case 5: F(__VA_ARGS__, 5); break; case 6: F(__VA_ARGS__, 6); break; \
    case 7: F(__VA_ARGS__, 7); break; case 8: F(__VA_ARGS__, 8); break; \
    case 10: F(__VA_ARGS__, 10); break; case 16: F(__VA_ARGS__, 16); break; \
    default: F(__VA_ARGS__, C); }
static void FN(t_in)(T *xs, const T *xb, fxe_ssize nb, fxe_ssize C)
{
    FXE_SMALL_CASES(FN(t_in_), xs, xb, nb)
}
static void FN(t_out)(T *gb, const T *xs, fxe_ssize nb, fxe_ssize C)
{
    FXE_SMALL_CASES(FN(t_out_), gb, xs, nb)
}

/* step 5 of softmax_small: per-row log s, lse, loss and gradient factor, across rows;
 * leaves the coefficient in Sv and the logsumexp in mx */
FXE_INLINE void FN(small_scalars)(fxe_ssize nb, T *mx, const T *s1, const T *cntv, T *Sv,
                                  const T *Dv, const T *tv, const T *at, const T *xt, T *lossv,
                                  T *kv, const T *rwv, T bsm, T sumw, T zz, T gs,
                                  const int dense, const int smooth)
{
#pragma omp simd
    for (fxe_ssize i = 0; i < nb; i++) {
        const T cnt = cntv[i], m = mx[i];
        const T logs = cnt >= 1 ? LOG1PT(s1[i] + (cnt - 1)) : LOGT(s1[i]);
        const T lse = m + logs;
        const T keep = dense ? (T)1 : (tv[i] >= 0 ? (T)1 : (T)0);
        const T S = dense ? Sv[i] : (keep != 0 ? at[i] + bsm * sumw : (T)0);
        const T D = dense ? Dv[i] : (at[i] != 0 ? at[i] * (m - xt[i]) : (T)0)
                                     + (smooth ? bsm * Dv[i] : (T)0);
        T loss = (S != 0 ? S * logs : (T)0) + D;
        loss = zz != 0 ? loss + zz * lse * lse : loss;
        lossv[i] = keep != 0 ? loss : (T)0;
        const T coef = zz != 0 ? S + 2 * zz * lse : S;
        const T s = cnt + s1[i];
        kv[i] = (keep != 0) & (coef != 0) ? coef / s * (gs * rwv[i]) : (T)0;
        Sv[i] = coef;
        mx[i] = lse;
    }
}

static double FN(softmax_small)(const fxe_params *p, fxe_ssize r0, fxe_ssize r1, void *scr,
                                fxe_counts *cn)
{
    const fxe_ssize C = p->C;
    const T *X = (const T *)p->x;
    const int dense = p->y != NULL;
    const int ybc = dense && p->y_rows == 1;
    const T *Y = (const T *)p->y;
    const T *cw = (const T *)p->cw;
    const T *RS = (const T *)p->rs;
    T *G = (T *)p->grad, *L = (T *)p->loss, *LSE = (T *)p->lse_out;
    const int want_loss = L != NULL || p->want_total;
    const double eps = p->eps;
    const T a = (T)(1.0 - eps), bsm = (T)p->epsc, ome = (T)(1.0 - eps);
    const T zz = (T)p->z, gs = (T)p->gscale, sumw = (T)p->sum_cw;
    const int capped = p->softcap != 0;
    const T cap = (T)p->softcap, inv_cap = capped ? (T)(1.0 / p->softcap) : 0;
    const int smooth = !dense && eps != 0 && want_loss;
    /* class-major blocks: logits (then gradient), exponentials, labels */
    T *xs = (T *)scr, *es = xs + FXE_SMALL_C * FXE_SB, *ys = es + FXE_SMALL_C * FXE_SB;
    T mx[FXE_SB], s1[FXE_SB], cntv[FXE_SB], amv[FXE_SB], Sv[FXE_SB], Dv[FXE_SB];
    T xt[FXE_SB], at[FXE_SB], tv[FXE_SB], rwv[FXE_SB], kv[FXE_SB], lossv[FXE_SB];
    T wv[FXE_SMALL_C];
    for (fxe_ssize c = 0; c < C; c++) wv[c] = cw ? cw[c] : (T)1;
    double total = 0.0;
    for (fxe_ssize b0 = r0; b0 < r1; b0 += FXE_SB) {
        const fxe_ssize nb = r1 - b0 < FXE_SB ? r1 - b0 : FXE_SB;
        const T *xb = X + b0 * C;
        FN(t_in)(xs, xb, nb, C);
        if (dense && !ybc) FN(t_in)(ys, Y + b0 * C, nb, C);
        if (capped)
            for (fxe_ssize c = 0; c < C; c++)
#pragma omp simd
                for (fxe_ssize i = 0; i < nb; i++)
                    xs[c * FXE_SB + i] = FN(capv)(xs[c * FXE_SB + i], cap, inv_cap);
        /* 1. row max; 2. exponentials, s1, count, first argmax; 3. label sums */
        for (fxe_ssize i = 0; i < nb; i++) mx[i] = xs[i];
        for (fxe_ssize c = 1; c < C; c++) {
            const T *xc = xs + c * FXE_SB;
#pragma omp simd
            for (fxe_ssize i = 0; i < nb; i++) mx[i] = xc[i] > mx[i] ? xc[i] : mx[i];
        }
#pragma omp simd
        for (fxe_ssize i = 0; i < nb; i++) {
            mx[i] = mx[i] == -INFINITY ? (T)0 : mx[i];
            s1[i] = 0; cntv[i] = 0; amv[i] = -1; Sv[i] = 0; Dv[i] = 0;
        }
        for (fxe_ssize c = 0; c < C; c++) {
            const T *xc = xs + c * FXE_SB;
            T *ec = es + c * FXE_SB;
            const T cf = (T)c, w = wv[c];
#pragma omp simd
            for (fxe_ssize i = 0; i < nb; i++) {
                T e = EXP(xc[i] - mx[i]);
                T one = xc[i] == mx[i] ? (T)1 : (T)0;
                s1[i] += e - one;
                cntv[i] += one;
                amv[i] = (one != 0 && amv[i] < 0) ? cf : amv[i];
                ec[i] = e;
            }
            if (dense) {
                if (ybc) {
                    const T wy = (a * Y[c] + bsm) * w;
#pragma omp simd
                    for (fxe_ssize i = 0; i < nb; i++) {
                        Sv[i] += wy;
                        Dv[i] += wy != 0 ? wy * (mx[i] - xc[i]) : (T)0;
                    }
                } else {
                    const T *yc = ys + c * FXE_SB;
#pragma omp simd
                    for (fxe_ssize i = 0; i < nb; i++) {
                        T wy = (a * yc[i] + bsm) * w;
                        Sv[i] += wy;
                        Dv[i] += wy != 0 ? wy * (mx[i] - xc[i]) : (T)0;
                    }
                }
            } else if (smooth && w != 0) {
#pragma omp simd
                for (fxe_ssize i = 0; i < nb; i++) Dv[i] += w * (mx[i] - xc[i]);
            }
        }
        /* 4. integer labels: the one data-dependent read, never through a bad label */
        if (!dense) {
            for (fxe_ssize i = 0; i < nb; i++) {
                const fxe_ssize tr = p->t[b0 + i];
                const int ign = p->has_ignore && tr == p->ignore_index;
                const int valid = tr >= 0 && tr < C;
                if (!valid && !ign) cn->nbad++;
                const int keep = valid && !ign;
                const fxe_ssize ts = keep ? tr : 0;
                tv[i] = keep ? (T)tr : (T)-1;
                xt[i] = xs[ts * FXE_SB + i];
                at[i] = keep ? ome * wv[ts] : (T)0;
            }
        }
        for (fxe_ssize i = 0; i < nb; i++) rwv[i] = RS ? RS[b0 + i] : (T)1;
        /* 5. per-row scalars, vectorised across rows */
        if (dense)
            FN(small_scalars)(nb, mx, s1, cntv, Sv, Dv, tv, at, xt, lossv, kv, rwv, bsm, sumw,
                              zz, gs, 1, 0);
        else if (smooth)
            FN(small_scalars)(nb, mx, s1, cntv, Sv, Dv, tv, at, xt, lossv, kv, rwv, bsm, sumw,
                              zz, gs, 0, 1);
        else
            FN(small_scalars)(nb, mx, s1, cntv, Sv, Dv, tv, at, xt, lossv, kv, rwv, bsm, sumw,
                              zz, gs, 0, 0);
        if (want_loss) {
            double btotal = 0.0;
#pragma omp simd reduction(+:btotal)
            for (fxe_ssize i = 0; i < nb; i++) btotal += (double)lossv[i] * (double)rwv[i];
            total += btotal;
        }
        if (L) for (fxe_ssize i = 0; i < nb; i++) L[b0 + i] = lossv[i];
        if (LSE) for (fxe_ssize i = 0; i < nb; i++) LSE[b0 + i] = mx[i];
        if (p->check) {
            for (fxe_ssize i = 0; i < nb; i++) {
                const fxe_ssize r = b0 + i;
                T xmin = X[r * C], xmax = X[r * C];
                double xsum = 0.0;
                for (fxe_ssize c = 0; c < C; c++) {
                    T v = X[r * C + c];
                    xmin = v < xmin ? v : xmin;
                    xmax = v > xmax ? v : xmax;
                    xsum += (double)v;
                }
                FN(check_row)(p, r, cn, xmin, xmax, xsum,
                              dense ? Y + (ybc ? 0 : r * C) : NULL,
                              !dense && tv[i] >= 0 && xt[i] == -INFINITY, (double)Dv[i]);
            }
        }
        if (!G) continue;
        /* 6. gradient, class-major (into xs): k e - wy sc; rows without a coef term get
         * -wy sc, dropped rows 0. The dominant class of a row with one maximum, without
         * cancellation (softmax_row): coef p_a - wy_a = (coef - wy_a) - coef s1 / s. */
#pragma omp simd
        for (fxe_ssize i = 0; i < nb; i++) {
            rwv[i] = gs * rwv[i];                                 /* the gradient scale */
            s1[i] = s1[i] / (1 + s1[i]);                          /* s1 / s */
            amv[i] = kv[i] != 0 && cntv[i] == 1 ? amv[i] : (T)-1; /* rows with a fix-up */
        }
        for (fxe_ssize c = 0; c < C; c++) {
            const T *ec = es + c * FXE_SB, *yc = ys + c * FXE_SB;
            T *gc = xs + c * FXE_SB;
            const T w = wv[c], cf = (T)c;
            if (dense) {
#pragma omp simd
                for (fxe_ssize i = 0; i < nb; i++) {
                    const T yv = ybc ? Y[c] : yc[i];
                    const T wy = (a * yv + bsm) * w;
                    const T gv = (kv[i] != 0 ? kv[i] * ec[i] : (T)0) - wy * rwv[i];
                    gc[i] = amv[i] == cf ? ((Sv[i] - wy) - Sv[i] * s1[i]) * rwv[i] : gv;
                }
            } else {
#pragma omp simd
                for (fxe_ssize i = 0; i < nb; i++) {
                    const T wy = bsm * w + (tv[i] == cf ? at[i] : (T)0);
                    const T gv = (kv[i] != 0 ? kv[i] * ec[i] : (T)0) - wy * rwv[i];
                    gc[i] = amv[i] == cf ? ((Sv[i] - wy) - Sv[i] * s1[i]) * rwv[i]
                                         : (tv[i] >= 0 ? gv : (T)0);
                }
            }
        }
        T *gb = G + b0 * C;
        if (capped) {
            for (fxe_ssize c = 0; c < C; c++) {
                T *gc = xs + c * FXE_SB;
#pragma omp simd
                for (fxe_ssize i = 0; i < nb; i++) {
                    T th = FN(capv)(xb[i * C + c], cap, inv_cap) * inv_cap;
                    gc[i] = gc[i] * (1 - th * th);
                }
            }
        }
        FN(t_out)(gb, xs, nb, C);
    }
    return total;
}

/* ------------------------------------------------------------ Hessian-vector product */

/* out = sc [coef (p v - p (p.v)) + 2 z p (p.v)], coef = S + 2 z lse (softcap: not here).
 * The exponentials go to the per-thread scratch row, so out may be v itself. */
static double FN(hessp_rows)(const fxe_params *p, fxe_ssize r0, fxe_ssize r1, void *scr,
                             fxe_counts *cn)
{
    const fxe_ssize C = p->C;
    const int dense = p->y != NULL;
    const T *cw = (const T *)p->cw;
    const T a = (T)(1.0 - p->eps), bsm = (T)p->epsc;
    T *e_row = (T *)scr;
    for (fxe_ssize r = r0; r < r1; r++) {
        const T *x = (const T *)p->x + r * C, *v = (const T *)p->v + r * C;
        T *o = (T *)p->grad + r * C;
        const double sc = p->gscale * (p->rs ? (double)((const T *)p->rs)[r] : 1.0);
        double S;
        if (dense) {
            const T *y = (const T *)p->y + (p->y_rows == 1 ? 0 : r * C);
            S = 0.0;
            for (fxe_ssize c = 0; c < C; c++) S += (double)((a * y[c] + bsm) * (cw ? cw[c] : 1));
        } else {
            const fxe_ssize t = p->t[r];
            const int ign = p->has_ignore && t == p->ignore_index;
            const int valid = t >= 0 && t < C;
            if (!valid && !ign) cn->nbad++;
            if (!valid || ign) {
                for (fxe_ssize c = 0; c < C; c++) o[c] = 0;
                continue;
            }
            S = (double)a * (cw ? (double)cw[t] : 1.0) + (double)bsm * p->sum_cw;
        }
        T m = FN(vmax)(x, C);
        m = m == -INFINITY ? (T)0 : m;
        double s = 0.0, ev = 0.0;
        for (fxe_ssize c0 = 0; c0 < C; c0 += 128) {
            const fxe_ssize c1 = C - c0 < 128 ? C : c0 + 128;
            T bs = 0, bv = 0;
#pragma omp simd reduction(+:bs, bv)
            for (fxe_ssize c = c0; c < c1; c++) {
                T e = EXP(x[c] - m);
                bs += e;
                bv += e * v[c];
                e_row[c] = e;
            }
            s += (double)bs;
            ev += (double)bv;
        }
        const double lse = (double)m + log(s);
        const T inv = (T)(1.0 / s), pv = (T)(ev / s);
        const T coef = (T)((p->z != 0 ? S + 2 * p->z * lse : S) * sc);
        const T zp = (T)(2 * p->z * (ev / s) * sc);
#pragma omp simd
        for (fxe_ssize c = 0; c < C; c++) {
            T pc = e_row[c] * inv;
            o[c] = coef * (pc * v[c] - pc * pv) + zp * pc;
        }
    }
    return 0.0;
}

/* ------------------------------------------------------- gradient w.r.t. dense labels */

/* out = (1 - eps) cw (lse - x) sc, lse saved or recomputed */
static double FN(label_grad_rows)(const fxe_params *p, fxe_ssize r0, fxe_ssize r1, void *scr,
                                  fxe_counts *cn)
{
    const fxe_ssize C = p->C;
    const T *cw = (const T *)p->cw;
    const T ome = (T)(1.0 - p->eps);
    (void)scr; (void)cn;
    for (fxe_ssize r = r0; r < r1; r++) {
        const T *x = (const T *)p->x + r * C;
        T *o = (T *)p->grad + r * C;
        const T sc = (T)(p->gscale * (p->rs ? (double)((const T *)p->rs)[r] : 1.0));
        const T lse = p->lse_in ? ((const T *)p->lse_in)[r] : (T)FN(row_lse)(x, C);
        const T k = ome * sc;
        if (cw) {
#pragma omp simd
            for (fxe_ssize c = 0; c < C; c++) o[c] = ((lse - x[c]) * cw[c]) * k;
        } else {
#pragma omp simd
            for (fxe_ssize c = 0; c < C; c++) o[c] = (lse - x[c]) * k;
        }
    }
    return 0.0;
}

/* ------------------------------------------------------------------ sigmoid */

/* loss = a sp(x) + b sp(-x) with a = 1 - y', b = q y', y' = (1 - eps) y + eps / 2;
 * grad = (a sigma(x) - b sigma(-x)) sc; all from e = exp(-|x|), l = log1p(e). Terms with a
 * zero coefficient are skipped: x = -inf with y = 0 gives exactly 0. */
FXE_INLINE void FN(sigmoid_row_)(const T *x, const T *y, const T *pw, const T *rsr,
                                 fxe_ssize C, T ome, T eh, T sc0, T *l2, double *lsum,
                                 double *wsum, T *g, const int use_pw, const int want_l,
                                 const int want_g, const int elem_rs)
{
    double acc = 0.0, wacc = 0.0;
    T lbuf[128];            /* per-element losses nobody asked for: an unconditional store */
    for (fxe_ssize c0 = 0; c0 < C; c0 += 128) {
        const fxe_ssize c1 = C - c0 < 128 ? C : c0 + 128;
        T *lw = l2 ? l2 + c0 : lbuf;
        T bl = 0, bw = 0;
#pragma omp simd reduction(+:bl, bw)
        for (fxe_ssize c = c0; c < c1; c++) {
            T xc = x[c];
            T yy = ome * y[c] + eh;
            T av = 1 - yy, bv = use_pw ? yy * pw[c] : yy;
            T ax = xc < 0 ? -xc : xc;
            ax = xc != xc ? xc : ax;
            T e = EXP(-ax);
            T sc = elem_rs ? sc0 * rsr[c] : sc0;
            if (want_l) {
                T l = LOG1PU(e);
                T spp = (xc > 0 ? xc : (T)0) + l, spn = (xc < 0 ? -xc : (T)0) + l;
                T v = (av != 0 ? av * spp : (T)0) + (bv != 0 ? bv * spn : (T)0);
                lw[c - c0] = v;
                bl += v;
                if (elem_rs) bw += v * rsr[c];
            }
            if (want_g) {
                T rr = 1 / (1 + e);
                T sp = xc >= 0 ? rr : e * rr, sn = xc >= 0 ? e * rr : rr;
                g[c] = (av * sp - bv * sn) * sc;
            }
        }
        acc += (double)bl;
        wacc += (double)bw;
    }
    *lsum = acc;
    *wsum = wacc;
}

static double FN(sigmoid_rows)(const fxe_params *p, fxe_ssize r0, fxe_ssize r1, void *scr,
                               fxe_counts *cn)
{
    const fxe_ssize C = p->C;
    const T *pw = (const T *)p->cw, *RS = (const T *)p->rs;
    const T ome = (T)(1.0 - p->eps), eh = (T)(p->eps / 2.0);
    const int want_l = p->loss != NULL || p->want_total || p->check, want_g = p->grad != NULL;
    const int elem = RS && p->rs_elem;
    double total = 0.0;
    (void)scr;
    for (fxe_ssize r = r0; r < r1; r++) {
        const T *x = (const T *)p->x + r * C, *y = (const T *)p->y + r * C;
        const T *rsr = elem ? RS + r * C : NULL;
        const double rw = (RS && !elem) ? (double)RS[r] : 1.0;
        const T sc0 = (T)(p->gscale * rw);
        T *l2 = (p->loss && p->loss_2d) ? (T *)p->loss + r * C : NULL;
        T *g = want_g ? (T *)p->grad + r * C : NULL;
        double ls = 0.0, ws = 0.0;
#define FXE_SIG(U, L, G, E) FN(sigmoid_row_)(x, y, pw, rsr, C, ome, eh, sc0, l2, &ls, &ws, g, U, L, G, E)
        if (elem) {
            if (pw) { if (want_l && want_g) FXE_SIG(1, 1, 1, 1); else if (want_l) FXE_SIG(1, 1, 0, 1); else FXE_SIG(1, 0, 1, 1); }
            else { if (want_l && want_g) FXE_SIG(0, 1, 1, 1); else if (want_l) FXE_SIG(0, 1, 0, 1); else FXE_SIG(0, 0, 1, 1); }
        } else {
            if (pw) { if (want_l && want_g) FXE_SIG(1, 1, 1, 0); else if (want_l) FXE_SIG(1, 1, 0, 0); else FXE_SIG(1, 0, 1, 0); }
            else { if (want_l && want_g) FXE_SIG(0, 1, 1, 0); else if (want_l) FXE_SIG(0, 1, 0, 0); else FXE_SIG(0, 0, 1, 0); }
        }
#undef FXE_SIG
        if (p->loss && !p->loss_2d) ((T *)p->loss)[r] = (T)ls;
        total += elem ? ws : ls * rw;
        if (p->check) {
            fxe_ssize unit = 0, bad = 0;
            for (fxe_ssize c = 0; c < C; c++) {
                unit += x[c] > 0 && x[c] <= 1;
                bad += !(x[c] - x[c] == 0) && !(x[c] == -INFINITY && y[c] == 0)
                       && !(x[c] == INFINITY && y[c] == 1);
            }
            if (unit) { if (cn->diag[FXE_D_UNIT_ELEMS] == 0) cn->first[FXE_D_UNIT_ELEMS] = r;
                        cn->diag[FXE_D_UNIT_ELEMS] += unit; }
            if (bad) FXE_COUNT(cn, FXE_D_NONFINITE_ROWS, r);
        }
    }
    return total;
}

/* d loss / d y = (1 - eps) (-x + (q - 1) sp(-x)) sc */
FXE_INLINE T FN(sig_dy_)(T xc, T q)
{
    T qm1 = q - 1;
    T ax = xc < 0 ? -xc : xc;
    ax = xc != xc ? xc : ax;
    T spn = (xc < 0 ? -xc : (T)0) + LOG1PU(EXP(-ax));
    return qm1 != 0 ? -xc + qm1 * spn : -xc;
}

static double FN(sigmoid_label_grad_rows)(const fxe_params *p, fxe_ssize r0, fxe_ssize r1,
                                          void *scr, fxe_counts *cn)
{
    const fxe_ssize C = p->C;
    const T *pw = (const T *)p->cw, *RS = (const T *)p->rs;
    const T ome = (T)(1.0 - p->eps);
    const int elem = RS && p->rs_elem;
    (void)scr; (void)cn;
    for (fxe_ssize r = r0; r < r1; r++) {
        const T *x = (const T *)p->x + r * C;
        T *o = (T *)p->grad + r * C;
        const T sc0 = (T)(p->gscale * ((RS && !elem) ? (double)RS[r] : 1.0)) * ome;
        /* per-element weights in their own loops: a `elem ? RS[...] : sc0` select becomes a
         * masked load from RS = NULL with an all-zero mask, which AMD CPUs execute through
         * a fault-suppression assist (40x slower) */
        const T *rw = elem ? RS + r * C : NULL;
        if (pw && rw) {
#pragma omp simd
            for (fxe_ssize c = 0; c < C; c++) o[c] = FN(sig_dy_)(x[c], pw[c]) * (sc0 * rw[c]);
        } else if (pw) {
#pragma omp simd
            for (fxe_ssize c = 0; c < C; c++) o[c] = FN(sig_dy_)(x[c], pw[c]) * sc0;
        } else if (rw) {
#pragma omp simd
            for (fxe_ssize c = 0; c < C; c++) o[c] = -x[c] * (sc0 * rw[c]);
        } else {
#pragma omp simd
            for (fxe_ssize c = 0; c < C; c++) o[c] = -x[c] * sc0;
        }
    }
    return 0.0;
}

/* ------------------------------------------------------------------ utilities */

static double FN(logsumexp_rows)(const fxe_params *p, fxe_ssize r0, fxe_ssize r1, void *scr,
                                 fxe_counts *cn)
{
    (void)scr; (void)cn;
    for (fxe_ssize r = r0; r < r1; r++)
        ((T *)p->grad)[r] = (T)FN(row_lse)((const T *)p->x + r * p->C, p->C);
    return 0.0;
}

/* softmax (mode 0) or log_softmax (mode 1) into out (may be x) */
static double FN(softmax_util_rows)(const fxe_params *p, fxe_ssize r0, fxe_ssize r1, void *scr,
                                    fxe_counts *cn)
{
    const fxe_ssize C = p->C;
    (void)scr; (void)cn;
    for (fxe_ssize r = r0; r < r1; r++) {
        const T *x = (const T *)p->x + r * C;
        T *o = (T *)p->grad + r * C;
        T m = FN(vmax)(x, C);
        m = m == -INFINITY ? (T)0 : m;
        FN(lanes) L;
        FN(lanes_init)(&L);
        if (p->mode == 0) {
            FN(pass_a)(x, NULL, NULL, C, m, 0, 0, o, &L, 0, 0, 1, NULL, 0, NULL, 0);
            const T inv = (T)(1.0 / (L.n + L.s1));
#pragma omp simd
            for (fxe_ssize c = 0; c < C; c++) o[c] = o[c] * inv;
        } else {
            FN(pass_a)(x, NULL, NULL, C, m, 0, 0, NULL, &L, 0, 0, 1, NULL, 0, NULL, 0);
            const T logs = (T)FN(log_s)(L.s1, L.n);
#pragma omp simd
            for (fxe_ssize c = 0; c < C; c++) o[c] = (x[c] - m) - logs;
        }
    }
    return 0.0;
}
