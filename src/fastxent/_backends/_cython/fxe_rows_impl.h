/* fxe_rows_impl.h -- row-block kernels, instantiated by fxe_kernels.h once per
 * (dtype, SIMD variant). No include guard on purpose. Before including, define:
 *   T          float or double
 *   FXE_EXP    fxe_expf or fxe_exp          (vectorisable, fxe_math.h)
 *   FXE_LOGV   a log that vectorises (fxe_logf) or libm log for double
 *   FXE_LOG1P  log1pf or log1p
 *   FN(name)   the suffixed function name, e.g. name##_f32_avx2
 * A `#pragma GCC target` around the include selects the instruction set.
 *
 * Every kernel has the signature Py_ssize_t k(const fxe_params *p, r0, r1): it processes
 * rows [r0, r1) and returns the number of bad (out of range, not ignored) labels in them.
 * Rows are independent and each row's reductions run in a fixed order, so the result is
 * the same bits whatever the split of rows between threads.
 *
 * Accuracy: the sum of exponentials of a row is accumulated in double, in the SIMD lanes of
 * `#pragma omp simd reduction` (for float32 this is ~2^29 times finer than the data, so
 * the order does not matter; for float64 it is 4-8 lane partial sums), and the per-row
 * loss is assembled in double (log of the double sum, masked dot product in double).
 * Elementwise outputs (grad, probabilities) are computed in the input dtype.
 */

/* ------------------------------------------------------------------ row helpers */

/* max of a row, with -inf (all -inf row) replaced by 0 like the reference. A NaN may or may
 * not win the max depending on its lane; either way exp(x - m) makes the row sum NaN. */
FXE_INLINE T FN(row_max)(const T *x, Py_ssize_t C)
{
    /* 32 independent lanes (4 AVX2 registers for float32): the max is not latency-bound */
    T acc[32];
    Py_ssize_t c = 0;
    T m = x[0];
    if (C >= 32) {
        for (int k = 0; k < 32; k++) acc[k] = x[k];
        for (c = 32; c + 32 <= C; c += 32)
            for (int k = 0; k < 32; k++) acc[k] = x[c + k] > acc[k] ? x[c + k] : acc[k];
        for (int k = 0; k < 32; k++) m = acc[k] > m ? acc[k] : m;
    }
    for (; c < C; c++) m = x[c] > m ? x[c] : m;
    return m == -INFINITY ? (T)0 : m;
}

/* sum_c exp(x_c - m); stores exp(x_c - m) into out (may be x) when out != NULL.
 * Summation: blocks of FXE_SUM_BLOCK elements are summed in the input dtype in the SIMD
 * lanes of `omp simd reduction` (<= 16 terms per lane for float32/AVX2, then a short lane
 * tree), and the block sums are accumulated in double. For float32 the rounding error is
 * then at most that of ~20 sequential additions, below NumPy's pairwise summation (8-way
 * blocks of 128, then a pairwise tree: ~24 levels for 32768 terms); converting every term
 * to double instead costs ~2x in this, the hottest loop. For float64 it is the same
 * structure with double everywhere. */
#ifndef FXE_SUM_BLOCK
#define FXE_SUM_BLOCK 128
#endif
FXE_INLINE double FN(sum_exp)(const T *x, Py_ssize_t C, T m, T *out)
{
#ifdef FXE_SUMEXPF_VEC
    if (sizeof(T) == 4) return FXE_SUMEXPF_VEC((const float *)x, C, (float)m, (float *)out);
#endif
    double s = 0.0;
    for (Py_ssize_t c0 = 0; c0 < C; c0 += FXE_SUM_BLOCK) {
        const Py_ssize_t c1 = C - c0 < FXE_SUM_BLOCK ? C : c0 + FXE_SUM_BLOCK;
        T b = 0;
        if (out) {
#pragma omp simd reduction(+:b)
            for (Py_ssize_t c = c0; c < c1; c++) {
                T e = FXE_EXP(x[c] - m);
                b += e;
                out[c] = e;
            }
        } else {
#pragma omp simd reduction(+:b)
            for (Py_ssize_t c = c0; c < c1; c++)
                b += FXE_EXP(x[c] - m);
        }
        s += (double)b;
    }
    return s;
}

