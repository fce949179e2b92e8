"""The Numba backend's exp, expm1, log and log1p: the algorithms of ``_mathdef`` (shared with
the C kernels), written so that LLVM inlines and vectorises them.

PyPI's llvmlite has no SVML, so ``math.exp`` in a loop stays a scalar libm call. These are
plain arithmetic plus two LLVM-level bit operations (``_pow2_from_magic``,
``_split_exponent``). They are compiled without ``reassoc`` (it would undo the Cody-Waite
split and the rounding trick) and without ``nnan``/``ninf`` (-inf and NaN keep their IEEE
meaning), and are never inlined at Numba IR level, so a caller compiled with ``reassoc``
cannot lend them its flags.
"""

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic, overload

from ._mathdef import EXP, EXPF, LOG, LOGF

#: Flags for code whose rounding is part of the algorithm (no reassoc, no nnan/ninf).
EXACT_FLAGS = {"nsz", "arcp", "contract"}


def _can_cache():
    """Whether Numba finds a writable cache directory for this package's files (beside them,
    ``$NUMBA_CACHE_DIR`` or the user cache). Without one, ``cache=True`` raises at decoration
    and the whole backend would be lost: compile without a cache instead, and say why once."""
    import warnings

    from numba.core.caching import CacheImpl

    for locator in CacheImpl._locator_classes:
        try:
            if locator.from_function(_can_cache, __file__) is not None:
                return True
        except Exception:  # noqa: BLE001 - a locator that cannot work here is no locator
            pass
    warnings.warn(
        "fastxent: Numba finds no writable cache directory (the package's __pycache__, "
        "~/.cache/numba): its kernels are compiled in every new process (several seconds). "
        "Set NUMBA_CACHE_DIR to a writable directory to cache them.", RuntimeWarning,
        stacklevel=2)
    return False


OPTS = dict(cache=_can_cache(), error_model="numpy", boundscheck=False, nogil=True)


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
def ticks(typingctx):
    """The CPU's cycle counter (llvm.readcyclecounter: the TSC on x86; 0 where the target
    has none): the launch loops time their tasks with it."""
    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(64), []),
                                            "llvm.readcyclecounter")
        return builder.call(fn, [])

    return types.int64(), codegen


