# cython: language_level=3
"""Compiled kernels of the fastxent ``cython`` backend (thin layer over fxe_kernels.h).

Every public function here has the argument list of ``fastxent._backends.KERNELS``. Each one
checks its arguments cheaply (dtype, shape, C-contiguity, writability: C struct reads, no
Python calls), fills an ``fxe_params`` struct of raw pointers and runs the C row-block
kernel for the array's dtype over row chunks, in a ``prange`` with ``num_threads=n_threads``,
or serially (no OpenMP region) for one thread or small problems. The GIL is released.

Arrays are taken as ``ndarray`` and read through ``PyArray_DATA`` rather than as typed
memoryviews: that costs ~10 ns per array instead of ~100-200 ns for acquiring a buffer,
works the same for read-only inputs, and needs no fused-type dispatch (the dtype picks a
C function table). Compiler directives come from the table in setup.py.
"""

import os

cimport numpy as cnp
from cython.parallel cimport prange

cnp.import_array()

cdef extern from "fxe_kernels.h" nogil:
    ctypedef struct fxe_params:
        const void *x
        const void *y
        const void *cw
        const void *scale
        const void *v
        const void *lse_in
        const Py_ssize_t *t
        void *loss
        void *grad
        void *lse_out
        Py_ssize_t n, C
        int sparse, has_cw, has_lse_in, scale_full, scale_rows_full, scale_cols_full
        int loss_2d, mode, has_ignore
        Py_ssize_t ignore_index
        double eps, z, sum_cw
    ctypedef Py_ssize_t (*fxe_kernel)(const fxe_params *, Py_ssize_t, Py_ssize_t) noexcept nogil
    enum:
        FXE_K_SOFTMAX, FXE_K_HESSP, FXE_K_LABEL_GRAD, FXE_K_UTILITY, FXE_K_SIGMOID,
        FXE_K_SIGMOID_LABEL_GRAD
        FXE_HAVE_AVX2_VARIANT, FXE_OPENMP, FXE_DEBUG_CHECKS, FXE_SMALL_C, FXE_SB
    fxe_kernel fxe_get(int is_f64, int k)
    const char *fxe_select(int want)
    int fxe_cpu_has_avx2_fma()
    int fxe_cpu_has_avx512()
    int fxe_omp_max_threads()
    void fxe_expf_array(const float *x, float *o, Py_ssize_t n, int k)
    void fxe_exp_array(const double *x, double *o, Py_ssize_t n, int k)
    const char *FXE_BUILD_FLAGS
    const char *FXE_BUILD_DIRECTIVES

# Below this many elements (n * C) a call runs serially, with no OpenMP region at all:
# 32768 float32 elements of a fused kernel take ~10-20 us on one core, while opening an
# OpenMP region and joining it costs a few us and the second core's caches start cold.
cdef Py_ssize_t PARALLEL_MIN_WORK = 32768

cdef bint _omp_used = False       # this process has opened an OpenMP region
cdef bint _serial_only = False    # forked child of such a process: never open one

cdef str _variant = ""


def _after_fork_in_child():
    # GNU libgomp keeps its thread pool's bookkeeping across fork() but not the threads: a
    # child of a process that used OpenMP threads can hang in its first parallel region.
    # Such a child therefore runs every kernel serially (same results: they never depend
    # on the thread count). FASTXENT_OMP_AFTER_FORK=1 keeps OpenMP on in children (for a
    # fork-safe OpenMP runtime; also how the tests observe the runtime's own behaviour).
    global _serial_only
    if _omp_used and os.environ.get("FASTXENT_OMP_AFTER_FORK", "") in ("", "0"):
        _serial_only = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ------------------------------------------------------------------ runner