/* ------------------------------------------------------------ wide rows: online max
 * For C > FXE_ON_BLOCK the row is processed in one streaming pass of blocks of
 * FXE_ON_BLOCK elements (L1-resident): the block's max (raw, from memory), then the block's
 * exponentials against the running shift (the max so far), the running double sum being
 * rescaled by exp(old - new) whenever the shift rises. The row then streams from memory
 * once while computing (instead of a memory-bound max pass followed by a compute-bound exp
 * pass with memory idle). Stored exponentials of block b are relative to shift sh[b]; the
 * caller folds exp(sh[b] - m) into the gradient factor of that block (most blocks have
 * sh[b] == m, whose factor is exactly the old one). The shift is 0 while the running max is
 * -inf (all -inf so far: those exponentials are 0), and the final shift is the row max
 * with an all -inf row giving 0, exactly as row_max.
 * Tried and dropped: non-temporal stores of the gradient from a cache-resident scratch row
 * (no read-for-ownership of g): 25.5 ms instead of 22.8 ms for 2048 x 32768 float32 fused
 * on 2 threads of the development VM (504 MB L3 — the "memory" stream is largely L3). */
#ifndef FXE_ON_BLOCK
#define FXE_ON_BLOCK 2048
#define FXE_ON_MAXB 512             /* most blocks per row (stack array of shifts) */
#endif

