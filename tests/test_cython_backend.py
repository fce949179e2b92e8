"""Cython backend specifics: the vectorised exp, float32 accuracy, threads, fork, build_info.

The kernel contract itself is checked for every backend by tests/test_kernels.py.
"""

import multiprocessing
import os
import threading

import numpy as np
import pytest

from fastxent import _registry
from fastxent._backends import numpy_ as ref

cy = _registry.load("cython")
pytestmark = pytest.mark.skipif(cy is None, reason=f"cython backend: {_registry.why('cython')}")
if cy is not None:
    from fastxent._backends._cython import _kernels as ext


@pytest.fixture(params=["best", "avx2", "baseline"])
def simd(request):
    """Run a test under each SIMD variant this CPU can run (skipping duplicates)."""
    active = cy.build_info()["simd"]
    name = ext._select_simd(request.param)
    if request.param != "best" and name == ext._select_simd("best"):
        ext._select_simd(active)
        pytest.skip(f"{request.param}: same variant as 'best' on this CPU")
    ext._select_simd(request.param)
    yield name
    ext._select_simd(active)


# ------------------------------------------------------------------------------ exp

def _ulp_err_f32(got, x):
    want = np.exp(x.astype(np.float64))
    spacing = np.spacing(want.astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - want) / spacing


def _f32_range(lo, hi):
    """All float32 values in [lo, hi] (lo < 0 < hi), as uint32 bit-pattern ranges."""
    neg = (np.float32(-0.0).view(np.uint32), np.float32(lo).view(np.uint32))
    pos = (np.uint32(0), np.float32(hi).view(np.uint32))
    return [neg, pos]


@pytest.mark.parametrize("kernel_version,hi", [(True, 88.3), (False, 88.72)])
def test_expf_within_1ulp_on_every_float32_with_normal_result(simd, kernel_version, hi):
    # every float32 x with exp(x) a finite normal float32: x in [-87.33, 88.72]; the kernels'
    # version is specified up to 88.3 (its arguments are always <= ~0).
    # Every input for the exp the kernels use, in the variant this CPU runs (~2.2e9 values,
    # ~30 s); every 13th input for the others (FASTXENT_FULL_EXP_TEST=1: all of them too).
    full = os.environ.get("FASTXENT_FULL_EXP_TEST", "") not in ("", "0")
    step = 1 if full or (kernel_version and simd == cy.build_info()["simd"]) else 13
    worst = 0.0
    chunk = 1 << 24
    for a, b in _f32_range(-87.33, hi):
        a, b = int(a), int(b)
        for start in range(a, b + 1, chunk * step):
            bits = np.arange(start, min(start + chunk * step, b + 1), step, dtype=np.uint32)
            x = bits.view(np.float32)
            got = np.empty_like(x)
            ext._exp(x, got, kernel_version)
            worst = max(worst, float(_ulp_err_f32(got, x).max()))
    assert worst <= 1.0, worst


