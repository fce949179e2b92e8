/* fxe_math.h -- vectorisable exp/log for float and double (fastxent Cython backend).
 *
 * Why: gcc vectorises calls to exp() only through libmvec under full -ffast-math, which
 * assumes no inf/NaN and so breaks the exact -inf masking and NaN propagation that the
 * kernel contract requires. These are plain branch-free C (selects, integer bit tricks),
 * so `gcc -O3` / `#pragma omp simd` turns them into SIMD code inside the row loops.
 *
 * exp: round-to-nearest range reduction x = n ln2 + r (|r| <= ln2/2) with the rounding
 * done by the 1.5*2^mantissa "magic number" trick, a two-constant Cody-Waite split of ln2
 * (the high part has few enough bits that n*LN2_HI is exact), a short polynomial for e^r,
 * and 2^n built from integer bits as 2^n1 * 2^n2 (n1 + n2 = n) so that subnormal results
 * and overflow to +inf come out right. Special values: -inf -> exactly +0, +inf -> +inf,
 * NaN -> NaN (the clamps are written `x < lo ? lo : x`, which keeps a NaN). Measured (see
 * tests/test_cython_backend.py): float32 <= 1 ulp over every float32 input whose result is
 * a finite normal number; float64 <= 2 ulp on dense sampling.
 */
#ifndef FXE_MATH_H
#define FXE_MATH_H

#include <stdint.h>
#include <string.h>
#include <math.h>

#if defined(__GNUC__) || defined(__clang__)
#define FXE_INLINE static inline __attribute__((always_inline))
#else
#define FXE_INLINE static inline
#endif

FXE_INLINE float fxe_u2f(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }
FXE_INLINE uint32_t fxe_f2u(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }
FXE_INLINE double fxe_u2d(uint64_t u) { double d; memcpy(&d, &u, sizeof d); return d; }
FXE_INLINE uint64_t fxe_d2u(double d) { uint64_t u; memcpy(&u, &d, sizeof u); return u; }

/* ------------------------------------------------------------------------------ float32 */
FXE_INLINE float fxe_expf(float x)
{
    const float magic = 12582912.0f;               /* 1.5 * 2^23: adding it rounds to int */
    x = x > 89.0f ? 89.0f : x;                      /* e^89 > FLT_MAX: overflows to +inf    */
    x = x < -110.0f ? -110.0f : x;                  /* e^-110 < FLT_TRUE_MIN/2: rounds to 0 */
    float t = x * 1.44269504088896341f + magic;
    float n = t - magic;                            /* nearest integer to x / ln2 */
    uint32_t ni = fxe_f2u(t) - fxe_f2u(magic);      /* the same integer, as bits (mod 2^32) */
    /* x = n ln2 + rh + rl: rh = x - n LN2_HI is exact (LN2_HI has 9 bits, and Sterbenz),
     * rl = n (LN2_HI - ln2). r = rh + rl rounded is only used inside the polynomial; the
     * result is assembled as hi + (lo + (rl + r^2 q(r))) with hi + lo = 1 + rh exactly, so
     * that neither the rounding of r nor that of 1 + rh (each up to 1/4 ulp of the result)
     * adds to the final rounding: measured max 0.76 ulp. */
    float rh = x - n * 0.693359375f;
    float rl = n * 2.12194440e-4f;
    float r = rh + rl;
    /* e^r = 1 + r + r^2 q(r), q of degree 4: Chebyshev fit of (e^r - 1 - r) / r^2 on
     * |r| <= 1.01 ln2/2 (mpmath.chebyfit; truncation error 8e-9 = 0.07 ulp). */
    float r2 = r * r;
    float q = 1.3926926614021907e-3f;
    q = q * r + 8.363773874405574e-3f;
    q = q * r + 4.166655011030512e-2f;
    q = q * r + 1.6666573381900845e-1f;
    q = q * r + 0.5f;
    float hi = 1.0f + rh;
    float lo = (1.0f - hi) + rh;                     /* exact error of 1 + rh (Fast2Sum) */
    float pr = hi + (lo + (q * r2 + rl));
    /* 2^n = 2^n1 * 2^n2, n1 = round(n/2): both factors stay normal for n in [-159, 129]. */
    float t1 = n * 0.5f + magic;
    uint32_t n1 = fxe_f2u(t1) - fxe_f2u(magic);
    uint32_t n2 = ni - n1;
    float s1 = fxe_u2f((n1 + 127u) << 23);
    float s2 = fxe_u2f((n2 + 127u) << 23);
    return (pr * s1) * s2;
}