@intrinsic
def fetch_add(typingctx, arr, value):
    """arr[0] += value atomically (an int64 array); returns the old value: the launch loops
    hand out tasks with it."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        val = context.cast(builder, args[1], sig.args[1], types.int64)
        return builder.atomic_rmw("add", ary.data, val, "monotonic")

    return types.int64(arr, value), codegen


@intrinsic
def writable(typingctx, arr):
    """The same array typed as writable: a row kernel reads its logits through the same
    type whether the caller's array is read-only or not, and a variable may hold either the
    row or a scratch copy of it. (Kernels never write their inputs.)"""
    if not isinstance(arr, types.Array):
        return None
    out = arr.copy(readonly=False)

    def codegen(context, builder, sig, args):
        # a new reference to the same array (NRT releases the argument and the result)
        return impl_ret_borrowed(context, builder, sig.return_type, args[0])

    return out(arr), codegen


@intrinsic
def _pow2_from_magic(typingctx, t):
    """2**n from t = x log2e + MAGIC, whose low mantissa bits hold n: bits(t) + (bias -
    bits(MAGIC)) shifted into the exponent field (the C kernels' ``s``)."""
    if not isinstance(t, types.Float):
        return None

    def codegen(context, builder, sig, args):
        (v,) = args
        if t == types.float32:
            ity, shift, add = ir.IntType(32), 23, 127 - 0x4B400000
        else:
            ity, shift, add = ir.IntType(64), 52, 1023 - 0x4338000000000000
        k = builder.bitcast(v, ity)
        k = builder.shl(builder.add(k, ir.Constant(ity, add)), ir.Constant(ity, shift))
        return builder.bitcast(k, v.type)

    return t(t), codegen


@intrinsic
def _split_exponent(typingctx, x):
    """(k, m) with x = 2**k * m, m in [sqrt(1/2), sqrt(2)), for finite normal x > 0; k a float
    of x's type (the magic-number trick: AVX2 has no int64 -> float64 conversion)."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, sig, args):
        (v,) = args
        fty = v.type
        if x == types.float32:
            ity, mbits, magic_bits, bias, magic = ir.IntType(32), 23, 0x4B000000, 127, 8388608.0
            sqrt_half_bits = 0x3F3504F3
        else:
            ity, mbits, magic_bits, bias = ir.IntType(64), 52, 0x4330000000000000, 1023
            magic, sqrt_half_bits = 4503599627370496.0, 0x3FE6A09E667F3BCD
        bits = builder.bitcast(v, ity)
        tmp = builder.sub(bits, ir.Constant(ity, sqrt_half_bits))
        kint = builder.ashr(tmp, ir.Constant(ity, mbits))
        mant = builder.sub(bits, builder.shl(kint, ir.Constant(ity, mbits)))
        m = builder.bitcast(mant, fty)
        kb = builder.add(kint, ir.Constant(ity, bias))
        kf = builder.bitcast(builder.or_(kb, ir.Constant(ity, magic_bits)), fty)
        kf = builder.fsub(kf, ir.Constant(fty, magic + bias))
        return context.make_tuple(builder, sig.return_type, [kf, m])

    return types.UniTuple(x, 2)(x), codegen


_F = np.float32


def _consts32():
    q = tuple(_F(v) for v in EXPF["Q"])
    return (_F(EXPF["MAGIC"]), _F(EXPF["LOG2E"]), _F(EXPF["LN2_HI"]), _F(-EXPF["LN2_LO"]),
            _F(EXPF["FLUSH"]), q)


_M32, _L2E32, _HI32, _NLO32, _FL32, _Q32 = _consts32()
_M64, _L2E64, _HI64, _NLO64, _FL64 = (EXP["MAGIC"], EXP["LOG2E"], EXP["LN2_HI"],
                                      -EXP["LN2_LO"], EXP["FLUSH"])
_Q64 = EXP["Q"]
_ONE32 = _F(1.0)


@njit(fastmath=EXACT_FLAGS, inline="never", **OPTS)
def _pieces32(x):
    """(p, s) with exp(x) = s (1 + p): the shared reduction and polynomial (float32)."""
    x = _FL32 if _FL32 > x else x              # NaN passes (the comparison is false)
    t = x * _L2E32 + _M32
    n = t - _M32
    s = _pow2_from_magic(t)
    rh = x - n * _HI32
    rl = n * _NLO32
    r = rh + rl
    r2 = r * r
    q = ((_Q32[0] * r + _Q32[1]) * r2 + (_Q32[2] * r + _Q32[3])) * r + _Q32[4]
    return rh + (q * r2 + rl), s


@njit(fastmath=EXACT_FLAGS, inline="never", **OPTS)
def _pieces64(x):
    x = _FL64 if _FL64 > x else x
    t = x * _L2E64 + _M64
    n = t - _M64
    s = _pow2_from_magic(t)
    rh = x - n * _HI64
    rl = n * _NLO64
    r = rh + rl
    r2 = r * r
    r4 = r2 * r2
    q = ((_Q64[0] * r + _Q64[1]) * r2 + (_Q64[2] * r + _Q64[3])) * r4 + \
        ((_Q64[4] * r + _Q64[5]) * r2 + (_Q64[6] * r + _Q64[7]))
    q = (q * r + _Q64[8]) * r + _Q64[9]
    return rh + (q * r2 + rl), s


def exp_neg(x):
    """exp(x) for x <= 0 (or NaN): the kernels' exp (same values as the C kernels')."""
    raise NotImplementedError


def expm1_neg(x):
    """expm1(x) for x <= 0: s p + (s - 1), accurate relative to x near 0."""
    raise NotImplementedError


@overload(exp_neg, inline="never")
def _exp_neg_ol(x):
    if x == types.float32:
        def f32(x):
            p, s = _pieces32(x)
            return p * s + s
        return f32
    if x == types.float64:
        def f64(x):
            p, s = _pieces64(x)
            return p * s + s
        return f64
    return None


@overload(expm1_neg, inline="never")
def _expm1_neg_ol(x):
    if x == types.float32:
        def f32(x):
            p, s = _pieces32(x)
            return s * p + (s - _ONE32)
        return f32
    if x == types.float64:
        def f64(x):
            p, s = _pieces64(x)
            return s * p + (s - 1.0)
        return f64
    return None


_P32 = tuple(_F(v) for v in LOGF["P"])
assert len(_P32) == 9, "_log32_tail writes out a degree-8 polynomial"
_LOGF_LO, _LOGF_HI = _F(EXPF["LN2_LO"]), _F(EXPF["LN2_HI"])
_LG = LOG["LG"]
_LOG_HI, _LOG_LO = LOG["LN2_HI"], LOG["LN2_LO"]
_INF = math.inf
_SQRT2M1 = 0.414213562373095049
_SQRT2M1_32 = _F(_SQRT2M1)


@njit(fastmath=EXACT_FLAGS, inline="never", **OPTS)
def _log32_tail(x, k):
    """y of log(2**k (1 + x)) = (x + y) + k LN2_HI, x in [sqrt(1/2) - 1, sqrt(2) - 1]:
    Cephes' logf polynomial (the C kernels' fxe_logf_tail)."""
    z = x * x
    y = _P32[0]
    y = y * x + _P32[1]       # written out: a loop over the tuple stops LLVM vectorising
    y = y * x + _P32[2]
    y = y * x + _P32[3]
    y = y * x + _P32[4]
    y = y * x + _P32[5]
    y = y * x + _P32[6]
    y = y * x + _P32[7]
    y = y * x + _P32[8]
    y = y * x * z
    y = y + k * _LOGF_LO
    return y - _F(0.5) * z


@njit(fastmath=EXACT_FLAGS, inline="never", **OPTS)
def _log64_tail(f, k):
    """t of log(2**k (1 + f)) = k LN2_HI - (t - f): fdlibm's e_log.c (fxe_log_tail)."""
    hfsq = 0.5 * f * f
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG[1] + w * (_LG[3] + w * _LG[5]))
    t2 = z * (_LG[0] + w * (_LG[2] + w * (_LG[4] + w * _LG[6])))
    R = t2 + t1
    return hfsq - (s * (hfsq + R) + k * _LOG_LO)