cdef Py_ssize_t _run(int k, int is64, fxe_params *p, int n_threads) noexcept nogil:
    cdef fxe_kernel fn = fxe_get(is64, k)
    cdef Py_ssize_t n = p.n, per, chunk, nchunks, i, lo, hi, align
    cdef Py_ssize_t nbad = 0
    if n_threads <= 1 or _serial_only or n < 2 or n * p.C < PARALLEL_MIN_WORK:
        return fn(p, 0, n)
    # Honour the OpenMP runtime's limit (threadpoolctl.threadpool_limits, OMP_NUM_THREADS).
    n_threads = min(n_threads, fxe_omp_max_threads())
    if n_threads <= 1:
        return fn(p, 0, n)
    # Chunks of whole rows. The small-C path works on blocks of FXE_SB rows, so there chunks
    # are aligned to FXE_SB (every row keeps its place in its block whatever n_threads is:
    # the same bits for any thread count); wider rows are independent, so any split works
    # and a few long rows still spread over the threads.
    per = (n + n_threads - 1) // n_threads
    align = FXE_SB if p.C <= FXE_SMALL_C else 1
    chunk = ((per + align - 1) // align) * align
    nchunks = (n + chunk - 1) // chunk
    if nchunks < 2:
        return fn(p, 0, n)
    global _omp_used
    _omp_used = True
    for i in prange(nchunks, num_threads=n_threads, schedule="static"):
        lo = i * chunk
        hi = lo + chunk
        if hi > n:
            hi = n
        nbad += fn(p, lo, hi)
    return nbad


# ------------------------------------------------------------------ argument checks

cdef inline int _x_dtype(cnp.ndarray x) except -1:
    """0 for float32, 1 for float64; x must be 2-D C-contiguous."""
    cdef int tn = cnp.PyArray_TYPE(x)
    if cnp.PyArray_NDIM(x) != 2 or not cnp.PyArray_IS_C_CONTIGUOUS(x):
        raise ValueError("x must be a 2-D C-contiguous array")
    if tn == cnp.NPY_FLOAT32:
        return 0
    if tn == cnp.NPY_FLOAT64:
        return 1
    raise TypeError("x must be float32 or float64")


cdef inline int _chk(cnp.ndarray a, int typenum, int ndim, Py_ssize_t d0, Py_ssize_t d1,
                     bint out, str name) except -1:
    """a has typenum, ndim and shape (d0[, d1]) (-1: any), is C-contiguous (writable if out)."""
    if cnp.PyArray_TYPE(a) != typenum or cnp.PyArray_NDIM(a) != ndim \
            or not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"{name}: wrong dtype, dimensions or memory layout")
    if d0 >= 0 and cnp.PyArray_DIM(a, 0) != d0:
        raise ValueError(f"{name}: wrong shape")
    if ndim == 2 and d1 >= 0 and cnp.PyArray_DIM(a, 1) != d1:
        raise ValueError(f"{name}: wrong shape")
    if out and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"{name}: output is read-only")
    return 0


cdef inline int _opt_len(cnp.ndarray a, int typenum, Py_ssize_t m, str name) except -1:
    """1-D of length 0 (absent: returns 0) or m (returns 1)."""
    _chk(a, typenum, 1, -1, -1, False, name)
    cdef Py_ssize_t k = cnp.PyArray_DIM(a, 0)
    if k == 0:
        return 0
    if k != m:
        raise ValueError(f"{name}: length must be 0 or {m}")
    return 1


cdef inline int _init(fxe_params *p, cnp.ndarray x, int *tn) except -1:
    cdef int is64 = _x_dtype(x)
    tn[0] = cnp.NPY_FLOAT64 if is64 else cnp.NPY_FLOAT32
    p.x = cnp.PyArray_DATA(x)
    p.y = NULL
    p.cw = NULL
    p.scale = NULL
    p.v = NULL
    p.lse_in = NULL
    p.t = NULL
    p.loss = NULL
    p.grad = NULL
    p.lse_out = NULL
    p.n = cnp.PyArray_DIM(x, 0)
    p.C = cnp.PyArray_DIM(x, 1)
    p.sparse = 0
    p.has_cw = 0
    p.has_lse_in = 0
    p.scale_full = 0
    p.scale_rows_full = 0
    p.scale_cols_full = 0
    p.loss_2d = 0
    p.mode = 0
    p.has_ignore = 0
    p.ignore_index = 0
    p.eps = 0.0
    p.z = 0.0
    p.sum_cw = <double>p.C
    return is64


cdef inline int _scale1(fxe_params *p, cnp.ndarray scale, int tn) except -1:
    """softmax scale: (n,) or (1,)"""
    _chk(scale, tn, 1, -1, -1, False, "scale")
    cdef Py_ssize_t k = cnp.PyArray_DIM(scale, 0)
    if k != p.n and k != 1:
        raise ValueError("scale: length must be n or 1")
    p.scale = cnp.PyArray_DATA(scale)
    p.scale_full = k == p.n
    return 0


