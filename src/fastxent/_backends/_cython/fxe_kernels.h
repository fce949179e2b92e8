/* fxe_kernels.h -- the C side of the fastxent Cython backend.
 *
 * The row kernels (fxe_rows_impl.h) are compiled once per dtype for the baseline x86-64
 * instruction set and, on x86 with GCC/Clang, once more for AVX2+FMA (`#pragma GCC target`
 * around a second inclusion). fxe_select() picks the table once, at import, from
 * __builtin_cpu_supports; FASTXENT_NATIVE=1 builds (-march=native) have one "native" table.
 * The AVX-512 float32 variant also gets three hand-written pieces (intrinsics, below):
 * fxe_expf16 (the kernels' exp on 16 lanes), the sum-of-exponentials loop, and the
 * integer-label path for C <= 16 (vectorised across rows through gathers). The rows impl
 * picks them through the FXE_SUMEXPF_VEC / FXE_SMALLF_VEC hooks, defined only there.
 */
#ifndef FXE_KERNELS_H
#define FXE_KERNELS_H

#include <Python.h>
#include <math.h>
#include "fxe_math.h"

/* Bounds/consistency asserts inside the C kernels (FASTXENT_BOUNDSCHECK=1 builds). */
#ifdef FXE_DEBUG
#include <assert.h>
#define FXE_DEBUG_CHECKS 1
#else
#define FXE_DEBUG_CHECKS 0
#endif

#define FXE_SMALL_C 16      /* integer labels with C <= 16 take the across-rows path */
#define FXE_SB 128          /* rows per block in that path (also the row alignment of chunks) */

typedef struct {
    const void *x, *y, *cw, *scale, *v, *lse_in;
    const Py_ssize_t *t;
    void *loss, *grad, *lse_out;           /* grad is also `out` of the utilities/hessp */
    Py_ssize_t n, C;
    int sparse, has_cw, has_lse_in, scale_full, scale_rows_full, scale_cols_full;
    int loss_2d, mode, has_ignore;
    Py_ssize_t ignore_index;
    double eps, z, sum_cw;
} fxe_params;

typedef Py_ssize_t (*fxe_kernel)(const fxe_params *, Py_ssize_t, Py_ssize_t);

enum { FXE_K_SOFTMAX = 0, FXE_K_HESSP, FXE_K_LABEL_GRAD, FXE_K_UTILITY,
       FXE_K_SIGMOID, FXE_K_SIGMOID_LABEL_GRAD, FXE_N_KERNELS };

#define FXE_TABLE_ENTRIES(SFX) { FXE_CAT(softmax_xent, SFX), FXE_CAT(hessp, SFX), \
    FXE_CAT(label_grad, SFX), FXE_CAT(utility, SFX), FXE_CAT(sigmoid_xent, SFX), \
    FXE_CAT(sigmoid_label_grad, SFX) }
#define FXE_CAT_(a, b) a##_##b
#define FXE_CAT(a, b) FXE_CAT_(a, b)

/* the label of row r: returns 1 to use it (0 <= t < C and not ignored), counts bad ones */
FXE_INLINE int fxe_label(const fxe_params *p, Py_ssize_t r, Py_ssize_t *tr, Py_ssize_t *nbad)
{
    Py_ssize_t t = p->t[r];
    int ign = p->has_ignore && t == p->ignore_index;
    int valid = t >= 0 && t < p->C;
    *nbad += (!valid && !ign);
    *tr = t;
    return valid && !ign;
}

/* ------------------------------------------------------------ instantiations */

#define T float
#define FXE_EXP fxe_expf_k
#define FXE_LOGV fxe_logf
#define FXE_LOG1P log1pf
#define FN(name) name##_f32_base
#include "fxe_rows_impl.h"
#undef FN
#undef T
#undef FXE_EXP
#undef FXE_LOGV
#undef FXE_LOG1P