@njit(fastmath=EXACT_FLAGS, inline="never", **OPTS)
def _log32(a):
    k, m = _split_exponent(a)
    x = m - _ONE32
    r = (x + _log32_tail(x, k)) + k * _LOGF_HI
    if a == _F(0.0):
        r = -_F(_INF)
    if a == _F(_INF):
        r = _F(_INF)
    if not (a >= _F(0.0)):
        r = _F(math.nan)
    return r


@njit(fastmath=EXACT_FLAGS, inline="never", **OPTS)
def _log64(a):
    k, m = _split_exponent(a)
    f = m - 1.0
    r = k * _LOG_HI - (_log64_tail(f, k) - f)
    if a == 0.0:
        r = -_INF
    if a == _INF:
        r = _INF
    if not (a >= 0.0):
        r = math.nan
    return r


def log_t(x):
    """log(x) in x's own type, vectorisable."""
    raise NotImplementedError


def log1p_t(x):
    """log1p(e) for e >= 0 in e's type: log(1 + e) minus the rounding error of 1 + e over
    1 + e (the C kernels' fxe_log1p)."""
    raise NotImplementedError


def log1p_unit(x):
    """log1p(e) for e in [0, 1] (softplus(-|x|)), no division: 1 + e = 2**k (1 + x) with
    k = [e > sqrt(2) - 1] and x = e or e / 2 - 1 / 2, both exact (the C kernels'
    fxe_log1p_unit)."""
    raise NotImplementedError


@overload(log_t, inline="never")
def _log_t_ol(x):
    if x == types.float32:
        return lambda x: _log32(x)
    if x == types.float64:
        return lambda x: _log64(x)
    return None


@overload(log1p_t, inline="never")
def _log1p_t_ol(x):
    def impl(x):
        u = x + cvt(1.0, x)
        d = (u - cvt(1.0, x)) - x
        r = log_t(u) - d / u
        return x if u == cvt(1.0, x) else r
    if isinstance(x, types.Float):
        return impl
    return None


@overload(log1p_unit, inline="never")
def _log1p_unit_ol(x):
    # k LN2_HI + x carried with its rounding error (Fast2Sum), then the tail (fxe_log1p_unit)
    if x == types.float32:
        def f32(x):
            hi = x > _SQRT2M1_32
            u = _F(0.5) * x - _F(0.5) if hi else x
            kh = _LOGF_HI if hi else _F(0.0)
            s = kh + u
            c = u - (s - kh)
            return s + (c + _log32_tail(u, _ONE32 if hi else _F(0.0)))
        return f32
    if x == types.float64:
        def f64(x):
            hi = x > _SQRT2M1
            f = 0.5 * x - 0.5 if hi else x
            kh = _LOG_HI if hi else 0.0
            s = kh + f
            c = f - (s - kh)
            return s + (c - _log64_tail(f, 1.0 if hi else 0.0))
        return f64
    return None
