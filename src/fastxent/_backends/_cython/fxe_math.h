/* fxe_math.h -- the kernels' exp, expm1, log and log1p, branch-free so that gcc vectorises
 * them inside `#pragma omp simd` loops (no libmvec, no -ffast-math: inf and NaN keep their
 * IEEE meaning). The algorithm and its constants are those of
 * fastxent/_backends/_mathdef.py (fxe_consts.h is generated from it), which the Numba
 * backend evaluates too: one exp and one log for both compiled backends. Accuracy and
 * special values are documented there and measured by tests/test_math.py. */
#ifndef FXE_MATH_H
#define FXE_MATH_H
#include <stdint.h>
#include <string.h>
#include <math.h>
#include "fxe_consts.h"

#if defined(__GNUC__) || defined(__clang__)
#define FXE_INLINE static inline __attribute__((always_inline))
#else
#define FXE_INLINE static inline
#endif

FXE_INLINE float fxe_u2f(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }
FXE_INLINE uint32_t fxe_f2u(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }
FXE_INLINE double fxe_u2d(uint64_t u) { double d; memcpy(&d, &u, sizeof d); return d; }
FXE_INLINE uint64_t fxe_d2u(double d) { uint64_t u; memcpy(&u, &d, sizeof u); return u; }

/* The result s (1 + p), s = 2^n, with one rounding: p s is exact (a power of two times p,
 * for normal results), so p s + s rounds once with or without an FMA (-ffp-contract fuses
 * it where the instruction set has one; written as (p + 1) s it would cost an extra add,
 * since the macro is expanded outside the tiers' target pragmas). */
#define FXE_SCALE1P(p, s) ((p) * (s) + (s))

/* full-range exp: overflow to +inf, subnormal results below the normal range */
FXE_INLINE float fxe_expf(float x)
{
    const float magic = FXE_EXPF_MAGIC;
    float t = x * FXE_EXPF_LOG2E + magic;
    float n = t - magic;                                /* round(x / ln2) */
    float s = fxe_u2f((fxe_f2u(t) + (127u - fxe_f2u(magic))) << 23);   /* 2^n */
    float rh = x - n * FXE_EXPF_LN2_HI;                 /* exact */
    float rl = n * -FXE_EXPF_LN2_LO;
    float r = rh + rl;
    float q = FXE_EXPF_Q0;
    q = q * r + FXE_EXPF_Q1;
    q = q * r + FXE_EXPF_Q2;
    q = q * r + FXE_EXPF_Q3;
    q = q * r + FXE_EXPF_Q4;
    float p = rh + (q * (r * r) + rl);                  /* e^r - 1, r never rounded */
    float res = FXE_SCALE1P(p, s);
    res = x > 88.72283935546875f ? INFINITY : res;
    return x < -87.33654475f ? 0.0f : res;                /* -inf -> +0; NaN stays NaN */
}

FXE_INLINE double fxe_exp(double x)
{
    const double magic = FXE_EXP_MAGIC;
    double t = x * FXE_EXP_LOG2E + magic;
    double n = t - magic;
    double s = fxe_u2d((fxe_d2u(t) + (1023ull - fxe_d2u(magic))) << 52);
    double rh = x - n * FXE_EXP_LN2_HI;
    double rl = n * -FXE_EXP_LN2_LO;
    double r = rh + rl;
    double q = FXE_EXP_Q0;
    q = q * r + FXE_EXP_Q1;
    q = q * r + FXE_EXP_Q2;
    q = q * r + FXE_EXP_Q3;
    q = q * r + FXE_EXP_Q4;
    q = q * r + FXE_EXP_Q5;
    q = q * r + FXE_EXP_Q6;
    q = q * r + FXE_EXP_Q7;
    q = q * r + FXE_EXP_Q8;
    q = q * r + FXE_EXP_Q9;
    double p = rh + (q * (r * r) + rl);
    double res = FXE_SCALE1P(p, s);
    res = x > 709.782712893384 ? INFINITY : res;
    return x < -708.3964185322641 ? 0.0 : res;
}

/* exp for the kernels' arguments (x - max <= 0, x - lse, -|x|): x clamped below at a
 * value whose 2^n is exactly +0 (n = -127 / -1023), so everything under it, -inf
 * included, gives +0 with no select (vmaxps(lo, x) keeps a NaN); results below the normal
 * range are flushed or subnormal (absolute error < FLT_MIN / DBL_MIN). No overflow test:
 * the same value as fxe_expf for x <= 88. q by Estrin's scheme (a shorter dependency
 * chain than Horner, the same accuracy: <= 0.94 ulp measured over every x <= 0). */
