"""Vectorisable scalar maths for the Numba backend: exp, log, log1p, max, casts.

PyPI's llvmlite has no SVML, so ``math.exp``/``np.exp`` inside a loop stays a scalar libm
call. These helpers are plain arithmetic plus a few LLVM intrinsics, so LLVM inlines and
vectorises them. They are compiled with ``_EXACT_FLAGS`` (no ``reassoc``: it would let LLVM
undo the Cody-Waite split and the round-to-nearest trick; no ``nnan``/``ninf``: -inf, inf
and NaN must keep their IEEE meaning) and are not inlined at Numba IR level
(``inline='never'``), so a caller compiled with ``reassoc`` cannot lend them its flags.

Accuracy (tests/test_numba_backend.py): float32 exp <= 1 ulp over every float32 input with
a finite normal result; float64 exp <= 2 ulp (sampled). Out of range: exp(-inf) = 0
exactly, large negative inputs underflow through the subnormals to 0, overflow gives inf,
NaN gives NaN.
"""

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

#: Flags for code whose rounding is part of the algorithm (no reassoc, no nnan/ninf).
_EXACT_FLAGS = {"nsz", "arcp", "contract"}
_OPTS = dict(cache=True, error_model="numpy", boundscheck=False, nogil=True)


# ------------------------------------------------------------------------------ intrinsics

@intrinsic
def maxnum(typingctx, a, b):
    """llvm.maxnum: vectorises as a reduction (numba's max() does not); ignores NaN."""
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, sig, args):
        lty = args[0].type
        name = "llvm.maxnum.f32" if a == types.float32 else "llvm.maxnum.f64"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(lty, [lty, lty]), name)
        return builder.call(fn, args)

    return a(a, b), codegen


@intrinsic
def cvt(typingctx, value, like):
    """``value`` converted to the type of ``like`` (keeps float32 code in float32)."""
    def codegen(context, builder, sig, args):
        return context.cast(builder, args[0], sig.args[0], sig.return_type)

    return like(value, like), codegen


@intrinsic
def _pow2(typingctx, nf):
    """2**nf for an integer-valued float nf with a normal result, built from exponent bits."""
    if not isinstance(nf, types.Float):
        return None

    def codegen(context, builder, sig, args):
        (v,) = args
        if nf == types.float32:
            ity, magic, bias, shift = ir.IntType(32), 12582912.0, 127, 23
        else:
            ity, magic, bias, shift = ir.IntType(64), 6755399441055744.0, 1023, 52
        # v + 1.5 * 2**mantissa_bits puts v (two's complement) in the low mantissa bits;
        # the magic's own low bits are zero, so they vanish in the shift.
        k = builder.bitcast(builder.fadd(v, ir.Constant(v.type, magic)), ity)
        k = builder.shl(builder.add(k, ir.Constant(ity, bias)), ir.Constant(ity, shift))
        return builder.bitcast(k, v.type)

    return nf(nf), codegen


@intrinsic
def _split_exponent(typingctx, x):
    """(k, m) with x = 2**k * m, m in [sqrt(1/2), sqrt(2)), for finite normal x > 0.

    k is returned as a float of x's type (integer-valued): AVX2 has no int64 -> float64
    conversion, so the exponent field is turned into a float with the magic-number trick.
    """
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, sig, args):
        (v,) = args
        fty = v.type
        if x == types.float32:
            ity, mbits, magic_bits, bias = ir.IntType(32), 23, 0x4B000000, 127
            magic = 8388608.0
        else:
            ity, mbits, magic_bits, bias = ir.IntType(64), 52, 0x4330000000000000, 1023
            magic = 4503599627370496.0
        bits = builder.bitcast(v, ity)
        # As in musl's log: measure the exponent from sqrt(1/2), not from 1, so that the
        # remaining mantissa m lands in [sqrt(1/2), sqrt(2)).
        sqrt_half_bits = 0x3F3504F3 if x == types.float32 else 0x3FE6A09E667F3BCD
        tmp = builder.sub(bits, ir.Constant(ity, sqrt_half_bits))
        kint = builder.ashr(tmp, ir.Constant(ity, mbits))  # exponent, may be negative
        mant = builder.sub(bits, builder.shl(kint, ir.Constant(ity, mbits)))
        m = builder.bitcast(mant, fty)
        # k as float: (k + bias) is in [0, 2*bias] for normal x: OR it under a 2**mbits magic.
        kb = builder.add(kint, ir.Constant(ity, bias))
        kf = builder.bitcast(builder.or_(kb, ir.Constant(ity, magic_bits)), fty)
        kf = builder.fsub(kf, ir.Constant(fty, magic + bias))
        return context.make_tuple(builder, sig.return_type, [kf, m])

    return types.UniTuple(x, 2)(x), codegen