#define T double
#define FXE_EXP fxe_exp_k
#define FXE_LOGV fxe_log
#define FXE_LOG1P log1p
#define FN(name) name##_f64_base
#include "fxe_rows_impl.h"
#undef FN
#undef T
#undef FXE_EXP
#undef FXE_LOGV
#undef FXE_LOG1P

#if !defined(FXE_NATIVE) && defined(__GNUC__) && !defined(__clang__) && \
    (defined(__x86_64__) || defined(__i386__))
#define FXE_HAVE_AVX2_VARIANT 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define T float
#define FXE_EXP fxe_expf_k
#define FXE_LOGV fxe_logf
#define FXE_LOG1P log1pf
#define FN(name) name##_f32_avx2
#include "fxe_rows_impl.h"
#undef FN
#undef T
#undef FXE_EXP
#undef FXE_LOGV
#undef FXE_LOG1P
#define T double
#define FXE_EXP fxe_exp_k
#define FXE_LOGV fxe_log
#define FXE_LOG1P log1p
#define FN(name) name##_f64_avx2
#include "fxe_rows_impl.h"
#undef FN
#undef T
#undef FXE_EXP
#undef FXE_LOGV
#undef FXE_LOG1P
/* exp entry points for the accuracy tests, in the AVX2 variant */
static void fxe_expf_array_avx2(const float *x, float *o, Py_ssize_t n, int k)
{
    if (k) {
#pragma omp simd
        for (Py_ssize_t i = 0; i < n; i++) o[i] = fxe_expf_k(x[i]);
    } else {
#pragma omp simd
        for (Py_ssize_t i = 0; i < n; i++) o[i] = fxe_expf(x[i]);
    }
}
static void fxe_exp_array_avx2(const double *x, double *o, Py_ssize_t n, int k)
{
    if (k) {
#pragma omp simd
        for (Py_ssize_t i = 0; i < n; i++) o[i] = fxe_exp_k(x[i]);
    } else {
#pragma omp simd
        for (Py_ssize_t i = 0; i < n; i++) o[i] = fxe_exp(x[i]);
    }
}
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,prefer-vector-width=512")
#include <immintrin.h>
/* fxe_expf_k on 16 lanes, written with intrinsics: gcc if-converts the NaN-preserving
 * clamps of the scalar code into ~6 compare/blend instructions, where vminps/vmaxps with
 * the bound as first operand keep a NaN in one instruction each (MINPS returns its second
 * operand when either is NaN), and 2^n applied with vscalefps (exact for normal results,
 * one correct rounding for subnormal ones instead of the scalar version's flush to +0;
 * -inf and anything below -110 give exactly +0). Same operations and contractions as the
 * compiled scalar version otherwise: the same bits wherever the result is normal
 * (tests/test_cython_backend.py checks it through fxe_expf_array). */
static inline __m512 fxe_expf16(__m512 x)
{
    const __m512 magic = _mm512_set1_ps(12582912.0f);
    x = _mm512_min_ps(_mm512_set1_ps(88.3f), x);
    x = _mm512_max_ps(_mm512_set1_ps(-110.0f), x);  /* n = -159: vscalefps gives +0 */
    __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), magic);
    __m512 n = _mm512_sub_ps(t, magic);
    __m512 rh = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), rh);
    __m512 r2 = _mm512_mul_ps(r, r);
    __m512 q = _mm512_fmadd_ps(_mm512_set1_ps(1.3926926614021907e-3f), r,
                               _mm512_set1_ps(8.363773874405574e-3f));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(4.166655011030512e-2f));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.6666573381900845e-1f));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(0.5f));
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 hi = _mm512_add_ps(one, rh);
    __m512 lo = _mm512_add_ps(_mm512_sub_ps(one, hi), rh);
    __m512 tail = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), _mm512_mul_ps(q, r2));
    __m512 pr = _mm512_add_ps(hi, _mm512_add_ps(lo, tail));
    return _mm512_scalef_ps(pr, n);                  /* pr 2^n, one rounding */
}