def test_exp_float64_within_2ulp_dense_sampling(simd):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-708.3, 709.0, 2_000_000), rng.uniform(-1, 1, 1_000_000),
                        rng.uniform(-30, 0, 1_000_000), np.linspace(-0.35, 0.35, 100_001)])
    want = np.exp(x.astype(np.longdouble))  # 64-bit mantissa on x86: an oracle for float64
    for kernel_version in (True, False):
        got = np.empty_like(x)
        ext._exp(x, got, kernel_version)
        err = np.abs(got.astype(np.longdouble) - want) / np.spacing(want.astype(np.float64))
        assert float(err.max()) <= 2.0, (kernel_version, float(err.max()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_special_values(simd, dtype):
    x = np.array([-np.inf, np.nan, 0.0, -0.0, -1e30, -200.0, -1000.0], dtype)
    for kernel_version in (True, False):
        got = np.full_like(x, 7)
        ext._exp(x, got, kernel_version)
        assert got[0] == 0 and not np.signbit(got[0])
        assert np.isnan(got[1])
        assert got[2] == 1 and got[3] == 1
        assert got[4] == 0 and got[6] == 0
    got = np.empty(3, dtype)
    ext._exp(np.array([np.inf, 1e4, 800.0], dtype), got, False)  # full range: overflow
    assert np.all(got == np.inf)


# ----------------------------------------------------------------- float32 accuracy

def test_float32_loss_at_least_as_accurate_as_numpy_on_wide_rows():
    rng = np.random.default_rng(42)
    n, c = 64, 32768
    x = (rng.standard_normal((n, c)) * 4).astype(np.float32)
    t = rng.integers(0, c, n).astype(np.intp)
    e32, e64 = np.empty(0, np.float32), np.empty(0, np.float64)
    oracle = np.empty(n)
    ref.sparse_forward(x.astype(np.float64), t, e64, 0.0, 0.0, False, 0, oracle, e64, 1)
    errs = {}
    for name, module in [("numpy", ref), ("cython", cy)]:
        loss = np.empty(n, np.float32)
        module.sparse_forward(x, t, e32, 0.0, 0.0, False, 0, loss, e32, 2)
        errs[name] = float(np.median(np.abs(loss.astype(np.float64) - oracle) / oracle))
    assert errs["cython"] <= errs["numpy"], errs
    # the same for the log-sum-exp of the rows (the quantity the sum of exponentials feeds)
    lse_err = {}
    want = np.empty(n)
    ref.logsumexp(x.astype(np.float64), want, 1)
    for name, module in [("numpy", ref), ("cython", cy)]:
        got = np.empty(n, np.float32)
        module.logsumexp(x, got, 2)
        lse_err[name] = float(np.median(np.abs(got.astype(np.float64) - want)))
    assert lse_err["cython"] <= lse_err["numpy"], lse_err


def test_simd_variants_agree(simd):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((50, 777)) * 5).astype(np.float32)
    t = rng.integers(0, 777, 50).astype(np.intp)
    s = np.ones(1, np.float32)
    loss, grad = np.empty(50, np.float32), np.empty_like(x)
    cy.sparse_fused(x, t, np.empty(0, np.float32), 0.1, 1e-3, False, 0, s, loss, grad, 1)
    want_l, want_g = np.empty_like(loss), np.empty_like(grad)
    ref.sparse_fused(x, t, np.empty(0, np.float32), 0.1, 1e-3, False, 0, s, want_l, want_g, 1)
    np.testing.assert_allclose(loss, want_l, rtol=2e-5)
    np.testing.assert_allclose(grad, want_g, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("c", [2, 3, 7, 16, 17])
def test_small_class_path_ignored_rows_with_nan_are_zero(c):
    rng = np.random.default_rng(c)
    n = 300
    x = rng.standard_normal((n, c)).astype(np.float32)
    t = rng.integers(0, c, n).astype(np.intp)
    t[::5] = -100
    x[::5, 0] = np.nan
    s = np.ones(1, np.float32)
    loss, grad = np.empty(n, np.float32), np.empty_like(x)
    nbad = cy.sparse_fused(x, t, np.empty(0, np.float32), 0.1, 0.0, True, -100, s, loss, grad, 2)
    assert nbad == 0
    assert np.all(loss[::5] == 0) and np.all(grad[::5] == 0)
    keep = np.ones(n, bool)
    keep[::5] = False
    assert np.isfinite(loss[keep]).all() and np.isfinite(grad[keep]).all()


# ------------------------------------------------------------- threads and fork

def _problem(seed, n=300, c=2000, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, c)) * 3).astype(dtype)
    t = rng.integers(0, c, n).astype(np.intp)
    return x, t


def _fused(x, t, n_threads):
    loss, grad = np.empty(x.shape[0], x.dtype), np.empty_like(x)
    cy.sparse_fused(x, t, np.empty(0, x.dtype), 0.1, 1e-4, False, 0, np.ones(1, x.dtype),
                    loss, grad, n_threads)
    return loss, grad


def test_many_python_threads_at_once():
    problems = [_problem(seed) for seed in range(8)]
    want = [_fused(x, t, 1) for x, t in problems]
    results = [None] * 8
    errors = []
    barrier = threading.Barrier(8)

    def run(i):
        try:
            barrier.wait()
            for _ in range(5):
                results[i] = _fused(*problems[i], 2)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors
    for (wl, wg), (gl, gg) in zip(want, results):
        np.testing.assert_array_equal(gl, wl)
        np.testing.assert_array_equal(gg, wg)