# --------------------------------------------------------------------------------- exp

_LOG2E32 = np.float32(1.4426950408889634)
_MAGIC32 = np.float32(12582912.0)
_HALF32 = np.float32(0.5)
_ONE32 = np.float32(1.0)
# Cody-Waite: ln2 = C1 + C2 with C1 exact in 9 bits, so n * C1 is exact.
_C1_32 = np.float32(0.693359375)
_C2_32 = np.float32(-2.12194440e-4)
_P32 = tuple(np.float32(v) for v in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                                     4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))
# Clamps: exp(-104) rounds to 0 and exp(89) overflows in float32, and both clamped values
# keep n = round(x / ln2) inside what the two-factor 2**n below can represent.
_LO32 = np.float32(-104.0)
_HI32 = np.float32(89.0)


@njit(fastmath=_EXACT_FLAGS, inline="never", **_OPTS)
def _exp32(x):
    if x < _LO32:  # NaN fails both tests and propagates through the polynomial
        x = _LO32
    if x > _HI32:
        x = _HI32
    n = (x * _LOG2E32 + _MAGIC32) - _MAGIC32  # round to nearest
    r = x - n * _C1_32
    r = r - n * _C2_32
    p = _P32[0] * r + _P32[1]
    p = p * r + _P32[2]
    p = p * r + _P32[3]
    p = p * r + _P32[4]
    p = p * r + _P32[5]
    p = p * (r * r) + r + _ONE32
    # 2**n as two normal factors: covers gradual underflow (n down to -150) and overflow.
    n1 = (n * _HALF32 + _MAGIC32) - _MAGIC32
    return (p * _pow2(n1)) * _pow2(n - n1)


_LOG2E64 = 1.4426950408889634
_MAGIC64 = 6755399441055744.0
# fdlibm split: LN2_HI has 32 trailing zero bits, so n * LN2_HI is exact for |n| < 2**20.
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
# Taylor series to degree 13: the remainder |r|**14 / 14! < 5e-18 for |r| <= ln2 / 2.
_P64 = tuple(1.0 / math.factorial(k) for k in range(13, 1, -1))
_LO64 = -746.0
_HI64 = 710.0


@njit(fastmath=_EXACT_FLAGS, inline="never", **_OPTS)
def _exp64(x):
    if x < _LO64:
        x = _LO64
    if x > _HI64:
        x = _HI64
    n = (x * _LOG2E64 + _MAGIC64) - _MAGIC64
    r = x - n * _LN2_HI
    r = r - n * _LN2_LO
    p = _P64[0]
    for k in range(1, len(_P64)):
        p = p * r + _P64[k]
    p = (p * r + 1.0) * r + 1.0
    n1 = (n * 0.5 + _MAGIC64) - _MAGIC64
    return (p * _pow2(n1)) * _pow2(n - n1)


def fexp(x):
    """exp(x), vectorisable, float32 or float64 (see module docstring for accuracy)."""
    raise NotImplementedError


@overload(fexp, inline="never")
def _fexp_overload(x):
    if x == types.float32:
        return lambda x: _exp32(x)
    if x == types.float64:
        return lambda x: _exp64(x)
    return None


# --------------------------------------------------------------------------------- log

# log(m) = 2 atanh(f), f = (m - 1) / (m + 1), |f| <= 0.1716: odd series to f**21
# (0.1716**23 / 23 < 1e-19).
_ATANH = tuple(2.0 / (2 * j + 1) for j in range(10, -1, -1))
_LN2 = 0.6931471805599453
_LN2_HI_LOG = 6.93147180369123816490e-01
_LN2_LO_LOG = 1.90821492927058770002e-10
_INF = math.inf


@njit(fastmath=_EXACT_FLAGS, inline="never", **_OPTS)
def flog(x):
    """log(x) for float64 x, vectorisable, ~1 ulp; 0 -> -inf, inf -> inf, NaN/neg -> NaN."""
    k, m = _split_exponent(x)
    f = (m - 1.0) / (m + 1.0)
    w = f * f
    p = _ATANH[0]
    for j in range(1, len(_ATANH)):
        p = p * w + _ATANH[j]
    r = k * _LN2_HI_LOG + (f * p + k * _LN2_LO_LOG)
    # Specials last, as selects, so the loop stays branch-free (subnormal x never occurs).
    if x == 0.0:
        r = -_INF
    if x == _INF:
        r = _INF
    if not (x >= 0.0):
        r = math.nan
    return r