/* sum_exp (fxe_rows_impl.h) for float32: blocks of FXE_SUM_BLOCK summed in two float
 * vector accumulators, block sums in double (the same error bound as the generic one) */
static inline double fxe_sum_expf_avx512(const float *x, Py_ssize_t C, float m, float *out)
{
    const __m512 vm = _mm512_set1_ps(m);
    double s = 0.0;
    Py_ssize_t c = 0;
    for (; c + 128 <= C; c += 128) {
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        for (int k = 0; k < 128; k += 32) {
            __m512 e0 = fxe_expf16(_mm512_sub_ps(_mm512_loadu_ps(x + c + k), vm));
            __m512 e1 = fxe_expf16(_mm512_sub_ps(_mm512_loadu_ps(x + c + k + 16), vm));
            a0 = _mm512_add_ps(a0, e0);
            a1 = _mm512_add_ps(a1, e1);
            if (out) {
                _mm512_storeu_ps(out + c + k, e0);
                _mm512_storeu_ps(out + c + k + 16, e1);
            }
        }
        s += (double)_mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    }
    if (c < C) {
        __m512 a0 = _mm512_setzero_ps();
        for (; c < C; c += 16) {
            const Py_ssize_t rem = C - c;
            const __mmask16 k = rem >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << rem) - 1u);
            __m512 e = fxe_expf16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + c), vm));
            a0 = _mm512_mask_add_ps(a0, k, a0, e);
            if (out) _mm512_mask_storeu_ps(out + c, k, e);
        }
        s += (double)_mm512_reduce_add_ps(a0);
    }
    return s;
}

/* Integer labels, C <= FXE_SMALL_C, float32, AVX-512: the generic sparse_small's stages on
 * a column-major copy of the block. Each group of 16 rows is transposed with C gathers
 * (from L1) into xc[c][i], so that max, exp (fxe_expf16), sum, log, loss and gradient are
 * all plain 16-lane operations across rows; the gradient is transposed back with gathers
 * from the column buffer and contiguous stores. Same per-row operations (same order) as
 * the generic path; lanes are independent, so no result depends on the grouping. */
