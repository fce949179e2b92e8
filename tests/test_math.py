"""The one exp and log of the compiled backends (``_backends/_mathdef.py``), tested once,
parametrised by backend: float32 exp within 1 ulp on every 16th float32 bit pattern of
x <= 0 with a normal result (67 million inputs) plus dense boundary ranges, float64 within 1
ulp on 2 million samples, log/log1p within 1 ulp (log1p on [0, 1] without division), special values, and the C header generated
from the same constants."""

import math

import numpy as np
import pytest

from fastxent import _registry
from fastxent._backends import _mathdef

BACKENDS = [b for b in ("cython", "numba") if b in _registry.known_backends()]


def _math(backend, name):
    """name(x) elementwise for a 1-D array, through the backend's own implementation."""
    from .conftest import REQUIRED
    if _registry.load(backend) is None:
        if backend in REQUIRED:
            pytest.fail(f"backend {backend!r} required: {_registry.why(backend)}")
        pytest.skip(f"{backend} unavailable")
    if backend == "cython":
        from fastxent._backends._cython import _kernels
        return lambda x: _kernels._math(name, np.ascontiguousarray(x))
    return _numba_fn(name)


_NUMBA = {}


def _numba_fn(name):
    if name not in _NUMBA:
        from numba import njit
        from fastxent._backends import _numba_math as M
        fn = {"exp": M.exp_neg, "expm1": M.expm1_neg, "log": M.log_t, "log1p": M.log1p_t,
              "log1p_unit": M.log1p_unit}[name]

        @njit
        def apply(x):
            out = np.empty_like(x)
            for i in range(x.shape[0]):
                out[i] = fn(x[i])
            return out
        _NUMBA[name] = apply
    return _NUMBA[name]


def _ulps(got, want, dtype):
    """|got - want| in units of the last place of want (want in float64 or longdouble)."""
    info = np.finfo(dtype)
    want = np.asarray(want, np.longdouble)
    exponent = np.floor(np.log2(np.maximum(np.abs(want), np.longdouble(info.tiny))))
    ulp = np.ldexp(np.longdouble(1), (exponent - info.nmant).astype(int))
    return np.abs(np.asarray(got, np.longdouble) - want) / ulp


@pytest.mark.parametrize("backend", BACKENDS)
def test_exp_float32_within_one_ulp(backend):
    fn = _math(backend, "exp")
    lo = np.float32(-87.33654)  # exp(lo) is the smallest normal
    bits = np.arange(0x80000000, int(np.float32(lo).view(np.uint32)) + 1, 16, dtype=np.uint64)
    dense = np.concatenate([np.linspace(-1e-3, 0, 200001), np.linspace(-87.34, -87.0, 200001),
                            np.linspace(-0.36, -0.33, 200001)]).astype(np.float32)
    worst = 0.0
    for chunk in np.array_split(bits, 64):
        x = np.concatenate([chunk.astype(np.uint32).view(np.float32)])
        worst = max(worst, float(np.max(_ulps(fn(x), np.exp(x.astype(np.float64)),
                                              np.float32))))
    worst = max(worst, float(np.max(_ulps(fn(dense), np.exp(dense.astype(np.float64)),
                                          np.float32))))
    assert worst <= 1.0, worst


@pytest.mark.parametrize("backend", BACKENDS)
def test_exp_float64_within_one_ulp_sampled(backend):
    fn = _math(backend, "exp")
    rng = np.random.default_rng(0)
    x = np.concatenate([-rng.random(10 ** 6) * 708, -rng.random(10 ** 6) * 0.5])
    assert float(np.max(_ulps(fn(x), np.exp(x.astype(np.longdouble)), np.float64))) <= 1.0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_special_values(backend, dtype):
    fn = _math(backend, "exp")
    x = np.array([0.0, -0.0, -np.inf, np.nan, -1e4, -800.0], dtype)
    got = fn(x)
    assert got[0] == 1 and got[1] == 1
    assert got[2] == 0 and not np.signbit(got[2])
    assert np.isnan(got[3])
    assert got[4] == 0 and got[5] == 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_expm1_is_accurate_near_zero(backend, dtype):
    fn = _math(backend, "expm1")
    x = -np.logspace(-30 if dtype == np.float64 else -20, 1.5, 20001).astype(dtype)
    want = np.expm1(x.astype(np.longdouble))
    assert float(np.max(_ulps(fn(x), want, dtype))) <= 2.0
    assert fn(np.array([-np.inf], dtype))[0] == -1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_and_log1p(backend, dtype):
    log, log1p = _math(backend, "log"), _math(backend, "log1p")
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.random(10 ** 5) * 2, 1 + rng.random(10 ** 5) * 1e5,
                        np.logspace(-30, 30, 1000)]).astype(dtype)
    x = x[x > np.finfo(dtype).tiny]
    assert float(np.max(_ulps(log(x), np.log(x.astype(np.longdouble)), dtype))) <= 1.0
    e = np.concatenate([np.logspace(-30, 0, 5000), rng.random(10 ** 5)]).astype(dtype)
    assert float(np.max(_ulps(log1p(e), np.log1p(e.astype(np.longdouble)), dtype))) <= 1.5
    special = log(np.array([0.0, np.inf, np.nan, -1.0], dtype))
    assert special[0] == -np.inf and special[1] == np.inf
    assert np.isnan(special[2]) and np.isnan(special[3])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log1p_on_the_unit_interval(backend, dtype):
    """The softplus's log1p(exp(-|x|)): within 1.5 ulp over [0, 1] (as the general log1p;
    the worst case just above the switch at sqrt(2) - 1, where ln 2 and log((1 + e) / 2)
    cancel to half their size), exact at 0; NaN stays NaN."""
    fn = _math(backend, "log1p_unit")
    rng = np.random.default_rng(2)
    knee = np.float64(np.sqrt(2.0) - 1.0)
    e = np.concatenate([np.logspace(-40 if dtype == np.float64 else -30, 0, 20001),
                        rng.random(2 * 10 ** 5), knee + np.linspace(-1e-6, 1e-6, 2001),
                        [0.0, 0.5, 1.0]]).astype(dtype)
    ulps = _ulps(fn(e), np.log1p(e.astype(np.longdouble)), dtype)
    assert float(np.max(ulps)) <= 1.5
    assert float(np.max(ulps[e < knee])) <= 1.0
    special = fn(np.array([0.0, np.nan], dtype))
    assert special[0] == 0 and np.isnan(special[1])


def test_the_c_header_is_generated_from_the_shared_constants():
    header = _mathdef.c_header()
    assert f"#define FXE_EXPF_LN2_HI {_mathdef.EXPF['LN2_HI']!r}f" in header
    for i, q in enumerate(_mathdef.EXP["Q"]):
        assert f"#define FXE_EXP_Q{i} {q!r}\n" in header
    # ln 2 = LN2_HI + LN2_LO in both precisions, with LN2_HI short enough that n LN2_HI
    # is exact for every n the kernels produce
    for table, bits in ((_mathdef.EXPF, 24), (_mathdef.EXP, 53)):
        assert abs(table["LN2_HI"] + table["LN2_LO"] - math.log(2)) < 2.0 ** -(bits + 20)
        mantissa = math.frexp(table["LN2_HI"])[0]
        assert (mantissa * 2 ** 16).is_integer()