FXE_INLINE float fxe_expf_neg(float x)
{
    const float magic = FXE_EXPF_MAGIC;
    x = FXE_EXPF_FLUSH > x ? FXE_EXPF_FLUSH : x;
    float t = x * FXE_EXPF_LOG2E + magic;
    float n = t - magic;
    float s = fxe_u2f((fxe_f2u(t) + (127u - fxe_f2u(magic))) << 23);
    float rh = x - n * FXE_EXPF_LN2_HI;
    float rl = n * -FXE_EXPF_LN2_LO;
    float r = rh + rl, r2 = r * r;
    float q = ((FXE_EXPF_Q0 * r + FXE_EXPF_Q1) * r2 + (FXE_EXPF_Q2 * r + FXE_EXPF_Q3)) * r
              + FXE_EXPF_Q4;
    float p = rh + (q * r2 + rl);
    return FXE_SCALE1P(p, s);
}

FXE_INLINE double fxe_exp_neg(double x)
{
    const double magic = FXE_EXP_MAGIC;
    x = FXE_EXP_FLUSH > x ? FXE_EXP_FLUSH : x;
    double t = x * FXE_EXP_LOG2E + magic;
    double n = t - magic;
    double s = fxe_u2d((fxe_d2u(t) + (1023ull - fxe_d2u(magic))) << 52);
    double rh = x - n * FXE_EXP_LN2_HI;
    double rl = n * -FXE_EXP_LN2_LO;
    double r = rh + rl, r2 = r * r, r4 = r2 * r2;
    double q = ((FXE_EXP_Q0 * r + FXE_EXP_Q1) * r2 + (FXE_EXP_Q2 * r + FXE_EXP_Q3)) * r4
               + ((FXE_EXP_Q4 * r + FXE_EXP_Q5) * r2 + (FXE_EXP_Q6 * r + FXE_EXP_Q7));
    q = (q * r + FXE_EXP_Q8) * r + FXE_EXP_Q9;
    double p = rh + (q * r2 + rl);
    return FXE_SCALE1P(p, s);
}

/* expm1 for x <= 0 from the same pieces: e^x - 1 = s p + (s - 1), s = 2^n (s - 1 exact);
 * for |x| < ln2 / 2 (n = 0) this is p itself, accurate relative to x */
FXE_INLINE float fxe_expm1f_neg(float x)
{
    const float magic = FXE_EXPF_MAGIC;
    x = FXE_EXPF_FLUSH > x ? FXE_EXPF_FLUSH : x;
    float t = x * FXE_EXPF_LOG2E + magic;
    float n = t - magic;
    float s = fxe_u2f((fxe_f2u(t) + (127u - fxe_f2u(magic))) << 23);
    float rh = x - n * FXE_EXPF_LN2_HI;
    float rl = n * -FXE_EXPF_LN2_LO;
    float r = rh + rl, r2 = r * r;
    float q = ((FXE_EXPF_Q0 * r + FXE_EXPF_Q1) * r2 + (FXE_EXPF_Q2 * r + FXE_EXPF_Q3)) * r
              + FXE_EXPF_Q4;
    float p = rh + (q * r2 + rl);
    return s * p + (s - 1.0f);
}

FXE_INLINE double fxe_expm1_neg(double x)
{
    const double magic = FXE_EXP_MAGIC;
    x = FXE_EXP_FLUSH > x ? FXE_EXP_FLUSH : x;
    double t = x * FXE_EXP_LOG2E + magic;
    double n = t - magic;
    double s = fxe_u2d((fxe_d2u(t) + (1023ull - fxe_d2u(magic))) << 52);
    double rh = x - n * FXE_EXP_LN2_HI;
    double rl = n * -FXE_EXP_LN2_LO;
    double r = rh + rl, r2 = r * r, r4 = r2 * r2;
    double q = ((FXE_EXP_Q0 * r + FXE_EXP_Q1) * r2 + (FXE_EXP_Q2 * r + FXE_EXP_Q3)) * r4
               + ((FXE_EXP_Q4 * r + FXE_EXP_Q5) * r2 + (FXE_EXP_Q6 * r + FXE_EXP_Q7));
    q = (q * r + FXE_EXP_Q8) * r + FXE_EXP_Q9;
    double p = rh + (q * r2 + rl);
    return s * p + (s - 1.0);
}

/* log(2^k (1 + x)) = (x + y) + k LN2_HI for x in [sqrt(1/2) - 1, sqrt(2) - 1], float32
 * (Cephes' logf polynomial): y */
FXE_INLINE float fxe_logf_tail(float x, float k)
{
    float z = x * x;
    float y = FXE_LOGF_P0;
    y = y * x + FXE_LOGF_P1;
    y = y * x + FXE_LOGF_P2;
    y = y * x + FXE_LOGF_P3;
    y = y * x + FXE_LOGF_P4;
    y = y * x + FXE_LOGF_P5;
    y = y * x + FXE_LOGF_P6;
    y = y * x + FXE_LOGF_P7;
    y = y * x + FXE_LOGF_P8;
    y = y * x * z;
    y = y + k * FXE_EXPF_LN2_LO;
    return y - 0.5f * z;
}