@njit(fastmath=_EXACT_FLAGS, inline="never", **_OPTS)
def flog1p(e):
    """log1p(e) for float64 e in [0, inf]: log(1 + e) plus the rounding error of 1 + e."""
    u = 1.0 + e
    r = flog(u)
    # (e - (u - 1)) is exact; dividing by u turns it into the missing log increment.
    if u != 1.0:
        r = r + (e - (u - 1.0)) / u
    else:
        r = e
    return r


# ------------------------------------------------------------------- exp of x <= 0

# exp for arguments known to be <= 0 (x - row max): no overflow handling and one 2**n
# factor; results below the smallest normal are flushed to 0 (-inf -> 0 exactly, NaN ->
# NaN). Same reduction and polynomial as fexp, so <= 1 ulp (float32) / 2 ulp (float64) over
# the normal range.
_NEG_LO32 = np.float32(-87.33654)  # exp(x) >= FLT_MIN above this
_NEG_LO64 = -708.39641853226  # exp(x) >= DBL_MIN above this


@njit(fastmath=_EXACT_FLAGS, inline="never", **_OPTS)
def _exp32_neg(x):
    xc = x
    if xc < _NEG_LO32:
        xc = _NEG_LO32
    n = (xc * _LOG2E32 + _MAGIC32) - _MAGIC32
    r = xc - n * _C1_32
    r = r - n * _C2_32
    p = _P32[0] * r + _P32[1]
    p = p * r + _P32[2]
    p = p * r + _P32[3]
    p = p * r + _P32[4]
    p = p * r + _P32[5]
    p = p * (r * r) + r + _ONE32
    res = p * _pow2(n)
    if x < _NEG_LO32:
        res = np.float32(0.0)
    return res


@njit(fastmath=_EXACT_FLAGS, inline="never", **_OPTS)
def _exp64_neg(x):
    xc = x
    if xc < _NEG_LO64:
        xc = _NEG_LO64
    n = (xc * _LOG2E64 + _MAGIC64) - _MAGIC64
    r = xc - n * _LN2_HI
    r = r - n * _LN2_LO
    p = _P64[0]
    for k in range(1, len(_P64)):
        p = p * r + _P64[k]
    p = (p * r + 1.0) * r + 1.0
    res = p * _pow2(n)
    if x < _NEG_LO64:
        res = 0.0
    return res


def fexp_neg(x):
    """exp(x) for x <= 0 (or NaN), vectorisable; results below the normal range are 0."""
    raise NotImplementedError


@overload(fexp_neg, inline="never")
def _fexp_neg_overload(x):
    if x == types.float32:
        return lambda x: _exp32_neg(x)
    if x == types.float64:
        return lambda x: _exp64_neg(x)
    return None


# ------------------------------------------------------------------------ float32 log

# The float64 series above is division bound at 4 lanes; float32 data need float32 accuracy:
# the same atanh series to f**13 in float32 (8 lanes), truncation 0.1716**15 / 15 < 2e-13.
_ATANH32 = tuple(np.float32(2.0 / (2 * j + 1)) for j in range(6, -1, -1))
_LN2_HI32 = np.float32(0.693359375)
_LN2_LO32 = np.float32(-2.12194440e-4)
_INF32 = np.float32(np.inf)


@njit(fastmath=_EXACT_FLAGS, inline="never", **_OPTS)
def _flog32(x):
    k, m = _split_exponent(x)
    f = (m - _ONE32) / (m + _ONE32)
    w = f * f
    p = _ATANH32[0]
    for j in range(1, len(_ATANH32)):
        p = p * w + _ATANH32[j]
    r = k * _LN2_HI32 + (f * p + k * _LN2_LO32)
    if x == np.float32(0.0):
        r = -_INF32
    if x == _INF32:
        r = _INF32
    if not (x >= np.float32(0.0)):
        r = np.float32(math.nan)
    return r


def flog_t(x):
    """log(x) in x's own type (float32: ~1 ulp of float32), vectorisable."""
    raise NotImplementedError


@overload(flog_t, inline="never")
def _flog_t_overload(x):
    if x == types.float32:
        return lambda x: _flog32(x)
    if x == types.float64:
        return lambda x: flog(x)
    return None