#define FXE_SBV FXE_SB
static inline __attribute__((always_inline)) Py_ssize_t
fxe_sparse_small_f32v(const fxe_params *p, Py_ssize_t r0, Py_ssize_t r1, const Py_ssize_t C)
{
    const float *X = (const float *)p->x;
    const float *cw = p->has_cw ? (const float *)p->cw : NULL;
    const float *SC = (const float *)p->scale;
    float *L = (float *)p->loss, *G = (float *)p->grad, *LSE = (float *)p->lse_out;
    const float eps = (float)p->eps, ome = (float)(1.0 - p->eps);
    const float epsc = (float)(p->eps / (double)p->C);
    const float zz = (float)p->z, sumw = (float)p->sum_cw;
    const int scale_full = p->scale_full, has_ignore = p->has_ignore;
    const Py_ssize_t ignore_index = p->ignore_index;
    const Py_ssize_t *TL = p->t;
    Py_ssize_t nbad = 0;
    float mx[FXE_SBV] __attribute__((aligned(64))), sv[FXE_SBV] __attribute__((aligned(64)));
    float lg[FXE_SBV] __attribute__((aligned(64))), xt[FXE_SBV + 16], wt[FXE_SBV + 16];
    float tf[FXE_SBV] __attribute__((aligned(64))), scv[FXE_SBV + 16];
    float kk[FXE_SBV] __attribute__((aligned(64))), aa[FXE_SBV] __attribute__((aligned(64)));
    float bb[FXE_SBV] __attribute__((aligned(64))), lo[FXE_SBV], dt[FXE_SBV];
    float xc[FXE_SMALL_C][FXE_SBV] __attribute__((aligned(64)));
    float ew[FXE_SMALL_C][FXE_SBV] __attribute__((aligned(64)));
    float wv[FXE_SMALL_C];
    int i0[16] __attribute__((aligned(64))), c0[16] __attribute__((aligned(64)));
    for (Py_ssize_t c = 0; c < C; c++) wv[c] = cw ? cw[c] : 1.0f;
    for (int l = 0; l < 16; l++) { i0[l] = (int)(l / C); c0[l] = (int)(l % C); }
    const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i rowoff = _mm512_mullo_epi32(iota, _mm512_set1_epi32((int)C));
    const __m512 ninf = _mm512_set1_ps(-INFINITY), zero = _mm512_setzero_ps();

    for (Py_ssize_t b0 = r0; b0 < r1; b0 += FXE_SBV) {
        const Py_ssize_t nb = (r1 - b0) < FXE_SBV ? (r1 - b0) : FXE_SBV;
        const float *xb = X + b0 * C;
        /* 1-3: labels, transpose in, max, exp, sums */
        for (Py_ssize_t g = 0; g < nb; g += 16) {
            const Py_ssize_t left = nb - g;
            const __mmask16 km = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
            const float *xg = xb + g * C;
            /* labels: keep = 0 <= t < C and not ignored; bad = neither valid nor ignored */
            const __mmask8 kl = (__mmask8)(km & 0xff), kh = (__mmask8)(km >> 8);
            const __m512i tl = _mm512_maskz_loadu_epi64(kl, TL + b0 + g);
            const __m512i th = _mm512_maskz_loadu_epi64(kh, TL + b0 + g + 8);
            const __m512i vc64 = _mm512_set1_epi64((long long)C);
            __mmask16 valid = (__mmask16)(_mm512_cmplt_epu64_mask(tl, vc64) |
                                          ((unsigned)_mm512_cmplt_epu64_mask(th, vc64) << 8));
            __mmask16 ign = 0;
            if (has_ignore) {
                const __m512i vi = _mm512_set1_epi64((long long)ignore_index);
                ign = (__mmask16)(_mm512_cmpeq_epi64_mask(tl, vi) |
                                  ((unsigned)_mm512_cmpeq_epi64_mask(th, vi) << 8));
            }
            const __mmask16 keep = (__mmask16)(valid & ~ign & km);
            nbad += __builtin_popcount((unsigned)(~valid & ~ign & km) & 0xffffu);
            __m512 tfv = _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtepi64_ps(tl)),
                                            _mm512_cvtepi64_ps(th), 1);
            tfv = _mm512_mask_mov_ps(_mm512_set1_ps(-1.0f), keep, tfv);
            _mm512_store_ps(&tf[g], tfv);
            __m512 xtv = zero, wtv = zero;
            __m512 col[FXE_SMALL_C];
            for (Py_ssize_t c = 0; c < C; c++) {
                col[c] = _mm512_mask_i32gather_ps(zero, km,
                    _mm512_add_epi32(rowoff, _mm512_set1_epi32((int)c)), xg, 4);
                _mm512_store_ps(&xc[c][g], col[c]);
                const __mmask16 isl = _mm512_cmp_ps_mask(tfv, _mm512_set1_ps((float)c), _CMP_EQ_OQ);
                xtv = _mm512_mask_mov_ps(xtv, isl, col[c]);
                wtv = _mm512_mask_mov_ps(wtv, isl, _mm512_set1_ps(wv[c]));
            }
            _mm512_storeu_ps(&xt[g], xtv);
            _mm512_storeu_ps(&wt[g], wtv);
            if (SC && scale_full)
                _mm512_storeu_ps(&scv[g], _mm512_maskz_loadu_ps(km, SC + b0 + g));
            else
                _mm512_storeu_ps(&scv[g], _mm512_set1_ps(SC ? SC[0] : 1.0f));
            __m512 m = col[0];
            for (Py_ssize_t c = 1; c < C; c++) m = _mm512_max_ps(col[c], m);
            m = _mm512_mask_mov_ps(m, _mm512_cmp_ps_mask(m, ninf, _CMP_EQ_OQ), zero);
            _mm512_store_ps(&mx[g], m);
            __m512 e = fxe_expf16(_mm512_sub_ps(col[0], m));
            _mm512_store_ps(&ew[0][g], e);
            __m512 sum = e;
            for (Py_ssize_t c = 1; c < C; c++) {
                e = fxe_expf16(_mm512_sub_ps(col[c], m));
                _mm512_store_ps(&ew[c][g], e);
                sum = _mm512_add_ps(sum, e);
            }
            _mm512_store_ps(&sv[g], sum);
        }
        /* 4. logs */