cdef inline int _scale2(fxe_params *p, cnp.ndarray scale, int tn) except -1:
    """sigmoid scale: (n or 1, C or 1)"""
    _chk(scale, tn, 2, -1, -1, False, "scale")
    cdef Py_ssize_t a = cnp.PyArray_DIM(scale, 0), b = cnp.PyArray_DIM(scale, 1)
    if (a != p.n and a != 1) or (b != p.C and b != 1):
        raise ValueError("scale: shape must be (n or 1, C or 1)")
    p.scale = cnp.PyArray_DATA(scale)
    p.scale_rows_full = a == p.n
    p.scale_cols_full = b == p.C
    return 0


cdef inline int _cw(fxe_params *p, cnp.ndarray cw, int tn, bint need_sum) except -1:
    cdef Py_ssize_t c
    cdef double s = 0.0
    p.has_cw = _opt_len(cw, tn, p.C, "cw")
    p.cw = cnp.PyArray_DATA(cw)
    if p.has_cw and need_sum:
        if tn == cnp.NPY_FLOAT32:
            for c in range(p.C):
                s += (<const float *>p.cw)[c]
        else:
            for c in range(p.C):
                s += (<const double *>p.cw)[c]
        p.sum_cw = s
    return 0


cdef inline int _labels(fxe_params *p, cnp.ndarray t, bint has_ignore,
                        Py_ssize_t ignore_index) except -1:
    _chk(t, cnp.NPY_INTP, 1, p.n, -1, False, "t")
    p.t = <const Py_ssize_t *>cnp.PyArray_DATA(t)
    p.sparse = 1
    p.has_ignore = has_ignore
    p.ignore_index = ignore_index
    return 0


cdef inline int _threads(object n_threads) except -1:
    cdef int nt = n_threads
    return nt if nt > 1 else 1


# ------------------------------------------------------------------ softmax kernels

def dense_forward(cnp.ndarray x, cnp.ndarray y, cnp.ndarray cw, double eps, double z,
                  cnp.ndarray loss, cnp.ndarray lse, n_threads):
    cdef fxe_params p
    cdef int tn, nt = _threads(n_threads)
    cdef int is64 = _init(&p, x, &tn)
    _chk(y, tn, 2, p.n, p.C, False, "y")
    p.y = cnp.PyArray_DATA(y)
    _cw(&p, cw, tn, False)
    p.eps = eps
    p.z = z
    _chk(loss, tn, 1, p.n, -1, True, "loss")
    p.loss = cnp.PyArray_DATA(loss)
    if _opt_len(lse, tn, p.n, "lse"):
        _chk(lse, tn, 1, p.n, -1, True, "lse")
        p.lse_out = cnp.PyArray_DATA(lse)
    with nogil:
        _run(FXE_K_SOFTMAX, is64, &p, nt)
    return 0


def dense_backward(cnp.ndarray x, cnp.ndarray y, cnp.ndarray cw, double eps, double z,
                   cnp.ndarray scale, cnp.ndarray lse, cnp.ndarray grad, n_threads):
    cdef fxe_params p
    cdef int tn, nt = _threads(n_threads)
    cdef int is64 = _init(&p, x, &tn)
    _chk(y, tn, 2, p.n, p.C, False, "y")
    p.y = cnp.PyArray_DATA(y)
    _cw(&p, cw, tn, False)
    p.eps = eps
    p.z = z
    _scale1(&p, scale, tn)
    p.has_lse_in = _opt_len(lse, tn, p.n, "lse")
    p.lse_in = cnp.PyArray_DATA(lse)
    _chk(grad, tn, 2, p.n, p.C, True, "grad")
    p.grad = cnp.PyArray_DATA(grad)
    with nogil:
        _run(FXE_K_SOFTMAX, is64, &p, nt)
    return 0


def dense_fused(cnp.ndarray x, cnp.ndarray y, cnp.ndarray cw, double eps, double z,
                cnp.ndarray scale, cnp.ndarray loss, cnp.ndarray grad, n_threads):
    cdef fxe_params p
    cdef int tn, nt = _threads(n_threads)
    cdef int is64 = _init(&p, x, &tn)
    _chk(y, tn, 2, p.n, p.C, False, "y")
    p.y = cnp.PyArray_DATA(y)
    _cw(&p, cw, tn, False)
    p.eps = eps
    p.z = z
    _scale1(&p, scale, tn)
    _chk(loss, tn, 1, p.n, -1, True, "loss")
    p.loss = cnp.PyArray_DATA(loss)
    _chk(grad, tn, 2, p.n, p.C, True, "grad")
    p.grad = cnp.PyArray_DATA(grad)
    with nogil:
        _run(FXE_K_SOFTMAX, is64, &p, nt)
    return 0


