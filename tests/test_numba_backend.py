"""Numba-backend specifics: exp accuracy, accuracy of wide rows, threads, fork, cache.

The contract itself (agreement with the NumPy reference) is tests/test_kernels.py.
"""

import multiprocessing
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

numba = pytest.importorskip("numba")

from fastxent import _registry  # noqa: E402
from fastxent._backends import numpy_ as ref  # noqa: E402

nb = _registry.load("numba")
if nb is None:
    pytest.skip(f"numba backend unavailable: {_registry.why('numba')}", allow_module_level=True)

from fastxent._backends import _numba_kernels as _k  # noqa: E402
from fastxent._backends._numba_math import fexp, fexp_neg, flog_t  # noqa: E402

_EXACT = {"nsz", "arcp", "contract"}


@numba.njit(parallel=True, fastmath=_EXACT, error_model="numpy")
def _f32_exp_max_ulp(lo_bits, hi_bits, sign):
    """Max ulp error of the float32 exp over every float32 with bits in [lo_bits, hi_bits].

    Reference: the float64 exp (tested to <= 2 ulp of float64 below) rounded to float32.
    """
    n = hi_bits - lo_bits + 1
    n_chunks = 1024
    worst = np.zeros(n_chunks, np.int64)
    for k in numba.prange(n_chunks):
        a = lo_bits + k * n // n_chunks
        b = lo_bits + (k + 1) * n // n_chunks
        w = 0
        for bits in range(a, b):
            x = np.uint32(bits | sign).view(np.float32)
            got = fexp(x)
            want = np.float32(fexp(np.float64(x)))
            d = abs(np.int64(np.float32(got).view(np.int32)) - np.int64(want.view(np.int32)))
            if d > w:
                w = d
        worst[k] = w
    return worst.max()


def _f32_bits(v):
    return int(np.array(v, np.float32).view(np.uint32))


def test_exp_float32_every_input_within_one_ulp():
    # Every float32 whose exp is finite and normal: x in [log(FLT_MIN), log(FLT_MAX)].
    lo, hi = np.float32(-87.33654), np.float32(88.72283)
    assert _f32_exp_max_ulp(0, _f32_bits(hi), 0) <= 1
    assert _f32_exp_max_ulp(0, _f32_bits(-lo), 0x80000000) <= 1


@numba.njit(error_model="numpy")
def _apply_exp(x, out):
    for i in range(x.size):
        out[i] = fexp(x[i])


@numba.njit(parallel=True, fastmath=_EXACT, error_model="numpy")
def _f32_exp_neg_max_ulp(lo_bits, hi_bits):
    """fexp_neg against fexp over every negative float32 with bits in [lo_bits, hi_bits]."""
    n = hi_bits - lo_bits + 1
    n_chunks = 256
    worst = np.zeros(n_chunks, np.int64)
    for k in numba.prange(n_chunks):
        w = 0
        for bits in range(lo_bits + k * n // n_chunks, lo_bits + (k + 1) * n // n_chunks):
            x = np.uint32(bits | 0x80000000).view(np.float32)
            a = np.float32(fexp_neg(x)).view(np.int32)
            b = np.float32(fexp(x)).view(np.int32)
            d = abs(np.int64(a) - np.int64(b))
            if d > w:
                w = d
        worst[k] = w
    return worst.max()


@numba.njit(error_model="numpy")
def _apply_exp_neg(x, out):
    for i in range(x.size):
        out[i] = fexp_neg(x[i])


def test_exp_neg_matches_exp_over_the_normal_range():
    # fexp_neg (arguments <= 0) shares fexp's reduction and polynomial: same bits wherever
    # the result is normal, 0 below, -inf -> 0, NaN -> NaN.
    assert _f32_exp_neg_max_ulp(0, _f32_bits(87.33654)) == 0
    for dtype, lo in [(np.float32, -87.33654), (np.float64, -708.39641853226)]:
        x = np.concatenate([-np.random.default_rng(5).uniform(0, -lo, 200_000),
                            [0.0, -0.0, lo, -1e4, -np.inf, np.nan]]).astype(dtype)
        got, want = np.empty_like(x), np.empty_like(x)
        _apply_exp_neg(x, got)
        _apply_exp(x, want)
        normal = x >= dtype(lo)
        np.testing.assert_array_equal(got[normal], want[normal])
        assert np.all(got[x < dtype(lo)] == 0) and np.isnan(got[-1])
        below = np.nextafter(dtype(lo), dtype(-np.inf), dtype=dtype)
        tiny = np.array([below, -np.inf], dtype)
        _apply_exp_neg(tiny, tiny)
        assert np.all(tiny == 0) and not np.any(np.signbit(tiny))


def _ulp64(a, b):
    """ulp distance of positive float64 arrays (their bit patterns are ordered)."""
    return np.abs(a.view(np.int64) - b.view(np.int64))


def test_exp_float64_within_two_ulp_sampled():
    rng = np.random.default_rng(0)
    x = np.concatenate([
        rng.uniform(-708.3, 709.7, 2_000_000),
        rng.uniform(-1, 1, 500_000),
        rng.uniform(-1e-6, 1e-6, 100_000),
        np.arange(-700, 700, 0.5 * np.log(2)),  # around the range-reduction boundaries
    ])
    got = np.empty_like(x)
    _apply_exp(x, got)
    want = np.exp(x.astype(np.longdouble)).astype(np.float64)
    assert _ulp64(got, want).max() <= 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_special_values(dtype):
    x = np.array([-np.inf, np.inf, np.nan, -1e4, 1e4, 0.0, -0.0], dtype)
    got = np.empty_like(x)
    _apply_exp(x, got)
    assert got[0] == 0 and got[0].view(np.uint32 if dtype == np.float32 else np.uint64) == 0
    assert got[1] == np.inf and np.isnan(got[2]) and got[3] == 0 and got[4] == np.inf
    assert got[5] == 1 and got[6] == 1
    # gradual underflow instead of garbage below the normal range
    tiny = np.array([-87.5, -100.0] if dtype == np.float32 else [-709.0, -740.0], dtype)
    out = np.empty_like(tiny)
    _apply_exp(tiny, out)
    want = np.exp(tiny.astype(np.longdouble)).astype(dtype)
    assert np.all(np.abs(out - want) <= np.finfo(dtype).smallest_subnormal * 2)


@numba.njit(error_model="numpy")
def _apply_log(x, out):
    for i in range(x.size):
        out[i] = flog_t(x[i])


def test_float32_log_within_three_ulp_sampled():
    """flog_t on float32 (the small-C kernels' log of the row sums) against float64 log."""
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.uniform(1, 70, 1_000_000), rng.uniform(0, 1, 100_000),
                        10 ** rng.uniform(-37, 38, 100_000)]).astype(np.float32)
    got = np.empty_like(x)
    _apply_log(x, got)
    want = np.log(x.astype(np.float64)).astype(np.float32)
    assert np.abs(got.view(np.int32).astype(np.int64) - want.view(np.int32)).max() <= 3
    sp = np.array([0.0, np.inf, -1.0, np.nan, 1.0], np.float32)
    _apply_log(sp, sp)
    assert sp[0] == -np.inf and sp[1] == np.inf and np.isnan(sp[2]) and np.isnan(sp[3])
    assert sp[4] == 0