#pragma omp simd
        for (Py_ssize_t i = 0; i < nb; i++) lg[i] = fxe_logf(sv[i]);
        if (LSE)
            for (Py_ssize_t i = 0; i < nb; i++) LSE[b0 + i] = mx[i] + lg[i];
        /* 6. losses and gradient coefficients, branch-free */
        if (eps != 0) {
            for (Py_ssize_t i = 0; i < nb; i++) dt[i] = 0;
            for (Py_ssize_t c = 0; c < C; c++) {
                const float w = wv[c];
                if (w != 0)
#pragma omp simd
                    for (Py_ssize_t i = 0; i < nb; i++) dt[i] += w * (mx[i] - xc[c][i]);
            }
            for (Py_ssize_t i = 0; i < nb; i++) dt[i] = epsc * dt[i];
        } else {
            for (Py_ssize_t i = 0; i < nb; i++) dt[i] = 0;
        }
#pragma omp simd
        for (Py_ssize_t i = 0; i < nb; i++) {
            float keep = tf[i] >= 0 ? 1.0f : 0.0f;
            float m = mx[i], logs = lg[i], lse = m + logs;
            float at = ome * wt[i];
            float S = keep != 0 ? epsc * sumw + at : 0.0f;
            float coef = S + 2 * zz * lse;
            coef = zz != 0 ? coef : S;
            float loss = S != 0 ? S * logs : 0.0f;
            loss += at != 0 ? at * (m - xt[i]) : 0.0f;
            loss += dt[i];
            loss += zz != 0 ? zz * lse * lse : 0.0f;
            lo[i] = keep != 0 ? loss : 0.0f;
            float sc = scv[i];
            kk[i] = (keep != 0 && coef != 0) ? coef / sv[i] * sc : 0.0f;
            aa[i] = at * sc;
            bb[i] = keep != 0 ? epsc * sc : 0.0f;
        }
        if (L)
            for (Py_ssize_t i = 0; i < nb; i++) L[b0 + i] = lo[i];
        /* 7. gradient: columns into ew, then transposed out */
        if (G) {
            for (Py_ssize_t g = 0; g < nb; g += 16) {
                const __m512 k = _mm512_load_ps(&kk[g]), bv = _mm512_load_ps(&bb[g]);
                const __m512 av = _mm512_load_ps(&aa[g]), tv = _mm512_load_ps(&tf[g]);
                const __mmask16 knz = _mm512_cmp_ps_mask(k, zero, _CMP_NEQ_UQ);
                for (Py_ssize_t c = 0; c < C; c++) {
                    /* rows without a (coef * p) term: no 0 * NaN from exp */
                    __m512 e = _mm512_maskz_mov_ps(knz, _mm512_load_ps(&ew[c][g]));
                    __mmask16 isl = _mm512_cmp_ps_mask(tv, _mm512_set1_ps((float)c), _CMP_EQ_OQ);
                    __m512 v = _mm512_sub_ps(_mm512_mul_ps(k, e),
                                             _mm512_mul_ps(bv, _mm512_set1_ps(wv[c])));
                    v = _mm512_sub_ps(v, _mm512_maskz_mov_ps(isl, av));
                    _mm512_store_ps(&ew[c][g], v);
                }
            }
            float *gb = G + b0 * C;
            const Py_ssize_t ne = nb * C;
            __m512i ir = _mm512_load_si512(i0), ic = _mm512_load_si512(c0);
            const __m512i dq = _mm512_set1_epi32((int)(16 / C)), dr = _mm512_set1_epi32((int)(16 % C));
            const __m512i vC = _mm512_set1_epi32((int)C), one = _mm512_set1_epi32(1);
            const __m512i vSB = _mm512_set1_epi32(FXE_SBV);
            for (Py_ssize_t e0 = 0; e0 < ne; e0 += 16) {
                const Py_ssize_t left = ne - e0;
                const __mmask16 km = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
                __m512i idx = _mm512_add_epi32(_mm512_mullo_epi32(ic, vSB), ir);
                __m512 v = _mm512_mask_i32gather_ps(zero, km, idx, &ew[0][0], 4);
                _mm512_mask_storeu_ps(gb + e0, km, v);
                ic = _mm512_add_epi32(ic, dr);
                ir = _mm512_add_epi32(ir, dq);
                __mmask16 carry = _mm512_cmpge_epi32_mask(ic, vC);
                ic = _mm512_mask_sub_epi32(ic, carry, ic, vC);
                ir = _mm512_mask_add_epi32(ir, carry, ir, one);
            }
        }
    }
    return nbad;
}
#define FXE_SMALLF_VEC(p, r0, r1, C) fxe_sparse_small_f32v(p, r0, r1, C)
#define FXE_SUMEXPF_VEC fxe_sum_expf_avx512
#define T float
#define FXE_EXP fxe_expf_k
#define FXE_LOGV fxe_logf
#define FXE_LOG1P log1pf
#define FN(name) name##_f32_avx512
#include "fxe_rows_impl.h"
#undef FXE_SUMEXPF_VEC
#undef FXE_SMALLF_VEC
#undef FN
#undef T
#undef FXE_EXP
#undef FXE_LOGV
#undef FXE_LOG1P
#define T double
#define FXE_EXP fxe_exp_k
#define FXE_LOGV fxe_log
#define FXE_LOG1P log1p
#define FN(name) name##_f64_avx512
#include "fxe_rows_impl.h"
#undef FN
#undef T
#undef FXE_EXP
#undef FXE_LOGV
#undef FXE_LOG1P
/* exp entry points for the accuracy tests, in the AVX2 variant */
static void fxe_expf_array_avx512(const float *x, float *o, Py_ssize_t n, int k)
{
    if (k) {                    /* the intrinsics version the AVX-512 kernels use */
        Py_ssize_t i = 0;
        for (; i + 16 <= n; i += 16) _mm512_storeu_ps(o + i, fxe_expf16(_mm512_loadu_ps(x + i)));
        for (; i < n; i++) o[i] = fxe_expf_k(x[i]);
    } else {
#pragma omp simd
        for (Py_ssize_t i = 0; i < n; i++) o[i] = fxe_expf(x[i]);
    }
}
static void fxe_exp_array_avx512(const double *x, double *o, Py_ssize_t n, int k)
{
    if (k) {
#pragma omp simd
        for (Py_ssize_t i = 0; i < n; i++) o[i] = fxe_exp_k(x[i]);
    } else {
#pragma omp simd
        for (Py_ssize_t i = 0; i < n; i++) o[i] = fxe_exp(x[i]);
    }
}
#pragma GCC pop_options
#else
#define FXE_HAVE_AVX2_VARIANT 0
#endif