def _child(q):
    x, t = _problem(7)
    loss, grad = _fused(x, t, 2)
    q.put((loss.tobytes(), grad.tobytes(), cy.build_info()["serial_only_after_fork"]))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_after_parallel_call_does_not_hang():
    x, t = _problem(7)
    loss, grad = _fused(x, t, 2)  # the parent opens OpenMP regions (300 x 2000 is parallel)
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q,))
    p.start()
    try:  # read before join: a child with queued data does not exit until it is read
        lb, gb, serial = q.get(timeout=60)
    except Exception:
        p.kill()
        pytest.fail("the forked child hung in the kernel")
    p.join(30)
    assert p.exitcode == 0
    assert lb == loss.tobytes() and gb == grad.tobytes()
    if cy.build_info()["openmp"]:
        assert serial  # GNU libgomp: the child falls back to serial after a parallel parent


# ---------------------------------------------------------------------- build info

def test_build_info_contents():
    info = cy.build_info()
    for key in ("available", "openmp", "simd", "simd_variants", "compile_flags",
                "bounds_checks", "directives", "cpu_has_avx2_fma", "parallel_min_work"):
        assert key in info, key
    assert info["available"] is True
    assert isinstance(info["openmp"], bool) and isinstance(info["bounds_checks"], bool)
    assert info["simd"] in info["simd_variants"]
    assert "-ffast-math" not in info["compile_flags"]
    if info["cpu_has_avx2_fma"] and "avx2-fma" in info["simd_variants"]:
        best = "avx512" if info["cpu_has_avx512"] else "avx2-fma"
        assert info["simd"] == best or os.environ.get("FASTXENT_SIMD")
    assert cy.why_unavailable() == "" and cy.is_available()