def dense_label_grad(cnp.ndarray x, cnp.ndarray cw, double eps, cnp.ndarray scale,
                     cnp.ndarray lse, cnp.ndarray out, n_threads):
    cdef fxe_params p
    cdef int tn, nt = _threads(n_threads)
    cdef int is64 = _init(&p, x, &tn)
    _cw(&p, cw, tn, False)
    p.eps = eps
    _scale1(&p, scale, tn)
    p.has_lse_in = _opt_len(lse, tn, p.n, "lse")
    p.lse_in = cnp.PyArray_DATA(lse)
    _chk(out, tn, 2, p.n, p.C, True, "out")
    p.grad = cnp.PyArray_DATA(out)
    with nogil:
        _run(FXE_K_LABEL_GRAD, is64, &p, nt)
    return 0


def dense_hessp(cnp.ndarray x, cnp.ndarray y, cnp.ndarray cw, double eps, double z,
                cnp.ndarray scale, cnp.ndarray v, cnp.ndarray out, n_threads):
    cdef fxe_params p
    cdef int tn, nt = _threads(n_threads)
    cdef int is64 = _init(&p, x, &tn)
    _chk(y, tn, 2, p.n, p.C, False, "y")
    p.y = cnp.PyArray_DATA(y)
    _cw(&p, cw, tn, False)
    p.eps = eps
    p.z = z
    _scale1(&p, scale, tn)
    _chk(v, tn, 2, p.n, p.C, False, "v")
    p.v = cnp.PyArray_DATA(v)
    _chk(out, tn, 2, p.n, p.C, True, "out")
    p.grad = cnp.PyArray_DATA(out)
    with nogil:
        _run(FXE_K_HESSP, is64, &p, nt)
    return 0


def sparse_forward(cnp.ndarray x, cnp.ndarray t, cnp.ndarray cw, double eps, double z,
                   bint has_ignore, Py_ssize_t ignore_index, cnp.ndarray loss,
                   cnp.ndarray lse, n_threads):
    cdef fxe_params p
    cdef int tn, nt = _threads(n_threads)
    cdef int is64 = _init(&p, x, &tn)
    cdef Py_ssize_t nbad
    _labels(&p, t, has_ignore, ignore_index)
    _cw(&p, cw, tn, eps != 0)
    p.eps = eps
    p.z = z
    _chk(loss, tn, 1, p.n, -1, True, "loss")
    p.loss = cnp.PyArray_DATA(loss)
    if _opt_len(lse, tn, p.n, "lse"):
        _chk(lse, tn, 1, p.n, -1, True, "lse")
        p.lse_out = cnp.PyArray_DATA(lse)
    with nogil:
        nbad = _run(FXE_K_SOFTMAX, is64, &p, nt)
    return nbad


def sparse_backward(cnp.ndarray x, cnp.ndarray t, cnp.ndarray cw, double eps, double z,
                    bint has_ignore, Py_ssize_t ignore_index, cnp.ndarray scale,
                    cnp.ndarray lse, cnp.ndarray grad, n_threads):
    cdef fxe_params p
    cdef int tn, nt = _threads(n_threads)
    cdef int is64 = _init(&p, x, &tn)
    cdef Py_ssize_t nbad
    _labels(&p, t, has_ignore, ignore_index)
    _cw(&p, cw, tn, eps != 0)
    p.eps = eps
    p.z = z
    _scale1(&p, scale, tn)
    p.has_lse_in = _opt_len(lse, tn, p.n, "lse")
    p.lse_in = cnp.PyArray_DATA(lse)
    _chk(grad, tn, 2, p.n, p.C, True, "grad")
    p.grad = cnp.PyArray_DATA(grad)
    with nogil:
        nbad = _run(FXE_K_SOFTMAX, is64, &p, nt)
    return nbad


def sparse_fused(cnp.ndarray x, cnp.ndarray t, cnp.ndarray cw, double eps, double z,
                 bint has_ignore, Py_ssize_t ignore_index, cnp.ndarray scale,
                 cnp.ndarray loss, cnp.ndarray grad, n_threads):
    cdef fxe_params p
    cdef int tn, nt = _threads(n_threads)
    cdef int is64 = _init(&p, x, &tn)
    cdef Py_ssize_t nbad
    _labels(&p, t, has_ignore, ignore_index)
    _cw(&p, cw, tn, eps != 0)
    p.eps = eps
    p.z = z
    _scale1(&p, scale, tn)
    _chk(loss, tn, 1, p.n, -1, True, "loss")
    p.loss = cnp.PyArray_DATA(loss)
    _chk(grad, tn, 2, p.n, p.C, True, "grad")
    p.grad = cnp.PyArray_DATA(grad)
    with nogil:
        nbad = _run(FXE_K_SOFTMAX, is64, &p, nt)
    return nbad