/* log, float32 (~1 ulp) */
FXE_INLINE float fxe_logf(float a)
{
    uint32_t u = fxe_f2u(a);
    float e = (float)((int32_t)(u >> 23) - 126);
    float m = fxe_u2f((u & 0x007fffffu) | 0x3f000000u);
    int lo = m < 0.707106781186547524f;
    e = lo ? e - 1.0f : e;
    float x = lo ? (m + m) - 1.0f : m - 1.0f;
    float r = (x + fxe_logf_tail(x, e)) + e * FXE_EXPF_LN2_HI;
    r = a == 0.0f ? -INFINITY : r;
    r = a == INFINITY ? INFINITY : r;
    r = a >= 0.0f ? r : NAN;     /* a < 0 or NaN: one comparison (a || of two stops gcc
                                    vectorising a loop that computes log(exp(.))) */
    return r;
}

/* log1p(e) for e in [0, 1] (softplus(-|x|) = log1p(exp(-|x|))), with no division and no
 * bit manipulation: 1 + e = 2^k (1 + x), k = [e > sqrt(2) - 1], x = e or e / 2 - 1 / 2, both
 * exact. k LN2_HI and x cancel partly: their sum is carried with its rounding error (Fast2Sum,
 * |k LN2_HI| >= |x| when k = 1), then the small tail is added. NaN stays NaN. */
FXE_INLINE float fxe_log1pf_unit(float e)
{
    const int hi = e > 0.414213562373095049f;
    const float x = hi ? 0.5f * e - 0.5f : e, kh = hi ? FXE_EXPF_LN2_HI : 0.0f;
    const float s = kh + x, c = x - (s - kh);
    return s + (c + fxe_logf_tail(x, hi ? 1.0f : 0.0f));
}

/* log(2^k (1 + f)) = k LN2_HI - (t - f) for f in [sqrt(1/2) - 1, sqrt(2) - 1], float64
 * (fdlibm's e_log.c): t */
FXE_INLINE double fxe_log_tail(double f, double k)
{
    double hfsq = 0.5 * f * f;
    double s = f / (2.0 + f);
    double z = s * s, w = z * z;
    double t1 = w * (FXE_LOG_LG1 + w * (FXE_LOG_LG3 + w * FXE_LOG_LG5));
    double t2 = z * (FXE_LOG_LG0 + w * (FXE_LOG_LG2 + w * (FXE_LOG_LG4 + w * FXE_LOG_LG6)));
    double R = t2 + t1;
    return hfsq - (s * (hfsq + R) + k * FXE_LOG_LN2_LO);
}

/* log, float64, < 1 ulp */
FXE_INLINE double fxe_log(double a)
{
    uint64_t u = fxe_d2u(a);
    uint64_t ux = u + (0x3ff0000000000000ull - 0x3fe6a09e00000000ull);
    double k = (double)(int32_t)((int64_t)(ux >> 52) - 1023);
    uint64_t um = (ux & 0x000fffffffffffffull) + 0x3fe6a09e00000000ull;
    double f = fxe_u2d(um) - 1.0;
    double r = k * FXE_LOG_LN2_HI - (fxe_log_tail(f, k) - f);
    r = a == 0.0 ? -INFINITY : r;
    r = a == INFINITY ? INFINITY : r;
    r = a >= 0.0 ? r : NAN;      /* a < 0 or NaN */
    return r;
}

/* log1p(e) for e in [0, 1], float64 (as fxe_log1pf_unit) */
FXE_INLINE double fxe_log1p_unit(double e)
{
    const int hi = e > 0.414213562373095049;
    const double f = hi ? 0.5 * e - 0.5 : e, kh = hi ? FXE_LOG_LN2_HI : 0.0;
    const double s = kh + f, c = f - (s - kh);
    return s + (c - fxe_log_tail(f, hi ? 1.0 : 0.0));
}

/* log1p(e) for e >= 0 from log(1 + e) and the rounding error of 1 + e (exact: (1+e)-1-e
 * is representable), divided by 1 + e: the first-order correction. */
FXE_INLINE float fxe_log1pf(float e)
{
    float u = 1.0f + e;
    float d = (u - 1.0f) - e;
    float r = fxe_logf(u) - d / u;
    return u == 1.0f ? e : r;
}
FXE_INLINE double fxe_log1p(double e)
{
    double u = 1.0 + e;
    double d = (u - 1.0) - e;
    double r = fxe_log(u) - d / u;
    return u == 1.0 ? e : r;
}
#endif
