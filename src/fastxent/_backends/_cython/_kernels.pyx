# cython: language_level=3
"""Compiled kernels of the fastxent ``cython`` backend: one entry point, :func:`run`.

``run(call, n_threads)`` reads a ``fastxent._backends.KernelCall`` by position into a C
``fxe_params`` record and runs the row kernels of the active instruction-set tier
(fxe_kernels.h) over the rows, in parallel with OpenMP when ``n_threads > 1``. Long calls are
cut into super-blocks of about 16M elements between which the GIL is taken back to check for
signals (Ctrl-C stops a call within ~0.1 s; outputs are then partly written). Compiler
directives come from the table in setup.py.

The ABI guards below check what memory safety needs (dtype, dimensions, contiguity and the
shape of every array against ``x``); they are not the user-facing validation, which happens
once at the boundary (``fastxent._boundary``), and they cost ~10 ns per array.
"""

import os

cimport numpy as cnp
from cpython.exc cimport PyErr_CheckSignals

cnp.import_array()

cdef extern from "fxe_kernels.h" nogil:
    ctypedef Py_ssize_t fxe_ssize
    enum:
        FXE_N_DIAG
        FXE_N_TIERS
        FXE_SMALL_C
        FXE_SB
        FXE_SOFTMAX, FXE_HESSP, FXE_LABEL_GRAD, FXE_SIGMOID, FXE_SIGMOID_LABEL_GRAD
        FXE_LOGSUMEXP, FXE_LOG_SOFTMAX, FXE_SOFTMAX_PROB
    ctypedef struct fxe_counts:
        fxe_ssize nbad
        int failed
        fxe_ssize diag[8]
        fxe_ssize first[8]
    ctypedef struct fxe_params:
        const void *x
        const void *y
        const fxe_ssize *t
        const void *cw
        const void *rs
        const void *lse_in
        const void *coef_in
        const void *v
        void *loss
        void *grad
        void *lse_out
        fxe_ssize n, C, y_rows
        int family, has_ignore, shard, rs_elem, loss_2d, want_total, check, mode
        fxe_ssize ignore_index
        double eps, epsc, z, softcap, gscale, sum_cw, prob_tol, label_tol
    ctypedef double (*fxe_kernel)(const fxe_params *, fxe_ssize, fxe_ssize, void *,
                                  fxe_counts *) noexcept nogil
    int fxe_select(int want)
    int fxe_tier_supported(int k)
    const char *fxe_tier_names[]
    fxe_kernel fxe_plan(const fxe_params *p, int is64, fxe_ssize *task, size_t *scratch)
    double fxe_run(fxe_kernel fn, const fxe_params *p, fxe_ssize r0, fxe_ssize r1,
                   fxe_ssize task, int nthreads, size_t scratch_bytes, fxe_counts *cn)
    void fxe_counts_init(fxe_counts *c)
    float fxe_expf_neg(float x)
    double fxe_exp_neg(double x)
    float fxe_expf(float x)
    double fxe_exp(double x)
    float fxe_logf(float x)
    double fxe_log(double x)
    float fxe_log1pf(float x)
    double fxe_log1p(double x)
    float fxe_log1pf_unit(float x)
    double fxe_log1p_unit(double x)
    float fxe_expm1f_neg(float x)
    double fxe_expm1_neg(double x)
    const char *FXE_BUILD_FLAGS
    const char *FXE_BUILD_DIRECTIVES
    int FXE_OPENMP
    int fxe_omp_max_threads()
    double fxe_serial_left(long *spells)
    int fxe_team_was_late(double wait, double master_work, fxe_ssize master_tasks)

from .. import DIAG, Status

#: Elements per super-block between signal checks (~5-50 ms of work).
cdef fxe_ssize SUPER_ELEMS = 1 << 24

cdef bint _omp_used = False       # this process has opened an OpenMP region
cdef bint _serial_only = False    # forked child of such a process: never open one
cdef int _tier = 0


def _after_fork_in_child():
    # GNU libgomp keeps its thread pool's bookkeeping across fork() but not the threads: a
    # child of a process that used OpenMP threads can hang in its first parallel region.
    # Such a child runs every kernel on one thread (same results: they never depend on the
    # thread count). FASTXENT_OMP_AFTER_FORK=1 keeps OpenMP in children (for a fork-safe
    # OpenMP runtime; also how the tests observe the runtime's own behaviour).
    global _serial_only
    if _omp_used and os.environ.get("FASTXENT_OMP_AFTER_FORK", "") in ("", "0"):
        _serial_only = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ------------------------------------------------------------------ ABI guards