def sparse_hessp(cnp.ndarray x, cnp.ndarray t, cnp.ndarray cw, double eps, double z,
                 bint has_ignore, Py_ssize_t ignore_index, cnp.ndarray scale,
                 cnp.ndarray v, cnp.ndarray out, n_threads):
    cdef fxe_params p
    cdef int tn, nt = _threads(n_threads)
    cdef int is64 = _init(&p, x, &tn)
    cdef Py_ssize_t nbad
    _labels(&p, t, has_ignore, ignore_index)
    _cw(&p, cw, tn, eps != 0)
    p.eps = eps
    p.z = z
    _scale1(&p, scale, tn)
    _chk(v, tn, 2, p.n, p.C, False, "v")
    p.v = cnp.PyArray_DATA(v)
    _chk(out, tn, 2, p.n, p.C, True, "out")
    p.grad = cnp.PyArray_DATA(out)
    with nogil:
        nbad = _run(FXE_K_HESSP, is64, &p, nt)
    return nbad


# ------------------------------------------------------------------ sigmoid kernels

cdef inline int _sigmoid_loss(fxe_params *p, cnp.ndarray loss, int tn) except -1:
    if cnp.PyArray_NDIM(loss) == 2:
        _chk(loss, tn, 2, p.n, p.C, True, "loss")
        p.loss_2d = 1
    else:
        _chk(loss, tn, 1, p.n, -1, True, "loss")
    p.loss = cnp.PyArray_DATA(loss)
    return 0


def sigmoid_forward(cnp.ndarray x, cnp.ndarray y, cnp.ndarray pw, double eps,
                    cnp.ndarray loss, n_threads):
    cdef fxe_params p
    cdef int tn, nt = _threads(n_threads)
    cdef int is64 = _init(&p, x, &tn)
    _chk(y, tn, 2, p.n, p.C, False, "y")
    p.y = cnp.PyArray_DATA(y)
    _cw(&p, pw, tn, False)
    p.eps = eps
    _sigmoid_loss(&p, loss, tn)
    with nogil:
        _run(FXE_K_SIGMOID, is64, &p, nt)
    return 0


def sigmoid_backward(cnp.ndarray x, cnp.ndarray y, cnp.ndarray pw, double eps,
                     cnp.ndarray scale, cnp.ndarray grad, n_threads):
    cdef fxe_params p
    cdef int tn, nt = _threads(n_threads)
    cdef int is64 = _init(&p, x, &tn)
    _chk(y, tn, 2, p.n, p.C, False, "y")
    p.y = cnp.PyArray_DATA(y)
    _cw(&p, pw, tn, False)
    p.eps = eps
    _scale2(&p, scale, tn)
    _chk(grad, tn, 2, p.n, p.C, True, "grad")
    p.grad = cnp.PyArray_DATA(grad)
    with nogil:
        _run(FXE_K_SIGMOID, is64, &p, nt)
    return 0


def sigmoid_fused(cnp.ndarray x, cnp.ndarray y, cnp.ndarray pw, double eps,
                  cnp.ndarray scale, cnp.ndarray loss, cnp.ndarray grad, n_threads):
    cdef fxe_params p
    cdef int tn, nt = _threads(n_threads)
    cdef int is64 = _init(&p, x, &tn)
    _chk(y, tn, 2, p.n, p.C, False, "y")
    p.y = cnp.PyArray_DATA(y)
    _cw(&p, pw, tn, False)
    p.eps = eps
    _scale2(&p, scale, tn)
    _sigmoid_loss(&p, loss, tn)
    _chk(grad, tn, 2, p.n, p.C, True, "grad")
    p.grad = cnp.PyArray_DATA(grad)
    with nogil:
        _run(FXE_K_SIGMOID, is64, &p, nt)
    return 0