/* max of x[0..n), no -inf replacement */
FXE_INLINE T FN(max_raw)(const T *x, Py_ssize_t n)
{
    T acc[32];
    Py_ssize_t c = 0;
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

FXE_INLINE double FN(online_sum_exp)(const T *x, Py_ssize_t C, T *out, T *m_out, T *sh)
{
    double s = 0.0;
    T m = -INFINITY, shift = 0;
    Py_ssize_t b = 0;
    for (Py_ssize_t c0 = 0; c0 < C; c0 += FXE_ON_BLOCK, b++) {
        const Py_ssize_t nb = C - c0 < FXE_ON_BLOCK ? C - c0 : FXE_ON_BLOCK;
        T bm = FN(max_raw)(x + c0, nb);
        if (bm > m) {                   /* NaN never rises: it reaches s through exp anyway */
            if (m != -INFINITY) s *= fxe_exp((double)shift - (double)bm);
            m = bm;
            shift = bm;
        }
        if (sh) sh[b] = shift;
        s += FN(sum_exp)(x + c0, nb, shift, out ? out + c0 : NULL);
    }
    *m_out = shift;
    return s;
}

/* log-sum-exp pieces of a row without stores: m (row_max) and the exp sum */
FXE_INLINE double FN(max_sum_exp)(const T *x, Py_ssize_t C, T *m_out)
{
    if (C > FXE_ON_BLOCK) return FN(online_sum_exp)(x, C, NULL, m_out, NULL);
    T m = FN(row_max)(x, C);
    *m_out = m;
    return FN(sum_exp)(x, C, m, NULL);
}

/* dense targets: wy_c = cw_c ((1 - eps) y_c + eps / C). Computes S = sum wy, the masked dot
 * sum_{wy_c != 0} wy_c (m - x_c), the exp sum, and stores exp into out when out != NULL.
 *
 * Loops are versioned by hand on "cw present" / "store": a vectorised loop must never
 * carry a conditional load/store through a NULL pointer (gcc emits vmaskmovps with an
 * all-false mask, which costs a microcode assist per instruction on Intel CPUs). The
 * `const int` flags are compile-time constants after inlining. */
FXE_INLINE double FN(dense_pass_)(const T *x, const T *y, const T *cw, Py_ssize_t C, T m,
                                  T a, T b, T *out, double *S_out, double *dot_out,
                                  const int use_cw, const int store)
{
    double s = 0.0, S = 0.0, dot = 0.0;
    for (Py_ssize_t c0 = 0; c0 < C; c0 += FXE_SUM_BLOCK) {
        const Py_ssize_t c1 = C - c0 < FXE_SUM_BLOCK ? C : c0 + FXE_SUM_BLOCK;
        T bs = 0, bS = 0, bd = 0;
#pragma omp simd reduction(+:bs, bS, bd)
        for (Py_ssize_t c = c0; c < c1; c++) {
            T xc = x[c];
            T wy = a * y[c] + b;
            if (use_cw) wy = wy * cw[c];
            T d = m - xc;
            T e = FXE_EXP(-d);
            bs += e;
            bS += wy;
            bd += wy != 0 ? wy * d : (T)0;
            if (store) out[c] = e;
        }
        s += (double)bs;
        S += (double)bS;
        dot += (double)bd;
    }
    *S_out = S;
    *dot_out = dot;
    return s;
}

FXE_INLINE double FN(dense_pass)(const T *x, const T *y, const T *cw, Py_ssize_t C, T m,
                                 T a, T b, T *out, double *S_out, double *dot_out)
{
    if (cw)
        return out ? FN(dense_pass_)(x, y, cw, C, m, a, b, out, S_out, dot_out, 1, 1)
                   : FN(dense_pass_)(x, y, cw, C, m, a, b, out, S_out, dot_out, 1, 0);
    return out ? FN(dense_pass_)(x, y, cw, C, m, a, b, out, S_out, dot_out, 0, 1)
               : FN(dense_pass_)(x, y, cw, C, m, a, b, out, S_out, dot_out, 0, 0);
}

/* S = sum_c cw_c ((1 - eps) y_c + eps / C) */
FXE_INLINE double FN(dense_S)(const T *y, const T *cw, Py_ssize_t C, T a, T b)
{
    double S = 0.0;
    if (cw) {
#pragma omp simd reduction(+:S)
        for (Py_ssize_t c = 0; c < C; c++) S += (double)((a * y[c] + b) * cw[c]);
    } else {
#pragma omp simd reduction(+:S)
        for (Py_ssize_t c = 0; c < C; c++) S += (double)(a * y[c] + b);
    }
    return S;
}

/* g_c = (k e_c - wy_c) sc with e_c = g_c (in place) or exp(x_c - lT) (lse given: g may be x) */
FXE_INLINE void FN(grad_dense_)(T *g, const T *x, const T *y, const T *cw, Py_ssize_t C,
                                T k, T lT, T a, T b, T sc, const int use_cw, const int from_x)
{
#pragma omp simd
    for (Py_ssize_t c = 0; c < C; c++) {
        T wy = a * y[c] + b;
        if (use_cw) wy = wy * cw[c];
        T e = from_x ? FXE_EXP(x[c] - lT) : g[c];
        g[c] = (k * e - wy) * sc;
    }
}

FXE_INLINE void FN(grad_dense)(T *g, const T *x, const T *y, const T *cw, Py_ssize_t C,
                               T k, T lT, T a, T b, T sc, int from_x)
{
    if (cw) {
        if (from_x) FN(grad_dense_)(g, x, y, cw, C, k, lT, a, b, sc, 1, 1);
        else FN(grad_dense_)(g, x, y, cw, C, k, lT, a, b, sc, 1, 0);
    } else {
        if (from_x) FN(grad_dense_)(g, x, y, cw, C, k, lT, a, b, sc, 0, 1);
        else FN(grad_dense_)(g, x, y, cw, C, k, lT, a, b, sc, 0, 0);
    }
}

/* sparse: g_c = (k e_c - b w_c) sc (the label's own term is subtracted by the caller) */
FXE_INLINE void FN(grad_sparse_)(T *g, const T *x, const T *cw, Py_ssize_t C, T k, T lT,
                                 T b, T sc, const int use_cw, const int from_x)
{
#pragma omp simd
    for (Py_ssize_t c = 0; c < C; c++) {
        T wy = use_cw ? b * cw[c] : b;
        T e = from_x ? FXE_EXP(x[c] - lT) : g[c];
        g[c] = (k * e - wy) * sc;
    }
}

FXE_INLINE void FN(grad_sparse)(T *g, const T *x, const T *cw, Py_ssize_t C, T k, T lT,
                                T b, T sc, int from_x)
{
    if (cw) {
        if (from_x) FN(grad_sparse_)(g, x, cw, C, k, lT, b, sc, 1, 1);
        else FN(grad_sparse_)(g, x, cw, C, k, lT, b, sc, 1, 0);
    } else {
        if (from_x) FN(grad_sparse_)(g, x, cw, C, k, lT, b, sc, 0, 1);
        else if (b != 0) FN(grad_sparse_)(g, x, cw, C, k, lT, b, sc, 0, 0);
        else {
            T ks = k * sc;
#pragma omp simd
            for (Py_ssize_t c = 0; c < C; c++) g[c] = ks * g[c];
        }
    }
}

/* sum_c w_c (m - x_c) over w_c != 0 (w = cw, or 1 when cw is NULL) */
FXE_INLINE double FN(wdot)(const T *x, const T *cw, Py_ssize_t C, T m)
{
    double dot = 0.0;
    if (cw) {
#pragma omp simd reduction(+:dot)
        for (Py_ssize_t c = 0; c < C; c++)
            dot += cw[c] != 0 ? (double)(cw[c] * (m - x[c])) : 0.0;
    } else {
#pragma omp simd reduction(+:dot)
        for (Py_ssize_t c = 0; c < C; c++)
            dot += (double)(m - x[c]);
    }
    return dot;
}

FXE_INLINE void FN(zero_row)(T *g, Py_ssize_t C)
{
    for (Py_ssize_t c = 0; c < C; c++) g[c] = 0;
}

/* ------------------------------------------------------- small class counts (sparse) */

/* Integer labels with C <= FXE_SMALL_C: rows are processed in blocks of FXE_SB, in stages
 * that are each a simple loop over the block (max, exp, sum, log, labels, gradient), so
 * the compiler vectorises across rows instead of along a row of 3 elements. Called with
 * a compile-time constant C (see the switch below), which unrolls the inner loops. */
FXE_INLINE Py_ssize_t FN(sparse_small)(const fxe_params *p, Py_ssize_t r0, Py_ssize_t r1,
                                       const Py_ssize_t C)
{
#ifdef FXE_SMALLF_VEC
    if (sizeof(T) == 4) return FXE_SMALLF_VEC(p, r0, r1, C);
#endif
    const T *X = (const T *)p->x;
    const T *cw = p->has_cw ? (const T *)p->cw : NULL;
    const T *SC = (const T *)p->scale;
    T *L = (T *)p->loss, *G = (T *)p->grad, *LSE = (T *)p->lse_out;
    const T eps = (T)p->eps, ome = (T)(1.0 - p->eps), epsc = (T)(p->eps / (double)p->C);
    const T zz = (T)p->z, sumw = (T)p->sum_cw;
    const int scale_full = p->scale_full, has_ignore = p->has_ignore;
    const Py_ssize_t ignore_index = p->ignore_index;
    const Py_ssize_t *TL = p->t;
    Py_ssize_t nbad = 0;
    /* per-row temporaries, all of the data type so that every stage vectorises */
    T mx[FXE_SB], sv[FXE_SB], lg[FXE_SB], xt[FXE_SB], wt[FXE_SB], tf[FXE_SB], scv[FXE_SB];
    T kk[FXE_SB], aa[FXE_SB], bb[FXE_SB], lo[FXE_SB], dt[FXE_SB];
    T ew[FXE_SB * FXE_SMALL_C], dl[FXE_SB * FXE_SMALL_C];
    T wv[FXE_SMALL_C];
    for (Py_ssize_t c = 0; c < C; c++) wv[c] = cw ? cw[c] : (T)1;

    for (Py_ssize_t b0 = r0; b0 < r1; b0 += FXE_SB) {
        const Py_ssize_t nb = (r1 - b0) < FXE_SB ? (r1 - b0) : FXE_SB;
        const T *xb = X + b0 * C;
        /* 1. row max */
        for (Py_ssize_t i = 0; i < nb; i++) {
            T m = xb[i * C];
            for (Py_ssize_t c = 1; c < C; c++) m = xb[i * C + c] > m ? xb[i * C + c] : m;
            mx[i] = m == -INFINITY ? (T)0 : m;
        }
        /* 2. exponentials, 3. their row sums, 4. logs */
        for (Py_ssize_t i = 0; i < nb; i++)
            for (Py_ssize_t c = 0; c < C; c++)
                ew[i * C + c] = FXE_EXP(xb[i * C + c] - mx[i]);
        for (Py_ssize_t i = 0; i < nb; i++) {
            T sum = ew[i * C];
            for (Py_ssize_t c = 1; c < C; c++) sum += ew[i * C + c];
            sv[i] = sum;
        }
        for (Py_ssize_t i = 0; i < nb; i++) lg[i] = FXE_LOGV(sv[i]);
        if (LSE)
            for (Py_ssize_t i = 0; i < nb; i++) LSE[b0 + i] = mx[i] + lg[i];
        /* 5. labels (scalar: the one data-dependent load, never through a bad label) */
        for (Py_ssize_t i = 0; i < nb; i++) {
            Py_ssize_t t = TL[b0 + i];
            int ign = has_ignore & (t == ignore_index);
            int valid = (size_t)t < (size_t)C;
            nbad += (!valid) & (!ign);
            int keep = valid & (!ign);
            Py_ssize_t ts = keep ? t : 0;
            tf[i] = keep ? (T)t : (T)-1;
            xt[i] = xb[i * C + ts];
            wt[i] = keep ? wv[ts] : (T)0;
            scv[i] = SC ? SC[scale_full ? b0 + i : 0] : (T)1;
        }
        /* 6. losses and gradient coefficients, branch-free */
        if (eps != 0) {
            for (Py_ssize_t i = 0; i < nb; i++) {
                T d = 0;
                for (Py_ssize_t c = 0; c < C; c++)
                    d += wv[c] != 0 ? wv[c] * (mx[i] - xb[i * C + c]) : (T)0;
                dt[i] = epsc * d;
            }
        } else {
            for (Py_ssize_t i = 0; i < nb; i++) dt[i] = 0;
        }
        int nzero = 0;
        for (Py_ssize_t i = 0; i < nb; i++) {
            T keep = tf[i] >= 0 ? (T)1 : (T)0;
            T m = mx[i], logs = lg[i], lse = m + logs;
            T at = ome * wt[i];                       /* the label's own weight */
            T S = keep != 0 ? epsc * sumw + at : (T)0;
            T coef = S + 2 * zz * lse;
            coef = zz != 0 ? coef : S;
            T loss = S != 0 ? S * logs : (T)0;
            loss += at != 0 ? at * (m - xt[i]) : (T)0;
            loss += dt[i];
            loss += zz != 0 ? zz * lse * lse : (T)0;
            lo[i] = keep != 0 ? loss : (T)0;
            T sc = scv[i];
            kk[i] = (keep != 0 && coef != 0) ? coef / sv[i] * sc : (T)0;
            aa[i] = at * sc;
            bb[i] = keep != 0 ? epsc * sc : (T)0;
            nzero += kk[i] == 0;
        }
        if (L)
            for (Py_ssize_t i = 0; i < nb; i++) L[b0 + i] = lo[i];
        /* 7. gradient */
        if (G) {
            T *gb = G + b0 * C;
            /* the label's own term as a sparse block dl (scalar stores into a zeroed
             * buffer, so the vector loop below has no select and no read-after-write) */
            for (Py_ssize_t i = 0; i < nb * C; i++) dl[i] = 0;
            for (Py_ssize_t i = 0; i < nb; i++)
                dl[i * C + (tf[i] >= 0 ? (Py_ssize_t)tf[i] : 0)] = tf[i] >= 0 ? aa[i] : (T)0;
            if (nzero)          /* rows without a (coef * p) term: no 0 * NaN from exp */
                for (Py_ssize_t i = 0; i < nb; i++)
                    if (kk[i] == 0)
                        for (Py_ssize_t c = 0; c < C; c++) ew[i * C + c] = 0;
            for (Py_ssize_t i = 0; i < nb; i++)
                for (Py_ssize_t c = 0; c < C; c++)
                    gb[i * C + c] = (kk[i] * ew[i * C + c] - bb[i] * wv[c]) - dl[i * C + c];
        }
    }
    return nbad;
}

/* ------------------------------------------------------------------ softmax family */

/* forward / backward / fused, dense or sparse labels (flags in p) */
static Py_ssize_t FN(softmax_xent)(const fxe_params *p, Py_ssize_t r0, Py_ssize_t r1)
{
    const Py_ssize_t C = p->C;
    const T *X = (const T *)p->x, *Y = (const T *)p->y;
    const T *cw = p->has_cw ? (const T *)p->cw : NULL;
    const T *SC = (const T *)p->scale, *LSEI = p->has_lse_in ? (const T *)p->lse_in : NULL;
    T *L = (T *)p->loss, *G = (T *)p->grad, *LSE = (T *)p->lse_out;
    const int sparse = p->sparse, scale_full = p->scale_full;
    const T eps = (T)p->eps, ome = (T)(1.0 - p->eps), epsc = (T)(p->eps / (double)C);
    const double z = p->z;
    Py_ssize_t nbad = 0;

    if (sparse && C <= FXE_SMALL_C && C >= 2 && !LSEI) {
        switch (C) {                    /* constant C: each case gets its own unrolled copy */
        case 2: return FN(sparse_small)(p, r0, r1, 2);
        case 3: return FN(sparse_small)(p, r0, r1, 3);
        case 4: return FN(sparse_small)(p, r0, r1, 4);
        case 5: return FN(sparse_small)(p, r0, r1, 5);
        case 6: return FN(sparse_small)(p, r0, r1, 6);
        case 7: return FN(sparse_small)(p, r0, r1, 7);
        case 8: return FN(sparse_small)(p, r0, r1, 8);
        case 9: return FN(sparse_small)(p, r0, r1, 9);
        case 10: return FN(sparse_small)(p, r0, r1, 10);
        case 11: return FN(sparse_small)(p, r0, r1, 11);
        case 12: return FN(sparse_small)(p, r0, r1, 12);
        case 13: return FN(sparse_small)(p, r0, r1, 13);
        case 14: return FN(sparse_small)(p, r0, r1, 14);
        case 15: return FN(sparse_small)(p, r0, r1, 15);
        case 16: return FN(sparse_small)(p, r0, r1, 16);
        default: break;
        }
    }

    for (Py_ssize_t r = r0; r < r1; r++) {
        const T *x = X + r * C;
        T *g = G ? G + r * C : NULL;
        T sc = SC ? SC[scale_full ? r : 0] : (T)1;
        Py_ssize_t t = 0;
        int keep = 1;
        if (sparse) {
            keep = fxe_label(p, r, &t, &nbad);
            if (!keep) {
                if (LSE) {
                    T m;
                    double s0 = FN(max_sum_exp)(x, C, &m);
                    LSE[r] = (T)((double)m + fxe_log(s0));
                }
                if (L) L[r] = 0;
                if (g) FN(zero_row)(g, C);
                continue;
            }
        }
        /* S = sum wy, dot = sum wy (m - x); sparse: the label's part and the smoothing part */
        double S = 0.0, dot = 0.0, s, logs, lse;
        T m, at = 0, xt = 0;
        if (sparse) {
            T wt = cw ? cw[t] : (T)1;
            at = ome * wt;
            S = eps != 0 ? (double)(epsc * (T)p->sum_cw + at) : (double)at;
            xt = x[t];                                  /* read before g (maybe x) is written */
        }
        if (LSEI) {                                     /* backward from the saved lse */
            lse = (double)LSEI[r];
            if (!sparse) S = FN(dense_S)(Y + r * C, cw, C, ome, epsc);
            double coef = z != 0 ? S + 2 * z * lse : S;
            /* coef == 0: no (coef * p) term at all (k = 0 and no exp of x; 0 * inf) */
            T k = (T)coef, lT = coef != 0 ? LSEI[r] : (T)INFINITY;
            if (sparse) {
                FN(grad_sparse)(g, x, cw, C, k, lT, epsc, sc, 1);
                g[t] -= at * sc;
            } else {
                FN(grad_dense)(g, x, Y + r * C, cw, C, k, lT, ome, epsc, sc, 1);
            }
            continue;
        }
        if (sparse && (eps == 0 || !L) && C > FXE_ON_BLOCK &&
            (C + FXE_ON_BLOCK - 1) / FXE_ON_BLOCK <= FXE_ON_MAXB) {
            /* wide rows: one streaming pass (see online_sum_exp) */
            T sh[FXE_ON_MAXB];
            s = FN(online_sum_exp)(x, C, g, &m, g ? sh : NULL);
            if (L) dot = at != 0 ? (double)(at * (m - xt)) : 0.0;
            logs = fxe_log(s);
            lse = (double)m + logs;
            if (LSE) LSE[r] = (T)lse;
            if (L) {
                double loss = (S != 0 ? S * logs : 0.0) + dot;
                if (z != 0) loss += z * lse * lse;
                L[r] = (T)loss;
            }
            if (g) {
                double coef = z != 0 ? S + 2 * z * lse : S;
                T k = (T)(coef / s);
                if (coef == 0) k = 0;
                Py_ssize_t b = 0;
                for (Py_ssize_t c0 = 0; c0 < C; c0 += FXE_ON_BLOCK, b++) {
                    const Py_ssize_t nb = C - c0 < FXE_ON_BLOCK ? C - c0 : FXE_ON_BLOCK;
                    T kb = k;
                    if (coef == 0) FN(zero_row)(g + c0, nb);   /* no (coef * p) term */
                    else if (sh[b] != m) kb = k * FXE_EXP(sh[b] - m);
                    FN(grad_sparse)(g + c0, x + c0, cw ? cw + c0 : NULL, nb, kb, 0, epsc,
                                    sc, 0);
                }
                g[t] -= at * sc;
            }
            continue;
        }
        m = FN(row_max)(x, C);
        if (sparse) {
            if (L) {                                    /* before g (maybe x) is written */
                dot = at != 0 ? (double)(at * (m - xt)) : 0.0;
                if (eps != 0) dot += (double)epsc * FN(wdot)(x, cw, C, m);
            }
            s = FN(sum_exp)(x, C, m, g);
        } else {
            s = FN(dense_pass)(x, Y + r * C, cw, C, m, ome, epsc, g, &S, &dot);
        }
        logs = fxe_log(s);
        lse = (double)m + logs;
        if (LSE) LSE[r] = (T)lse;
        if (L) {
            double loss = (S != 0 ? S * logs : 0.0) + dot;
            if (z != 0) loss += z * lse * lse;
            L[r] = (T)loss;
        }
        if (g) {
            double coef = z != 0 ? S + 2 * z * lse : S;
            if (coef == 0) {                            /* no (coef * p) term at all */
                for (Py_ssize_t c = 0; c < C; c++) g[c] = 0;
            }
            T k = (T)(coef / s);
            if (coef == 0) k = 0;
            if (sparse) FN(grad_sparse)(g, x, cw, C, k, 0, epsc, sc, 0);
            else FN(grad_dense)(g, x, Y + r * C, cw, C, k, 0, ome, epsc, sc, 0);
            if (sparse) g[t] -= at * sc;
        }
    }
    return nbad;
}

/* Hessian-vector product: out = scale * [S (p v - p (p.v)) + 2 z (lse (p v - p (p.v)) + p (p.v))] */
static Py_ssize_t FN(hessp)(const fxe_params *p, Py_ssize_t r0, Py_ssize_t r1)
{
    const Py_ssize_t C = p->C;
    const T *X = (const T *)p->x, *Y = (const T *)p->y, *V = (const T *)p->v;
    const T *cw = p->has_cw ? (const T *)p->cw : NULL;
    const T *SC = (const T *)p->scale;
    T *O = (T *)p->grad;
    const int sparse = p->sparse, scale_full = p->scale_full;
    const T eps = (T)p->eps, ome = (T)(1.0 - p->eps), epsc = (T)(p->eps / (double)C);
    const double z = p->z;
    Py_ssize_t nbad = 0;
    for (Py_ssize_t r = r0; r < r1; r++) {
        const T *x = X + r * C, *v = V + r * C;
        T *o = O + r * C;
        T sc = SC[scale_full ? r : 0];
        double S;
        if (sparse) {
            Py_ssize_t t;
            if (!fxe_label(p, r, &t, &nbad)) { FN(zero_row)(o, C); continue; }
            T at = ome * (cw ? cw[t] : (T)1);
            S = eps != 0 ? (double)(epsc * (T)p->sum_cw + at) : (double)at;
        } else {
            S = FN(dense_S)(Y + r * C, cw, C, ome, epsc);
        }
        T m = FN(row_max)(x, C);
        double s = 0.0, ev = 0.0;
#pragma omp simd reduction(+:s, ev)
        for (Py_ssize_t c = 0; c < C; c++) {
            T e = FXE_EXP(x[c] - m);
            s += (double)e;
            ev += (double)(e * v[c]);
            o[c] = e;
        }
        double lse = (double)m + fxe_log(s);
        T inv = (T)(1.0 / s), pv = (T)(ev / s);
        T coef = (T)(z != 0 ? S + 2 * z * lse : S), zp = (T)(2 * z * (ev / s));
#pragma omp simd
        for (Py_ssize_t c = 0; c < C; c++) {
            T pc = o[c] * inv;
            T cen = pc * v[c] - pc * pv;
            o[c] = (coef * cen + zp * pc) * sc;
        }
    }
    return nbad;
}

/* d loss / d y for dense labels: (1 - eps) cw_c (lse - x_c) * scale */
static Py_ssize_t FN(label_grad)(const fxe_params *p, Py_ssize_t r0, Py_ssize_t r1)
{
    const Py_ssize_t C = p->C;
    const T *X = (const T *)p->x, *cw = p->has_cw ? (const T *)p->cw : NULL;
    const T *SC = (const T *)p->scale, *LSEI = p->has_lse_in ? (const T *)p->lse_in : NULL;
    T *O = (T *)p->grad;
    const T ome = (T)(1.0 - p->eps);
    for (Py_ssize_t r = r0; r < r1; r++) {
        const T *x = X + r * C;
        T *o = O + r * C;
        T sc = SC[p->scale_full ? r : 0];
        T m, logs;
        if (LSEI) { m = LSEI[r]; logs = 0; }
        else { logs = (T)fxe_log(FN(max_sum_exp)(x, C, &m)); }
        if (cw) {
#pragma omp simd
            for (Py_ssize_t c = 0; c < C; c++) o[c] = (((m - x[c]) + logs) * (ome * cw[c])) * sc;
        } else {
#pragma omp simd
            for (Py_ssize_t c = 0; c < C; c++) o[c] = (((m - x[c]) + logs) * ome) * sc;
        }
    }
    return 0;
}

/* logsumexp (mode 0, out (n,)), log_softmax (1), softmax (2) */
static Py_ssize_t FN(utility)(const fxe_params *p, Py_ssize_t r0, Py_ssize_t r1)
{
    const Py_ssize_t C = p->C;
    const T *X = (const T *)p->x;
    T *O = (T *)p->grad;
    const int mode = p->mode;
    for (Py_ssize_t r = r0; r < r1; r++) {
        const T *x = X + r * C;
        T m;
        if (mode == 0) {
            double s0 = FN(max_sum_exp)(x, C, &m);
            O[r] = (T)((double)m + fxe_log(s0));
        } else if (mode == 1) {
            T *o = O + r * C;
            T logs = (T)fxe_log(FN(max_sum_exp)(x, C, &m));
#pragma omp simd
            for (Py_ssize_t c = 0; c < C; c++) o[c] = (x[c] - m) - logs;
        } else {
            T *o = O + r * C;
            m = FN(row_max)(x, C);
            double s = FN(sum_exp)(x, C, m, o);
            T inv = (T)(1.0 / s);
#pragma omp simd
            for (Py_ssize_t c = 0; c < C; c++) o[c] = o[c] * inv;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ sigmoid kernels */

/* loss = a softplus(x) + b softplus(-x), a = 1 - y', b = pw y', y' = (1 - eps) y + eps/2;
 * grad = (a sigma(x) - b sigma(-x)) * scale. Both from e = exp(-|x|). */
static Py_ssize_t FN(sigmoid_xent)(const fxe_params *p, Py_ssize_t r0, Py_ssize_t r1)
{
    const Py_ssize_t C = p->C;
    const T *X = (const T *)p->x, *Y = (const T *)p->y;
    const T *pw = p->has_cw ? (const T *)p->cw : NULL, *SC = (const T *)p->scale;
    T *L = (T *)p->loss, *G = (T *)p->grad;
    const T ome = (T)(1.0 - p->eps), eh = (T)(p->eps / 2.0);
    const Py_ssize_t sr = p->scale_rows_full ? 1 : 0, scol = p->scale_cols_full ? 1 : 0;
    const Py_ssize_t sstride = scol ? C : 1;
    const int loss2d = p->loss_2d;
    for (Py_ssize_t r = r0; r < r1; r++) {
        const T *x = X + r * C, *y = Y + r * C;
        const T *scr = SC ? SC + r * sr * sstride : NULL;
        T *g = G ? G + r * C : NULL;
        T *l2 = (L && loss2d) ? L + r * C : NULL;
        double rowsum = 0.0;
        for (Py_ssize_t c = 0; c < C; c++) {
            T xc = x[c];
            T yy = ome * y[c] + eh;
            T a = 1 - yy, b = pw ? yy * pw[c] : yy;
            T ax = xc < 0 ? -xc : xc;
            ax = xc != xc ? xc : ax;
            T e = FXE_EXP(-ax);
            if (L) {
                T l = FXE_LOG1P(e);
                T spp = (xc > 0 ? xc : (T)0) + l, spn = (xc < 0 ? -xc : (T)0) + l;
                T v = (a != 0 ? a * spp : (T)0) + (b != 0 ? b * spn : (T)0);
                if (l2) l2[c] = v; else rowsum += (double)v;
            }
            if (g) {
                T rr = 1 / (1 + e);
                T sig = xc >= 0 ? rr : e * rr, sgn = xc >= 0 ? e * rr : rr;
                g[c] = (a * sig - b * sgn) * scr[scol * c];
            }
        }
        if (L && !loss2d) L[r] = (T)rowsum;
    }
    return 0;
}

/* d loss / d y: (1 - eps) (-x + (pw - 1) softplus(-x)) * scale */
static Py_ssize_t FN(sigmoid_label_grad)(const fxe_params *p, Py_ssize_t r0, Py_ssize_t r1)
{
    const Py_ssize_t C = p->C;
    const T *X = (const T *)p->x, *pw = p->has_cw ? (const T *)p->cw : NULL;
    const T *SC = (const T *)p->scale;
    T *O = (T *)p->grad;
    const T ome = (T)(1.0 - p->eps);
    const Py_ssize_t sr = p->scale_rows_full ? 1 : 0, scol = p->scale_cols_full ? 1 : 0;
    const Py_ssize_t sstride = scol ? C : 1;
    for (Py_ssize_t r = r0; r < r1; r++) {
        const T *x = X + r * C, *scr = SC + r * sr * sstride;
        T *o = O + r * C;
        for (Py_ssize_t c = 0; c < C; c++) {
            T xc = x[c], gv = -xc;
            if (pw) {
                T qm1 = pw[c] - 1;
                if (qm1 != 0) {
                    T ax = xc < 0 ? -xc : xc;
                    ax = xc != xc ? xc : ax;
                    T spn = (xc < 0 ? -xc : (T)0) + FXE_LOG1P(FXE_EXP(-ax));
                    gv = gv + qm1 * spn;
                }
            }
            o[c] = (ome * gv) * scr[scol * c];
        }
    }
    return 0;
}