cdef inline const void *_arr(object a, int typenum, Py_ssize_t d0, Py_ssize_t d1,
                             bint out, str name) except? NULL:
    """The data of an array of typenum and shape (d0,) / (d0, d1) (d1 < 0: 1-D), C-contiguous
    (and writeable for an output); NULL for None."""
    if a is None:
        return NULL
    cdef cnp.ndarray arr = <cnp.ndarray?>a
    cdef int nd = 1 if d1 < 0 else 2
    if (cnp.PyArray_TYPE(arr) != typenum or cnp.PyArray_NDIM(arr) != nd
            or not cnp.PyArray_IS_C_CONTIGUOUS(arr) or cnp.PyArray_DIM(arr, 0) != d0
            or (nd == 2 and cnp.PyArray_DIM(arr, 1) != d1)
            or (out and not cnp.PyArray_ISWRITEABLE(arr))):
        expected = str((d0,)) if d1 < 0 else str((d0, d1))
        raise ValueError(f"kernel contract violated by {name}: dtype {a.dtype}, shape "
                         f"{a.shape}, expected {expected}")
    return cnp.PyArray_DATA(arr)


cdef inline Py_ssize_t _rows(object a) except -1:
    return 0 if a is None else cnp.PyArray_DIM(<cnp.ndarray?>a, 0)


# ------------------------------------------------------------------ the entry point