@pytest.mark.parametrize("kind", ["sparse", "dense"])
def test_float32_wide_rows_at_least_as_accurate_as_numpy(kind):
    rng = np.random.default_rng(1)
    shape = (64, 32768)
    x = (rng.standard_normal(shape) * 2).astype(np.float32)
    t = rng.integers(0, shape[1], shape[0]).astype(np.intp)
    y = rng.random(shape).astype(np.float32)
    y /= y.sum(axis=1, keepdims=True)
    e32 = np.empty(0, np.float32)

    def run(module, xx, yy, ee):
        loss, lse = np.empty(shape[0], xx.dtype), np.empty(shape[0], xx.dtype)
        if kind == "sparse":
            module.sparse_forward(xx, t, ee, 0.1, 1e-3, False, 0, loss, lse, 2)
        else:
            module.dense_forward(xx, yy, ee, 0.1, 1e-3, loss, lse, 2)
        return loss.astype(np.float64), lse.astype(np.float64)

    oracle = run(ref, x.astype(np.float64), y.astype(np.float64), np.empty(0))
    for got, want_ref, exact in zip(run(nb, x, y, e32), run(ref, x, y, e32), oracle):
        err_nb = np.median(np.abs(got - exact))
        err_ref = np.median(np.abs(want_ref - exact))
        assert err_nb <= err_ref, (err_nb, err_ref)


def _problem(shape=(512, 1000), dtype=np.float32, seed=3):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    t = rng.integers(0, shape[1], shape[0]).astype(np.intp)
    return x, t


def _fused(x, t, n_threads):
    loss, grad = np.empty(x.shape[0], x.dtype), np.empty_like(x)
    s = np.ones(1, x.dtype)
    nb.sparse_fused(x, t, np.empty(0, x.dtype), 0.1, 1e-4, True, 0, s, loss, grad, n_threads)
    return loss, grad


def test_eight_python_threads_at_once_are_correct():
    assert nb.SERIAL_WORK <= 512 * 1000  # the problem below takes the parallel path
    x, t = _problem()
    want = _fused(x, t, 1)
    errors = []
    barrier = threading.Barrier(8)

    def worker():
        try:
            barrier.wait()
            for _ in range(10):
                got = _fused(x, t, 2)
                np.testing.assert_array_equal(got[0], want[0])
                np.testing.assert_array_equal(got[1], want[1])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors


def _child(conn):
    x, t = _problem()
    loss, grad = _fused(x, t, 2)
    conn.send((loss, grad))
    conn.close()


