/* fxe_kernels.h -- the C side of the fastxent Cython backend.
 *
 * The row kernels (fxe_rows_impl.h) are compiled once per dtype for the baseline x86-64
 * instruction set and, on x86 with GCC/Clang, once more for AVX2+FMA (`#pragma GCC target`
 * around a second inclusion). fxe_select() picks the table once, at import, from
 * __builtin_cpu_supports; FASTXENT_NATIVE=1 builds (-march=native) have one "native" table.
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
#define T float
#define FXE_EXP fxe_expf_k
#define FXE_LOGV fxe_logf
#define FXE_LOG1P log1pf
#define FN(name) name##_f32_avx512
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
    if (k) {
#pragma omp simd
        for (Py_ssize_t i = 0; i < n; i++) o[i] = fxe_expf_k(x[i]);
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