def run(object kernel_call, int n_threads):
    """Run one ``KernelCall`` on up to ``n_threads`` threads; returns a ``Status``."""
    if not isinstance(kernel_call, tuple) or len(<tuple>kernel_call) != 23:
        raise TypeError("run() takes a fastxent._backends.KernelCall")
    cdef tuple call = <tuple>kernel_call
    cdef fxe_params p
    cdef cnp.ndarray x = <cnp.ndarray?>call[1]
    cdef int tn = cnp.PyArray_TYPE(x)
    cdef int is64
    if tn == cnp.NPY_FLOAT64:
        is64 = 1
    elif tn == cnp.NPY_FLOAT32:
        is64 = 0
    else:
        raise ValueError(f"kernel contract violated by x: dtype {x.dtype}")
    if cnp.PyArray_NDIM(x) != 2 or not cnp.PyArray_IS_C_CONTIGUOUS(x):
        raise ValueError("kernel contract violated by x: not 2-D C-contiguous")
    cdef Py_ssize_t n = cnp.PyArray_DIM(x, 0), C = cnp.PyArray_DIM(x, 1)
    p.family = <int>call[0]
    p.n, p.C = n, C
    p.x = cnp.PyArray_DATA(x)
    p.y_rows = _rows(call[2])
    p.y = _arr(call[2], tn, 1 if p.y_rows == 1 else n, C, False, "y")
    p.t = <const fxe_ssize *>_arr(call[3], cnp.NPY_INTP, n, -1, False, "t")
    p.cw = _arr(call[4], tn, C, -1, False, "cw")
    cdef object rs = call[5]
    p.rs_elem = rs is not None and cnp.PyArray_NDIM(<cnp.ndarray?>rs) == 2
    p.rs = _arr(rs, tn, n, C if p.rs_elem else -1, False, "rs")
    p.lse_in = _arr(call[6], tn, n, -1, False, "lse_in")
    p.coef_in = _arr(call[7], tn, n, -1, False, "coef_in")
    p.v = _arr(call[8], tn, n, C, False, "v")
    cdef object loss = call[9]
    p.loss_2d = loss is not None and cnp.PyArray_NDIM(<cnp.ndarray?>loss) == 2
    p.loss = <void *>_arr(loss, tn, n, C if p.loss_2d else -1, True, "loss")
    p.grad = <void *>_arr(call[10], tn, n, -1 if p.family == FXE_LOGSUMEXP else C, True,
                          "grad")
    p.lse_out = <void *>_arr(call[11], tn, n, -1, True, "lse_out")
    cdef object ignore = call[12]
    p.has_ignore = ignore is not None
    p.ignore_index = <fxe_ssize>ignore if ignore is not None else 0
    p.eps = call[13]
    cdef Py_ssize_t ncls = call[14]
    p.epsc = p.eps / <double>(ncls if ncls > 0 else C)
    p.z = call[15]
    p.softcap = call[16]
    p.gscale = call[17]
    p.want_total = call[18]
    p.shard = call[19]
    p.check = call[20]
    p.prob_tol = call[21]
    p.label_tol = call[22]
    p.mode = 1 if p.family == FXE_LOG_SOFTMAX else 0
    cdef Py_ssize_t c
    p.sum_cw = 0.0
    if p.cw == NULL:
        p.sum_cw = <double>(ncls if ncls > 0 else C)
    elif is64:
        for c in range(C):
            p.sum_cw += (<const double *>p.cw)[c]
    else:
        for c in range(C):
            p.sum_cw += (<const float *>p.cw)[c]
    if (p.family in (FXE_SOFTMAX, FXE_HESSP) and p.y == NULL and p.t == NULL) or \
            (p.family == FXE_SIGMOID and p.y == NULL):
        raise ValueError("kernel contract violated: labels are absent")

    cdef fxe_counts cn
    fxe_counts_init(&cn)
    cdef double total = 0.0
    if n == 0 or C == 0:
        return _status(&cn, 0.0, p.check)
    cdef fxe_ssize task
    cdef size_t scratch
    cdef fxe_kernel fn = fxe_plan(&p, is64, &task, &scratch)
    cdef int nt = n_threads
    global _omp_used
    if _serial_only or not FXE_OPENMP:
        nt = 1
    elif nt > 1:
        nt = min(nt, fxe_omp_max_threads())    # threadpoolctl / OMP_NUM_THREADS
        _omp_used = _omp_used or nt > 1
    # super-blocks: whole tasks, so totals add up in the same order as in one block
    cdef fxe_ssize super_rows = max(task, (SUPER_ELEMS // max(C, 1)) // task * task)
    cdef fxe_ssize r0 = 0, r1
    while r0 < n:
        r1 = min(n, r0 + super_rows)
        with nogil:
            total += fxe_run(fn, &p, r0, r1, task, nt, scratch, &cn)
        if cn.failed:
            raise MemoryError(f"could not allocate {scratch} bytes of per-thread scratch")
        r0 = r1
        if r0 < n:
            PyErr_CheckSignals()
    return _status(&cn, total, p.check)


cdef object _status(fxe_counts *cn, double total, int check):
    if not check:  # the hot path: tuple.__new__ skips the namedtuple's Python __new__
        return tuple.__new__(Status, (cn.nbad, total, None, None))
    return Status(cn.nbad, total, {DIAG[k]: cn.diag[k] for k in range(FXE_N_DIAG)},
                  {DIAG[k]: cn.first[k] for k in range(FXE_N_DIAG)})


# ------------------------------------------------------------------ build / test hooks

_MATH = {"exp": 0, "exp_full": 1, "expm1": 2, "log": 3, "log1p": 4, "log1p_unit": 5}


def _math(str name, cnp.ndarray x):
    """Test hook: the kernels' elementwise maths (``_MATH`` names) of a 1-D float array, in
    the baseline tier's inline versions (the same code every tier inlines)."""
    cdef Py_ssize_t i, n = cnp.PyArray_SIZE(x)
    cdef int k = _MATH[name]
    cdef cnp.ndarray out = x.copy()
    cdef float *f
    cdef double *d
    if x.dtype == "float32":
        f = <float *>cnp.PyArray_DATA(out)
        for i in range(n):
            f[i] = (fxe_expf_neg(f[i]) if k == 0 else fxe_expf(f[i]) if k == 1 else
                    fxe_expm1f_neg(f[i]) if k == 2 else fxe_logf(f[i]) if k == 3 else
                    fxe_log1pf(f[i]) if k == 4 else fxe_log1pf_unit(f[i]))
    else:
        d = <double *>cnp.PyArray_DATA(out)
        for i in range(n):
            d[i] = (fxe_exp_neg(d[i]) if k == 0 else fxe_exp(d[i]) if k == 1 else
                    fxe_expm1_neg(d[i]) if k == 2 else fxe_log(d[i]) if k == 3 else
                    fxe_log1p(d[i]) if k == 4 else fxe_log1p_unit(d[i]))
    return out


def _tiers():
    """Names of the compiled instruction-set tiers, and which this CPU can run."""
    return [(fxe_tier_names[k].decode(), bool(fxe_tier_supported(k))) for k in range(FXE_N_TIERS)]


def _select_tier(name="best"):
    """Use the best tier this CPU runs, or at most tier ``name``; returns the tier in use."""
    global _tier
    names = [t for t, _ in _tiers()]
    want = FXE_N_TIERS - 1 if name == "best" else names.index(name)
    _tier = fxe_select(want)
    return names[_tier]


def _omp_limit():
    """The OpenMP runtime's thread limit, which caps n_threads in every parallel kernel."""
    return fxe_omp_max_threads()


def _contention():
    """(seconds left in the current one-thread spell, spells so far): see fxe_runner.h."""
    cdef long spells = 0
    cdef double left = fxe_serial_left(&spells)
    return left, spells


def _team_was_late(double wait, double master_work, fxe_ssize master_tasks):
    """Test hook: the runner's contention rule (fxe_runner.h)."""
    return bool(fxe_team_was_late(wait, master_work, master_tasks))


def _build_info():
    return {
        "openmp": bool(FXE_OPENMP),
        "simd_tiers": [t for t, ok in _tiers()],
        "simd": fxe_tier_names[_tier].decode(),
        "simd_supported": [t for t, ok in _tiers() if ok],
        "compile_flags": FXE_BUILD_FLAGS.decode(),
        "directives": FXE_BUILD_DIRECTIVES.decode(),
        "small_class_path_max_c": FXE_SMALL_C,
        "serial_only_after_fork": bool(_serial_only),
        "one_thread_spells": _contention()[1],
    }


# FASTXENT_SIMD=baseline|avx2|avx512 caps the tier (default: the best the CPU runs)
_env_tier = os.environ.get("FASTXENT_SIMD", "best").strip().lower() or "best"
_select_tier(_env_tier if _env_tier in [t for t, _ in _tiers()] else "best")