@pytest.mark.skipif(sys.platform == "win32", reason="no fork on Windows")
def test_fork_after_a_parallel_call_works_in_the_child():
    x, t = _problem()
    want = _fused(x, t, 2)  # starts the parallel threading layer in the parent
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(child,))
    proc.start()
    assert parent.poll(120), "forked child did not answer"
    loss, grad = parent.recv()
    proc.join(30)
    assert proc.exitcode == 0
    np.testing.assert_array_equal(loss, want[0])
    np.testing.assert_array_equal(grad, want[1])
    # and the parent still works after the fork
    np.testing.assert_array_equal(_fused(x, t, 2)[1], want[1])


def test_results_do_not_depend_on_threads_or_the_serial_cut():
    # the small-C shapes run blocks of rows; (70000, 3) has a partial last block
    for shape in [(3, 70000), (40, 4099), (300, 130), (70000, 3), (5000, 16), (3000, 11)]:
        x, t = _problem(shape, seed=4)
        runs = [_fused(x, t, n) for n in (1, 2, 8)]
        for other in runs[1:]:
            np.testing.assert_array_equal(runs[0][1], other[1])
            np.testing.assert_array_equal(runs[0][0], other[0])


@pytest.mark.parametrize("shape", [(70000, 3), (700, 16), (1, 2), (300, 130)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_classes_in_place_same_bits_and_dropped_rows(shape, dtype):
    x, t = _problem(shape, dtype=dtype, seed=6)
    t[::5] = 0  # ignored (ignore_index 0 below)
    t[1::7] = shape[1] + 3  # out of range: counted, treated as dropped
    x[2::11, 0] = -np.inf
    cw = np.linspace(0.5, 1.5, shape[1]).astype(dtype)
    s = np.linspace(0.1, 2, shape[0]).astype(dtype)
    for n_threads in (1, 2):
        loss, grad = np.empty(shape[0], dtype), np.empty(shape, dtype)
        bad = nb.sparse_fused(x, t, cw, 0.1, 1e-3, True, 0, s, loss, grad, n_threads)
        xi = x.copy()
        loss2 = np.empty(shape[0], dtype)
        bad2 = nb.sparse_fused(xi, t, cw, 0.1, 1e-3, True, 0, s, loss2, xi, n_threads)
        assert bad == bad2 == int(np.count_nonzero(t[t != 0] >= shape[1]))
        np.testing.assert_array_equal(loss, loss2)
        np.testing.assert_array_equal(grad, xi)
        dropped = (t == 0) | (t >= shape[1])
        assert np.all(loss[dropped] == 0) and np.all(grad[dropped] == 0)
        want_l, want_g = np.empty_like(loss), np.empty_like(grad)
        ref.sparse_fused(x, t, cw, 0.1, 1e-3, True, 0, s, want_l, want_g, 1)
        tol = 2e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(loss, want_l, rtol=tol, atol=tol)
        np.testing.assert_allclose(grad, want_g, rtol=tol, atol=tol)


@pytest.mark.parametrize("n_classes, kernel", [(100, "sparse_fused_ser"), (5, "sparse_small_ser")])
def test_kernels_are_cached_on_disk(n_classes, kernel):
    assert (n_classes <= nb.SMALL_C) == (kernel == "sparse_small_ser")
    x, t = _problem((4, n_classes))
    _fused(x, t, 1)
    disp = getattr(_k, kernel)
    cache = disp._cache
    assert cache is not None and type(cache).__name__ != "NullCache"
    assert os.path.exists(cache._cache_file._index_path)
    # a fresh process finds the machine code instead of compiling it
    code = ("import numpy as np; from fastxent._backends import numba_ as nb, _numba_kernels "
            f"as k; x = np.zeros((4, {n_classes}), np.float32); t = np.zeros(4, np.intp); "
            "nb.sparse_fused(x, t, np.empty(0, np.float32), 0.1, 1e-4, True, 0, "
            f"np.ones(1, np.float32), np.empty(4, np.float32), np.empty((4, {n_classes}), "
            "np.float32), 1);"
            f"print(sum(k.{kernel}.stats.cache_hits.values()), "
            f"sum(k.{kernel}.stats.cache_misses.values()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=600).stdout.split()
    assert out == ["1", "0"], out


def test_cache_goes_to_numba_cache_dir_when_set(tmp_path):
    """The fallback used where site-packages is read-only (or chosen explicitly)."""
    code = ("import numpy as np; from fastxent._backends import numba_ as nb; "
            "x = np.zeros((2, 3)); nb.logsumexp(x, np.empty(2), 1)")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=600)
    assert any(name.endswith(".nbi") for _, _, files in os.walk(tmp_path) for name in files)


def test_import_compiles_nothing():
    code = ("import sys, fastxent; "
            "print('numba' in sys.modules, 'fastxent._backends.numba_' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    assert out == ["False", "False"]