def sigmoid_label_grad(cnp.ndarray x, cnp.ndarray pw, double eps, cnp.ndarray scale,
                       cnp.ndarray out, n_threads):
    cdef fxe_params p
    cdef int tn, nt = _threads(n_threads)
    cdef int is64 = _init(&p, x, &tn)
    _cw(&p, pw, tn, False)
    p.eps = eps
    _scale2(&p, scale, tn)
    _chk(out, tn, 2, p.n, p.C, True, "out")
    p.grad = cnp.PyArray_DATA(out)
    with nogil:
        _run(FXE_K_SIGMOID_LABEL_GRAD, is64, &p, nt)
    return 0


# ------------------------------------------------------------------ utilities

cdef inline object _utility(cnp.ndarray x, cnp.ndarray out, n_threads, int mode):
    cdef fxe_params p
    cdef int tn, nt = _threads(n_threads)
    cdef int is64 = _init(&p, x, &tn)
    if mode == 0:
        _chk(out, tn, 1, p.n, -1, True, "out")
    else:
        _chk(out, tn, 2, p.n, p.C, True, "out")
    p.grad = cnp.PyArray_DATA(out)
    p.mode = mode
    with nogil:
        _run(FXE_K_UTILITY, is64, &p, nt)
    return 0


def logsumexp(cnp.ndarray x, cnp.ndarray out, n_threads):
    return _utility(x, out, n_threads, 0)


def log_softmax(cnp.ndarray x, cnp.ndarray out, n_threads):
    return _utility(x, out, n_threads, 1)


def softmax(cnp.ndarray x, cnp.ndarray out, n_threads):
    return _utility(x, out, n_threads, 2)


# ------------------------------------------------------------------ build / test hooks

def _exp(cnp.ndarray x, cnp.ndarray out, bint kernel_version=True):
    """Test hook: out = vectorised exp(x) (1-D float32 or float64), in the active SIMD
    variant: the kernels' version (results below the smallest normal flushed to 0) or the
    full-range one (subnormal results, overflow exactly at the format's limit)."""
    cdef int tn = cnp.PyArray_TYPE(x)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    _chk(x, tn, 1, -1, -1, False, "x")
    _chk(out, tn, 1, n, -1, True, "out")
    if tn == cnp.NPY_FLOAT32:
        with nogil:
            fxe_expf_array(<const float *>cnp.PyArray_DATA(x), <float *>cnp.PyArray_DATA(out), n,
                           kernel_version)
    elif tn == cnp.NPY_FLOAT64:
        with nogil:
            fxe_exp_array(<const double *>cnp.PyArray_DATA(x), <double *>cnp.PyArray_DATA(out), n,
                          kernel_version)
    else:
        raise TypeError("float32 or float64")


_LEVELS = {"baseline": 0, "avx2": 1, "avx2-fma": 1, "avx512": 2, "best": 2}


def _select_simd(level="best"):
    """Pick the SIMD variant: "best" the CPU supports, "avx2" at most, or "baseline"
    (True/False: best/baseline). Returns the name of the variant now active."""
    global _variant
    if level is True or level is False:
        level = "best" if level else "baseline"
    if level in ("native", "unknown", ""):
        level = "best"
    _variant = fxe_select(_LEVELS[level]).decode()
    return _variant


def _omp_limit():
    """The OpenMP runtime's thread limit that caps ``n_threads`` in every parallel kernel."""
    return fxe_omp_max_threads()


def _build_info():
    return {
        "openmp": bool(FXE_OPENMP),
        "simd_variants": ["baseline", "avx2-fma", "avx512"] if FXE_HAVE_AVX2_VARIANT else
                         (["native"] if _variant == "native" else ["baseline"]),
        "simd": _variant,
        "cpu_has_avx2_fma": bool(fxe_cpu_has_avx2_fma()),
        "cpu_has_avx512": bool(fxe_cpu_has_avx512()),
        "bounds_checks": bool(FXE_DEBUG_CHECKS),
        "compile_flags": FXE_BUILD_FLAGS.decode(),
        "directives": FXE_BUILD_DIRECTIVES.decode(),
        "parallel_min_work": PARALLEL_MIN_WORK,
        "small_class_path_max_c": FXE_SMALL_C,
        "serial_only_after_fork": bool(_serial_only),
    }


# FASTXENT_SIMD=baseline|avx2|avx512 caps the variant (default: the best the CPU has)
_select_simd(os.environ.get("FASTXENT_SIMD", "best").lower().replace("none", "baseline")
             if os.environ.get("FASTXENT_SIMD", "best").lower() in _LEVELS else "best")