def test_kernels_reject_wrong_arguments_instead_of_crashing():
    x = np.zeros((4, 3), np.float32)
    loss, grad = np.empty(4, np.float32), np.empty((4, 3), np.float32)
    e = np.empty(0, np.float32)
    with pytest.raises((TypeError, ValueError)):
        cy.sparse_fused(x, np.zeros(5, np.intp), e, 0.0, 0.0, False, 0, np.ones(1, np.float32),
                        loss, grad, 1)
    with pytest.raises((TypeError, ValueError)):
        cy.softmax(x, np.empty((4, 3), np.float64), 1)
    ro = np.empty((4, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        cy.softmax(x, ro, 1)


def test_threadpoolctl_limits_our_openmp_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    ext = pytest.importorskip("fastxent._backends._cython._kernels")
    if not ext._build_info()["openmp"]:
        pytest.skip("serial build: no OpenMP threads to limit")
    import fastxent as fx
    fx.sparse_softmax_cross_entropy_with_logits([0], [[1.0, 2.0]], backend="cython")
    apis = {info["user_api"] for info in threadpoolctl.threadpool_info()}
    assert "openmp" in apis
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert ext._omp_limit() == 1  # the cap every parallel region applies
        x = np.random.default_rng(0).standard_normal((4096, 64))
        t = np.zeros(4096, int)
        limited = fx.SparseSoftmaxCrossEntropy(backend="cython", n_threads=2).gradient(t, x)
    assert ext._omp_limit() >= 2 or os.cpu_count() == 1
    np.testing.assert_array_equal(
        limited, fx.SparseSoftmaxCrossEntropy(backend="cython", n_threads=2).gradient(t, x))


# ------------------------------------------------------- wide rows (online max) and small C

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_wide_rows_online_max_matches_reference(simd, dtype):
    """C > 2048: one streaming pass with a running max. Rows whose max rises in a late block,
    start with all -inf blocks, are all -inf, hold NaN/+inf late, or have -inf classes."""
    rng = np.random.default_rng(7)
    n, c = 9, 5000
    x = (rng.standard_normal((n, c)) * 3).astype(dtype)
    x[0, 4999] = 40.0                       # max in the last (partial) block
    x[1, :4100] = -np.inf                   # first blocks all -inf
    x[2, :] = -np.inf                       # all -inf row
    x[3, 3000] = np.nan                     # NaN in a middle block
    x[4, ::3] = -np.inf                     # masked classes: exact zero gradient
    x[5, 10] = 80.0                         # large max early
    x[6, 2100] = np.inf                     # +inf
    t = rng.integers(0, c, n).astype(np.intp)
    t[1] = 4500
    t[4] = 1
    t[7] = -100
    e = np.empty(0, dtype)
    s = np.ones(n, dtype)
    for kwargs in [dict(eps=0.0, z=0.0), dict(eps=0.0, z=1e-3), dict(eps=0.1, z=0.0)]:
        got_l, got_g = np.empty(n, dtype), np.empty_like(x)
        want_l, want_g = np.empty(n, dtype), np.empty_like(x)
        cy.sparse_fused(x, t, e, kwargs["eps"], kwargs["z"], True, -100, s, got_l, got_g, 2)
        ref.sparse_fused(x, t, e, kwargs["eps"], kwargs["z"], True, -100, s, want_l, want_g, 1)
        rtol = 2e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got_l, want_l, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(got_g, want_g, rtol=rtol, atol=rtol * 1e-2)
        if kwargs["eps"] == 0:
            assert np.all(got_g[4, 3::3] == 0)     # -inf classes: exactly 0
        # in place == out of place
        xi = x.copy()
        li = np.empty(n, dtype)
        cy.sparse_fused(xi, t, e, kwargs["eps"], kwargs["z"], True, -100, s, li, xi, 2)
        np.testing.assert_array_equal(li, got_l)
        np.testing.assert_array_equal(xi, got_g)
    got_l, got_lse = np.empty(n, dtype), np.empty(n, dtype)
    want_l, want_lse = np.empty(n, dtype), np.empty(n, dtype)
    cy.sparse_forward(x, t, e, 0.0, 0.0, True, -100, got_l, got_lse, 2)
    ref.sparse_forward(x, t, e, 0.0, 0.0, True, -100, want_l, want_lse, 1)
    np.testing.assert_allclose(got_lse, want_lse, rtol=2e-6 if dtype == np.float32 else 1e-13)
    np.testing.assert_allclose(got_l, want_l, rtol=2e-5 if dtype == np.float32 else 1e-12)
    out = np.empty(n, dtype)
    cy.logsumexp(x, out, 1)
    np.testing.assert_allclose(out, want_lse, rtol=2e-6 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("c", list(range(2, 17)))
@pytest.mark.parametrize("n", [1, 15, 16, 17, 130, 300])
def test_small_class_path_matches_reference(simd, c, n):
    """The C <= 16 path (vectorised across rows: partial groups of 16, partial blocks),
    with class weights, label smoothing, z-loss, per-row scale, bad and ignored labels."""
    rng = np.random.default_rng(100 * c + n)
    x = (rng.standard_normal((n, c)) * 3).astype(np.float32)
    x[::7, 0] = -np.inf
    t = rng.integers(0, c, n).astype(np.intp)
    t[::11] = -100
    cw = rng.uniform(0.5, 2.0, c).astype(np.float32)
    s = rng.uniform(0.5, 2.0, n).astype(np.float32)
    for eps, z, w in [(0.0, 0.0, np.empty(0, np.float32)), (0.1, 1e-3, cw)]:
        got_l, got_g = np.empty(n, np.float32), np.empty_like(x)
        want_l, want_g = np.empty(n, np.float32), np.empty_like(x)
        nb = cy.sparse_fused(x, t, w, eps, z, True, -100, s, got_l, got_g, 2)
        ref.sparse_fused(x, t, w, eps, z, True, -100, s, want_l, want_g, 1)
        assert nb == 0
        np.testing.assert_allclose(got_l, want_l, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(got_g, want_g, rtol=2e-5, atol=1e-6)
    tb = t.copy()
    tb[::5] = c                              # out of range, not ignored: counted
    tb[1::9] = -3
    nbad_want = int(np.sum((tb < 0) | (tb >= c)) - np.sum(tb == -100))
    got_l, got_g = np.empty(n, np.float32), np.empty_like(x)
    nb = cy.sparse_fused(x, tb, np.empty(0, np.float32), 0.0, 0.0, True, -100, s[:1], got_l,
                         got_g, 2)
    assert nb == nbad_want
    lse = np.empty(n, np.float32)
    want = np.empty(n, np.float32)
    cy.sparse_forward(x, t, np.empty(0, np.float32), 0.0, 0.0, True, -100, got_l, lse, 1)
    ref.logsumexp(x, want, 1)
    np.testing.assert_allclose(lse, want, rtol=2e-6, atol=1e-6)