/* log for float32 (Cephes logf polynomial, ~1 ulp), branch-free; used per row on sums of
 * exponentials (>= 1 in the softmax kernels), so subnormal inputs are not special-cased,
 * but 0 -> -inf, +inf -> +inf, NaN/negative -> NaN are. */
FXE_INLINE float fxe_logf(float a)
{
    uint32_t u = fxe_f2u(a);
    float e = (float)((int32_t)(u >> 23) - 126);     /* a = m 2^e, m in [0.5, 1) */
    float m = fxe_u2f((u & 0x007fffffu) | 0x3f000000u);
    int lo = m < 0.707106781186547524f;
    e = lo ? e - 1.0f : e;
    float x = lo ? (m + m) - 1.0f : m - 1.0f;        /* x in [sqrt(1/2) - 1, sqrt(2) - 1) */
    float z = x * x;
    float y = 7.0376836292e-2f;
    y = y * x - 1.1514610310e-1f;
    y = y * x + 1.1676998740e-1f;
    y = y * x - 1.2420140846e-1f;
    y = y * x + 1.4249322787e-1f;
    y = y * x - 1.6668057665e-1f;
    y = y * x + 2.0000714765e-1f;
    y = y * x - 2.4999993993e-1f;
    y = y * x + 3.3333331174e-1f;
    y = y * x * z;
    y = y + e * -2.12194440e-4f;
    y = y - 0.5f * z;
    float r = (x + y) + e * 0.693359375f;
    r = a == 0.0f ? -INFINITY : r;
    r = a == INFINITY ? INFINITY : r;
    r = (a < 0.0f || a != a) ? NAN : r;
    return r;
}

/* ------------------------------------------------------------------------------ float64 */
FXE_INLINE double fxe_exp(double x)
{
    const double magic = 6755399441055744.0;        /* 1.5 * 2^52 */
    x = x > 710.0 ? 710.0 : x;                      /* overflows to +inf */
    x = x < -760.0 ? -760.0 : x;                    /* underflows to exactly 0 */
    double t = x * 1.4426950408889634074 + magic;
    double n = t - magic;
    uint64_t ni = fxe_d2u(t) - fxe_d2u(magic);
    double rh = x - n * 6.93145751953125e-1;         /* LN2_HI (16 bits): n*LN2_HI exact */
    double rl = n * -1.42860682030941723212e-6;      /* LN2_LO; assembled as for float */
    double r = rh + rl;
    /* e^r = 1 + r + r^2 q(r), q of degree 9: Chebyshev fit of (e^r - 1 - r) / r^2 on
     * |r| <= 1.01 ln2/2 (mpmath.chebyfit; truncation error 1.4e-17 = 0.06 ulp). */
    double q = 2.510134692835034e-08;
    q = q * r + 2.7621338669142925e-07;
    q = q * r + 2.75572664186123e-06;
    q = q * r + 2.4801518641395993e-05;
    q = q * r + 0.00019841269864380513;
    q = q * r + 0.0013888888918939168;
    q = q * r + 0.008333333333329793;
    q = q * r + 0.04166666666662064;
    q = q * r + 0.16666666666666669;
    q = q * r + 0.5000000000000001;
    double hi = 1.0 + rh;
    double lo = (1.0 - hi) + rh;                     /* exact error of 1 + rh (Fast2Sum) */
    double pr = hi + (lo + (q * (r * r) + rl));
    double t1 = n * 0.5 + magic;
    uint64_t n1 = fxe_d2u(t1) - fxe_d2u(magic);
    uint64_t n2 = ni - n1;
    double s1 = fxe_u2d((n1 + 1023u) << 52);
    double s2 = fxe_u2d((n2 + 1023u) << 52);
    return (pr * s1) * s2;
}

/* log for float64 (fdlibm's e_log.c algorithm, branch-free): a = 2^k (1 + f) with
 * 1 + f in [sqrt(1/2), sqrt(2)), log(1 + f) = f - hfsq + s (hfsq + R(s^2)), s = f / (2 + f).
 * < 1 ulp. Used per row on sums of exponentials; subnormal inputs are not special-cased
 * (they do not occur there), 0 -> -inf, +inf -> +inf, NaN/negative -> NaN. */