static void fxe_expf_array_base(const float *x, float *o, Py_ssize_t n, int k)
{
    if (k) {
#pragma omp simd
        for (Py_ssize_t i = 0; i < n; i++) o[i] = fxe_expf_k(x[i]);
    } else {
#pragma omp simd
        for (Py_ssize_t i = 0; i < n; i++) o[i] = fxe_expf(x[i]);
    }
}
static void fxe_exp_array_base(const double *x, double *o, Py_ssize_t n, int k)
{
    if (k) {
#pragma omp simd
        for (Py_ssize_t i = 0; i < n; i++) o[i] = fxe_exp_k(x[i]);
    } else {
#pragma omp simd
        for (Py_ssize_t i = 0; i < n; i++) o[i] = fxe_exp(x[i]);
    }
}

/* ------------------------------------------------------------ dispatch */
static fxe_kernel fxe_table_base[2][FXE_N_KERNELS] = {
    FXE_TABLE_ENTRIES(f32_base), FXE_TABLE_ENTRIES(f64_base)};
#if FXE_HAVE_AVX2_VARIANT
static fxe_kernel fxe_table_avx2[2][FXE_N_KERNELS] = {
    FXE_TABLE_ENTRIES(f32_avx2), FXE_TABLE_ENTRIES(f64_avx2)};
