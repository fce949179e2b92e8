"""What only the compiled backends have: instruction-set tiers, the non-x86 build guard, OpenMP
and Numba threads (several Python threads at once, fork, threadpoolctl), the build report,
the Numba cache, and accuracy against NumPy on wide rows."""

import multiprocessing
import os
import shutil
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from fastxent import _backends as K
from fastxent import _registry
from fastxent._backends import kernel_call
from fastxent._backends import numpy_ as ref

from .conftest import REQUIRED

HERE = os.path.dirname(os.path.abspath(__file__))
CYTHON_DIR = os.path.join(HERE, os.pardir, "src", "fastxent", "_backends", "_cython")


def _need(name):
    module = _registry.load(name)
    if module is None:
        if name in REQUIRED:
            pytest.fail(f"backend {name!r} is required here but unavailable: "
                        f"{_registry.why(name)}")
        pytest.skip(f"{name} unavailable: {_registry.why(name)}")
    return module


@pytest.fixture(params=["cython", "numba"])
def compiled(request):
    return _need(request.param)


def _fused(module, x, t, n_threads, **kw):
    loss, grad = np.empty(x.shape[0], x.dtype), np.empty_like(x)
    module.run(kernel_call(K.SOFTMAX, x, t=t, eps=0.1, z=1e-4, loss=loss, grad=grad, **kw),
               n_threads)
    return loss, grad


def _problem(seed, n=300, c=2000, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, c)) * 3).astype(dtype), rng.integers(0, c, n)


# ----------------------------------------------------------------- accuracy on wide rows

def test_float32_at_least_as_accurate_as_numpy_on_wide_rows(compiled):
    rng = np.random.default_rng(42)
    n, c = 64, 32768
    x = (rng.standard_normal((n, c)) * 4).astype(np.float32)
    t = rng.integers(0, c, n)
    oracle = np.empty(n)
    ref.run(kernel_call(K.SOFTMAX, x.astype(np.float64), t=t, loss=oracle), 1)
    want_lse = np.empty(n)
    ref.run(kernel_call(K.LOGSUMEXP, x.astype(np.float64), grad=want_lse), 1)
    errs, lse_errs = {}, {}
    for name, module in (("numpy", ref), ("compiled", compiled)):
        loss, lse = np.empty(n, np.float32), np.empty(n, np.float32)
        module.run(kernel_call(K.SOFTMAX, x, t=t, loss=loss, lse_out=lse), 2)
        errs[name] = float(np.median(np.abs(loss.astype(np.float64) - oracle) / oracle))
        lse_errs[name] = float(np.median(np.abs(lse.astype(np.float64) - want_lse)))
    assert errs["compiled"] <= errs["numpy"] * 1.05, errs
    assert lse_errs["compiled"] <= lse_errs["numpy"] * 1.05, lse_errs


def test_float32_sigmoid_at_least_as_accurate_as_numpy(compiled):
    rng = np.random.default_rng(43)
    x = (rng.standard_normal((64, 4096)) * 4).astype(np.float32)
    y = rng.random((64, 4096)).astype(np.float32)
    oracle = np.empty(x.shape)
    ref.run(kernel_call(K.SIGMOID, x.astype(np.float64), y=y.astype(np.float64), loss=oracle), 1)
    errs = {}
    for name, module in (("numpy", ref), ("compiled", compiled)):
        loss = np.empty(x.shape, np.float32)
        module.run(kernel_call(K.SIGMOID, x, y=y, loss=loss), 2)
        rel = np.abs(loss.astype(np.float64) - oracle) / np.abs(oracle)
        errs[name] = (float(np.median(rel)), float(np.max(rel)))
    assert errs["compiled"][0] <= errs["numpy"][0] * 1.05, errs
    assert errs["compiled"][1] <= errs["numpy"][1] * 1.05, errs


# ------------------------------------------------------------------- instruction tiers