FXE_INLINE double fxe_log(double a)
{
    uint64_t u = fxe_d2u(a);
    /* shift the mantissa range to [sqrt(1/2), sqrt(2)): add (1 - sqrt(1/2)) ulps-worth */
    uint64_t ux = u + (0x3ff0000000000000ull - 0x3fe6a09e00000000ull);
    double k = (double)(int32_t)((int64_t)(ux >> 52) - 1023);
    uint64_t um = (ux & 0x000fffffffffffffull) + 0x3fe6a09e00000000ull;
    double f = fxe_u2d(um) - 1.0;
    double hfsq = 0.5 * f * f;
    double s = f / (2.0 + f);
    double z = s * s, w = z * z;
    double t1 = w * (3.999999999940941908e-01 + w * (2.222219843214978396e-01 +
                w * 1.531383769920937332e-01));
    double t2 = z * (6.666666666666735130e-01 + w * (2.857142874366239149e-01 +
                w * (1.818357216161805012e-01 + w * 1.479819860511658591e-01)));
    double R = t2 + t1;
    double r = k * 6.93147180369123816490e-01 -
               ((hfsq - (s * (hfsq + R) + k * 1.90821492927058770002e-10)) - f);
    r = a == 0.0 ? -INFINITY : r;
    r = a == INFINITY ? INFINITY : r;
    r = (a < 0.0 || a != a) ? NAN : r;
    return r;
}

/* ------------------------------------------------------------- kernel versions
 * The kernels only ever take exp of x - max (<= 0), x - lse or -|x|: these versions skip
 * the two-factor scaling and the overflow handling. Same polynomial and the same <= 1 ulp
 * (float) / <= 2 ulp (double) for x in [-87.3, 88.3] ([-708.3, 709]); results below the
 * smallest normal are flushed to +0 (absolute error < 1.2e-38 / 2.3e-308); arguments above
 * 88.3 (709) are clamped there (the kernels never pass any: their arguments are <= ~0).
 * -inf -> +0 exactly, NaN -> NaN. */
FXE_INLINE float fxe_expf_k(float x)
{
    const float magic = 12582912.0f;
    x = x > 88.3f ? 88.3f : x;                       /* keeps n <= 127 (vminps) */
    x = x < -88.0f ? -88.0f : x;                     /* n = -127 -> scale 0 -> +0 (vmaxps) */
    float t = x * 1.44269504088896341f + magic;
    float n = t - magic;
    uint32_t ni = fxe_f2u(t) - fxe_f2u(magic);
    float rh = x - n * 0.693359375f;
    float rl = n * 2.12194440e-4f;
    float r = rh + rl;
    float r2 = r * r;
    float q = 1.3926926614021907e-3f;
    q = q * r + 8.363773874405574e-3f;
    q = q * r + 4.166655011030512e-2f;
    q = q * r + 1.6666573381900845e-1f;
    q = q * r + 0.5f;
    float hi = 1.0f + rh;
    float lo = (1.0f - hi) + rh;                     /* exact error of 1 + rh (Fast2Sum) */
    float pr = hi + (lo + (q * r2 + rl));
    return pr * fxe_u2f((ni + 127u) << 23);
}

FXE_INLINE double fxe_exp_k(double x)
{
    const double magic = 6755399441055744.0;
    x = x > 709.0 ? 709.0 : x;
    x = x < -709.0 ? -709.0 : x;                     /* n = -1023 -> scale 0 -> +0 */
    double t = x * 1.4426950408889634074 + magic;
    double n = t - magic;
    uint64_t ni = fxe_d2u(t) - fxe_d2u(magic);
    double rh = x - n * 6.93145751953125e-1;
    double rl = n * -1.42860682030941723212e-6;
    double r = rh + rl;
    double q = 2.510134692835034e-08;
    q = q * r + 2.7621338669142925e-07;
    q = q * r + 2.75572664186123e-06;
    q = q * r + 2.4801518641395993e-05;
    q = q * r + 0.00019841269864380513;
    q = q * r + 0.0013888888918939168;
    q = q * r + 0.008333333333329793;
    q = q * r + 0.04166666666662064;
    q = q * r + 0.16666666666666669;
    q = q * r + 0.5000000000000001;
    double hi = 1.0 + rh;
    double lo = (1.0 - hi) + rh;                     /* exact error of 1 + rh (Fast2Sum) */
    double pr = hi + (lo + (q * (r * r) + rl));
    return pr * fxe_u2d((ni + 1023u) << 52);
}

#endif /* FXE_MATH_H */