#endif

#if FXE_HAVE_AVX2_VARIANT
static fxe_kernel fxe_table_avx512[2][FXE_N_KERNELS] = {
    FXE_TABLE_ENTRIES(f32_avx512), FXE_TABLE_ENTRIES(f64_avx512)};
#endif

static fxe_kernel (*fxe_active)[FXE_N_KERNELS] = fxe_table_base;
static int fxe_active_avx2 = 0;     /* 0 baseline, 1 AVX2+FMA, 2 AVX-512 */

static int fxe_cpu_has_avx2_fma(void)
{
#if FXE_HAVE_AVX2_VARIANT
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

static int fxe_cpu_has_avx512(void)
{
#if FXE_HAVE_AVX2_VARIANT
    __builtin_cpu_init();
    return fxe_cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw");
#else
    return 0;
#endif
}

/* want: 2 = best the CPU supports, 1 = at most AVX2+FMA, 0 = baseline. Returns the name. */
static const char *fxe_select(int want)
{
#if FXE_HAVE_AVX2_VARIANT
    if (want >= 2 && fxe_cpu_has_avx512()) {
        fxe_active = fxe_table_avx512;
        fxe_active_avx2 = 2;
        return "avx512";
    }
    if (want >= 1 && fxe_cpu_has_avx2_fma()) {
        fxe_active = fxe_table_avx2;
        fxe_active_avx2 = 1;
        return "avx2-fma";
    }
#endif
    fxe_active = fxe_table_base;
    fxe_active_avx2 = 0;
#ifdef FXE_NATIVE
    return "native";
#else
    return "baseline";
#endif
}

static inline fxe_kernel fxe_get(int is_f64, int k) { return fxe_active[is_f64][k]; }

/* test hooks: k = 0 the full-range exp, k = 1 the kernels' exp */
static void fxe_expf_array(const float *x, float *o, Py_ssize_t n, int k)
{
#if FXE_HAVE_AVX2_VARIANT
    if (fxe_active_avx2 == 2) { fxe_expf_array_avx512(x, o, n, k); return; }
    if (fxe_active_avx2 == 1) { fxe_expf_array_avx2(x, o, n, k); return; }
#endif
    fxe_expf_array_base(x, o, n, k);
}
static void fxe_exp_array(const double *x, double *o, Py_ssize_t n, int k)
{
#if FXE_HAVE_AVX2_VARIANT
    if (fxe_active_avx2 == 2) { fxe_exp_array_avx512(x, o, n, k); return; }
    if (fxe_active_avx2 == 1) { fxe_exp_array_avx2(x, o, n, k); return; }
#endif
    fxe_exp_array_base(x, o, n, k);
}

#if defined(_OPENMP)
#include <omp.h>
#define FXE_OPENMP 1
/* The OpenMP runtime's current limit: OMP_NUM_THREADS, omp_set_num_threads, and so
   threadpoolctl's threadpool_limits (which calls it), as for scikit-learn's loops. */
static inline int fxe_omp_max_threads(void) { return omp_get_max_threads(); }
#else
#define FXE_OPENMP 0
static inline int fxe_omp_max_threads(void) { return 1; }
#endif

#ifndef FXE_BUILD_FLAGS
#define FXE_BUILD_FLAGS "unknown"
#endif
#ifndef FXE_BUILD_DIRECTIVES
#define FXE_BUILD_DIRECTIVES "unknown"
#endif

#endif /* FXE_KERNELS_H */