def test_every_tier_this_cpu_runs_agrees_with_the_reference():
    # FASTXENT_SIMD caps the tier at import, so each tier runs in its own process
    cy = _need("cython")
    code = textwrap.dedent("""
        import numpy as np, sys
        from fastxent._backends import cython_, numpy_, kernel_call, SOFTMAX
        rng = np.random.default_rng(3)
        for c in (3, 777, 5000):
            x = (rng.standard_normal((50, c)) * 5).astype(np.float32)
            t = rng.integers(0, c, 50)
            out = []
            for m in (cython_, numpy_):
                loss, grad = np.empty(50, np.float32), np.empty_like(x)
                m.run(kernel_call(SOFTMAX, x, t=t, eps=0.1, z=1e-3, loss=loss, grad=grad), 2)
                out.append((loss, grad))
            np.testing.assert_allclose(out[0][0], out[1][0], rtol=3e-5)
            np.testing.assert_allclose(out[0][1], out[1][1], rtol=3e-5, atol=1e-7)
        print(cython_.build_info()["simd"])
    """)
    supported = cy.build_info()["simd_supported"]
    for tier in supported:
        env = dict(os.environ, FASTXENT_SIMD=tier)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == tier


def test_portable_build_without_x86(tmp_path):
    # the guard: with no x86 predefined macro, the generated tiers are left out and the
    # portable code compiles on its own (what happens on aarch64, ppc64le, ...); the headers
    # are generated here from the same table setup.py uses
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("needs gcc")
    sys.path.insert(0, CYTHON_DIR)
    try:
        import _variants
    finally:
        sys.path.pop(0)
    from fastxent._backends import _mathdef
    for name in ("fxe_kernels.h", "fxe_math.h", "fxe_params.h", "fxe_rows.h", "fxe_runner.h"):
        shutil.copy(os.path.join(CYTHON_DIR, name), tmp_path)
    (tmp_path / "fxe_variants.h").write_text(_variants.c_source())
    (tmp_path / "fxe_consts.h").write_text(_mathdef.c_header())
    # the C library's headers first (they need the real target), then the kernels as a
    # compiler for another architecture would see them: no x86 macro, no SSE
    (tmp_path / "probe.c").write_text(
        "#include <stddef.h>\n#include <stdint.h>\n#include <stdlib.h>\n#include <string.h>\n"
        "#include <math.h>\n#undef __x86_64__\n#undef __i386__\n#undef __SSE2__\n"
        '#include "fxe_kernels.h"\n'
        "int main(void) { fxe_select(2); return fxe_active_tier != 0 || FXE_X86_TIERS != 0; }\n")
    out = subprocess.run([gcc, "-O1", "-Wno-builtin-macro-redefined", "-I", str(tmp_path),
                          str(tmp_path / "probe.c"), "-o", str(tmp_path / "probe"), "-lm"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert subprocess.run([str(tmp_path / "probe")]).returncode == 0


def test_build_info_contents():
    cy = _need("cython")
    info = cy.build_info()
    for key in ("available", "openmp", "simd", "simd_tiers", "simd_supported", "compile_flags",
                "directives", "small_class_path_max_c"):
        assert key in info, key
    assert info["simd"] in info["simd_supported"]
    assert "-ffast-math" not in info["compile_flags"]
    if not os.environ.get("FASTXENT_SIMD"):
        assert info["simd"] == info["simd_supported"][-1]


def test_the_record_is_checked_before_any_memory_is_read():
    cy = _need("cython")
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="kernel contract violated by t"):
        cy.run(kernel_call(K.SOFTMAX, x, t=np.zeros(5, np.intp), loss=np.empty(4, np.float32)),
               1)
    with pytest.raises(ValueError, match="kernel contract violated by grad"):
        cy.run(kernel_call(K.SOFTMAX_PROB, x, grad=np.empty((4, 3), np.float64)), 1)
    ro = np.empty((4, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="kernel contract violated by grad"):
        cy.run(kernel_call(K.SOFTMAX_PROB, x, grad=ro), 1)
    with pytest.raises(ValueError, match="labels are absent"):
        cy.run(kernel_call(K.SOFTMAX, x, loss=np.empty(4, np.float32)), 1)


# ------------------------------------------------------------------- threads and fork

def test_many_python_threads_at_once(compiled):
    problems = [_problem(seed) for seed in range(8)]
    want = [_fused(compiled, x, t, 1) for x, t in problems]
    results, errors = [None] * 8, []
    barrier = threading.Barrier(8)

    def run(i):
        try:
            barrier.wait()
            for _ in range(5):
                results[i] = _fused(compiled, *problems[i], 2)
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


def _child(name, q):
    module = _registry.load(name)
    x, t = _problem(7)
    loss, grad = _fused(module, x, t, 2)
    q.put((loss.tobytes(), grad.tobytes()))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_after_a_parallel_call():
    cy = _need("cython")
    x, t = _problem(7)
    loss, grad = _fused(cy, x, t, 2)  # the parent opens OpenMP regions
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=("cython", q))
    p.start()
    try:  # read before join: a child with queued data does not exit until it is read
        lb, gb = q.get(timeout=60)
    except Exception:
        p.kill()
        pytest.fail("the forked child hung in the kernel")
    p.join(30)
    assert p.exitcode == 0
    assert lb == loss.tobytes() and gb == grad.tobytes()


def test_threadpoolctl_limits_the_openmp_threads():
    # the kernels cap n_threads at the OpenMP runtime's limit, which threadpoolctl sets
    threadpoolctl = pytest.importorskip("threadpoolctl")
    cy = _need("cython")
    if not cy.build_info()["openmp"]:
        pytest.skip("serial build: no OpenMP threads to limit")
    from fastxent._backends._cython import _kernels
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert _kernels._omp_limit() == 1
    if os.cpu_count() and os.cpu_count() > 1:
        with threadpoolctl.threadpool_limits(2, user_api="openmp"):
            assert _kernels._omp_limit() == 2


# ------------------------------------------------------------------------- Numba specifics

def test_numba_kernels_are_cached_in_numba_cache_dir(tmp_path):
    _need("numba")
    code = ("import numpy as np, fastxent as fx;"
            "fx.sparse_softmax_cross_entropy_with_logits([0], np.zeros((1, 5)), "
            "backend='numba')")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert any(f.endswith(".nbi") for _, _, fs in os.walk(tmp_path) for f in fs)


def test_numba_without_any_writable_cache_still_works_and_says_why():
    # A read-only install with no writable user cache (simulated: Numba finds no cache
    # locator). 0.1 lost the backend with the hint "install numba".
    _need("numba")
    code = ("import warnings, numba.core.caching as c; c.CacheImpl._locator_classes = [];"
            "import numpy as np, fastxent as fx;"
            "print(fx.sparse_softmax_cross_entropy_with_logits([0], np.zeros((1, 4)), "
            "backend='numba')[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) == pytest.approx(np.log(4))
    assert out.stderr.count("no writable cache directory") == 1
    assert "NUMBA_CACHE_DIR" in out.stderr


def test_import_compiles_nothing_and_loads_no_backend():
    code = ("import sys, fastxent;"
            "print(sorted(m for m in sys.modules if m.startswith(('numba', 'fastxent._back'))"
            " and m != 'fastxent._backends'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------- contention

def test_cython_contention_rule():
    """A join that waits past 0.3 ms and two of the master's tasks means a team thread was
    descheduled (the next calls then run on one thread); a wait of one long task is not."""
    late = _need("cython")._ext._team_was_late
    assert not late(20e-6, 1e-3, 10)        # an idle machine: the join waits microseconds
    assert late(3e-3, 1e-3, 10)             # a time slice away
    assert not late(3e-3, 20e-3, 5)         # 4 ms tasks (huge rows): one task's wait
    assert not late(250e-6, 10e-6, 10)      # below the absolute threshold


def test_numba_contention_rule():
    _need("numba")
    from fastxent._backends import _numba_loops as L
    tick = 1_000_000                        # ticks per ms (any unit works)

    def team(*workers):                     # (tasks, first start, last end) per worker
        counts = np.zeros((len(workers), L.NCOUNT + 3), np.int64)
        for w, row in enumerate(workers):
            counts[w, L.NCOUNT:] = row
        return counts
    late = 0.3 * tick
    balanced = team((8, 0, 4 * tick), (8, 0, 4 * tick + 20_000))
    assert L.late_team(balanced, 16, late) == 0
    assert L.late_team(team((16, 0, 8 * tick), (0, 0, 0)), 16, late) == 1   # never came
    assert L.late_team(team((10, 0, 5 * tick), (6, 0, 9 * tick)), 16, late) == 1  # join waited
    assert L.late_team(team((1, 0, 4 * tick), (1, 0, 6 * tick)), 2, late) == 0   # long tasks
    assert L.late_team(team((8, 0, 4 * tick), (8, 0, 4 * tick)), 16, 0) == 0     # no clock


# ------------------------------------------------------------------------- Ctrl-C

def test_ctrl_c_stops_a_long_call_between_blocks(backend):
    # 0.1 raised a SIGINT only when the kernel finished (14 s later on 2.2e9 elements). Now
    # every backend runs long calls in blocks (~2^24 elements compiled, 2^20 NumPy) and
    # takes signals between them: an interrupt 5 ms into the call stops it after the block
    # in progress, outputs partly written, and the process stays usable.
    import signal

    import fastxent as fx
    n, C = 4096, 16384          # 4 blocks on the compiled backends, 64 on NumPy
    x = np.zeros((n, C), np.float32)
    t = np.zeros(n, np.intp)
    g = np.full((n, C), np.nan, np.float32)
    loss = fx.SparseSoftmaxCrossEntropy(reduction="sum", backend=backend, n_threads=2)
    loss.loss_gradient(t[:1024], x[:1024])   # compiled / loaded before the clock starts

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    def interrupted_call():
        g[...] = np.nan
        old = signal.signal(signal.SIGALRM, interrupt)
        try:
            with pytest.raises(KeyboardInterrupt):  # armed inside: caught wherever it lands
                signal.setitimer(signal.ITIMER_REAL, 0.005)
                loss.loss_gradient(t, x, gradient_out=g)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    # A busy machine can hold the test off the CPU for more than the 5 ms between arming the
    # timer and the call's first block: the interrupt then lands before the kernel starts
    # (nothing written). Try again until it lands inside the call.
    for _ in range(5):
        interrupted_call()
        if backend == "numpy" or np.isfinite(g[0, 0]):
            break
    assert np.isnan(g[-1, -1]), "the call ran to its end"
    if backend != "numpy":   # NumPy's Python code is interruptible anywhere, even in block 1
        assert np.isfinite(g[0, 0]), "stopped inside a block, not between blocks"
    value, grad = loss.loss_gradient(t[:8], x[:8, :4])
    assert value == pytest.approx(8 * np.log(4)) and grad[0, 0] == pytest.approx(-0.75)


def test_info_names_why_the_build_skipped_the_extension():
    # pip hides a successful build's output: setup.py records why it skipped the extension
    # (e.g. Cython missing in a --no-build-isolation developer install) and info says so.
    import json
    import pathlib

    import fastxent
    status = pathlib.Path(fastxent.__file__).parent / "_data" / "build_status.json"
    old = status.read_text() if status.exists() else None
    code = ("import sys; sys.modules['fastxent._backends._cython._kernels'] = None;"
            "from fastxent._backends import cython_; print(cython_.why_unavailable())")
    try:
        status.write_text(json.dumps({"cython_skipped": "Cython is not installed"}))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60)
        assert "the build skipped it: Cython is not installed" in out.stdout, out.stderr
        assert "pip install cython" in out.stdout
        status.write_text(json.dumps({"cython_skipped": None}))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60)
        assert "could not be imported" in out.stdout and "skipped" not in out.stdout
    finally:
        if old is None:
            status.unlink()
        else:
            status.write_text(old)
