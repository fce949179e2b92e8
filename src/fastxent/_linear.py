"""Fused linear + softmax cross-entropy: the loss of ``inputs @ weight.T + bias`` without the
N x V logits.

Rows are processed in chunks. Per chunk of ``m`` rows, one reusable (m, V) buffer receives
the chunk's logits (a BLAS GEMM, plus the bias), the fused kernel of the plain softmax loss
turns them into d loss / d logits in place, and two more GEMMs take the gradients:
``grad_inputs[rows] = dZ @ W`` and ``[grad_weight, grad_bias] += dZ.T @ [x, 1]`` (BLAS with
``beta = 1``: accumulated without a temporary; the bias gradient is the column the ones
add). Every option of the plain loss comes with it, because each chunk *is* a plain-loss
problem (``_boundary.Linear.chunk``); reductions are global: the mean's denominator is
computed from the labels and weights of all rows first and passed to every chunk as the
gradient's scale. The extra memory is the chunk buffer (``m V`` values), nothing N x V.

Chunk size. A chunk of ``m`` rows costs one read of ``weight`` per GEMM that uses it and one
read and write of ``grad_weight``; its logits cost a write, the kernel's read and write, and
a read per backward GEMM. When ``weight`` is small (fits ``_CACHE_BYTES``) the chunk is sized
to stay in cache (an estimator's X is then read from memory once per evaluation); when it is
large, the weight traffic dominates and the chunk is as large as ``_MAX_BYTES`` allows.
"""

import numpy as np

from . import _backends, _engine, _plan
from . import _boundary as B

#: A narrow problem (weight within this) is chunked so that a chunk's logits and inputs stay
#: in cache between the GEMMs and the kernel.
_CACHE_BYTES = 4 << 20
#: A wide problem streams weight and grad_weight from memory once per chunk (two GEMMs read
#: W, one reads and writes grad_weight): few chunks, as large as this buffer allows. At
#: 2048 x 128 x 65536 float32 on 2 cores, 512-row chunks (128 MiB) ran the GEMMs within 3%
#: of unchunked ones, 128-row chunks 1.45x slower (python -m fastxent linbench).
_MAX_BYTES = 128 << 20
#: Fewest rows per chunk (GEMMs with a smaller inner or outer dimension lose efficiency).
_MIN_ROWS = 64

_GEMM = {}
_WANT_ALL = ("inputs", "weight", "bias")


def _gemm(dtype):
    """SciPy's BLAS ``?gemm`` for dtype (accumulates with beta = 1), or None without SciPy."""
    try:
        return _GEMM[dtype]
    except KeyError:
        try:
            from scipy.linalg import blas
            gemm = blas.sgemm if dtype == np.float32 else blas.dgemm
        except ImportError:  # SciPy is optional: then a (V, D) temporary per chunk
            gemm = None
        _GEMM[dtype] = gemm
        return gemm


def chunk_rows(n_rows, n_classes, n_features, itemsize, chunk_size=None):
    """Rows per chunk: ``chunk_size`` if given, else the rule in the module docstring."""
    if chunk_size is None:
        if n_classes * n_features * itemsize <= _CACHE_BYTES:
            rows = _CACHE_BYTES // ((n_classes + n_features) * itemsize)
        else:
            rows = _MAX_BYTES // (n_classes * itemsize)
        chunk_size = max(rows, _MIN_ROWS)
    return max(1, min(int(chunk_size), n_rows))


def check_chunk_size(chunk_size):
    if chunk_size is None:
        return None
    value = B.check_int(chunk_size, "chunk_size", allow_none=True)
    if value < 1:
        raise ValueError(f"chunk_size={value} must be a positive number of rows (or None to "
                         f"choose it from the shapes)")
    return value


def check_wrt(wrt):
    """The gradients wanted: a subset of ("inputs", "weight", "bias")."""
    if wrt is None:
        return _WANT_ALL
    names = (wrt,) if isinstance(wrt, str) else tuple(wrt)
    bad = [w for w in names if w not in _WANT_ALL]
    if bad:
        raise ValueError(f"wrt={wrt!r}: {bad[0]!r} is not one of 'inputs', 'weight', 'bias'")
    return names


# ------------------------------------------------------------------------------ GEMMs
#
# All three GEMMs go to SciPy's BLAS when it is there: one BLAS thread pool (NumPy bundles
# another OpenBLAS, and the idle, spinning workers of one pool slowed the other's GEMMs by
# 1.3x at 2 threads), and ``beta = 1`` accumulates into grad_weight without a temporary. A
# C-ordered (n, k) array is the F-ordered (k, n) array its ``.T`` views, so every operand
# below is passed without a copy. grad_weight is accumulated Fortran-ordered, (V, D) with V
# the GEMM's M dimension: OpenBLAS ran that orientation 1.4x faster than (D, V).

def _logits(lp, r0, r1, Z):
    """``Z = inputs[r0:r1] @ weight.T + bias``."""
    xc = lp.X[r0:r1]
    gemm = None if lp.sparse else _gemm(Z.dtype)
    if lp.sparse:
        np.copyto(Z, (xc @ lp.W.T))
    elif gemm is None:
        np.matmul(xc, lp.W.T, out=Z)
    else:  # Z.T (V, n) = W (V, D) @ xc.T (D, n) (+ the bias rows, beta = 1)
        W = lp.W
        a, ta = (W.T, 1) if W.flags.c_contiguous else (W, 0)
        if lp.b is not None:
            # filling Z with the bias and letting the GEMM add to it: a write-only pass
            # instead of a read-and-write one (measured 25% less than Z += b afterwards)
            np.copyto(Z, lp.b)
        gemm(1.0, a, xc.T, trans_a=ta, beta=0.0 if lp.b is None else 1.0, c=Z.T,
             overwrite_c=1)
        return
    if lp.b is not None:
        Z += lp.b


def _grad_inputs(lp, Z, out):
    """``out = Z @ weight`` (the rows of grad_inputs)."""
    gemm = _gemm(Z.dtype)
    if not (out.dtype == Z.dtype and out.flags.c_contiguous):
        out[...] = Z @ lp.W
    elif gemm is None:
        np.matmul(Z, lp.W, out=out)
    else:  # out.T (D, n) = W.T (D, V) @ Z.T (V, n)
        W = lp.W
        a, ta = (W.T, 0) if W.flags.c_contiguous else (W, 1)
        gemm(1.0, a, Z.T, trans_a=ta, c=out.T, overwrite_c=1)


def _accumulate(lp, r0, r1, Z, acc, xa, want_w):
    """``acc += Z.T @ operand``, the operand the chunk's inputs (grad_weight), a column of
    ones (grad_bias) or both side by side in ``xa``; ``acc`` (V, D), (V, 1) or (V, D + 1),
    Fortran-ordered."""
    n = r1 - r0
    xc = lp.X[r0:r1]
    D = xc.shape[1]
    bias = acc.shape[1] > D * want_w
    if lp.sparse:
        if want_w:
            acc[:, :D] += (xc.T @ Z).T
        if bias:
            _column_sums(Z, acc[:, -1])
        return
    if bias and xa is None:
        _column_sums(Z, acc[:, -1])
        acc = acc[:, :D]
    if xa is not None:
        op = xa[:n]
        if want_w:
            op[:, :D] = xc
    else:
        op = xc
    gemm = _gemm(Z.dtype)
    if gemm is None:
        acc += Z.T @ op
        return
    # acc (V, k) F += Z.T (V, n) F @ op (n, k): op.T is (k, n) F, transposed back
    gemm(1.0, Z.T, op.T, trans_b=1, beta=1.0, c=acc, overwrite_c=1)


#: float32 column sums are taken over blocks of this many rows by BLAS and the block sums
#: added in float64: one float32 sum over 10^5 rows loses ~3 digits, which made float32 fits
#: stop ~2x farther from the optimum.
_SUM_BLOCK = 128


def _column_sums(Z, out):
    """``out += Z.sum(axis=0)`` (``Z.sum`` walks the rows one by one, ~7x slower)."""
    n, c = Z.shape
    ones = np.ones(min(n, _SUM_BLOCK), Z.dtype)
    if Z.dtype == np.float64 or n <= _SUM_BLOCK:
        out += np.ones(n, Z.dtype) @ Z if n > _SUM_BLOCK else ones[:n] @ Z
        return
    nb = n // _SUM_BLOCK
    head = np.matmul(ones, Z[:nb * _SUM_BLOCK].reshape(nb, _SUM_BLOCK, c))
    out += head.sum(axis=0, dtype=np.float64)
    if nb * _SUM_BLOCK < n:
        out += Z[nb * _SUM_BLOCK:].sum(axis=0, dtype=np.float64)


# ------------------------------------------------------------------------------ kernels

def _run_chunk(p, op, values=None, grad=None, gscale=1.0, lse_out=None, lse_in=None):
    """Run the plain-loss kernel on one chunk's problem (``B.Linear.chunk``) into the given
    buffers; the status comes back unreported (:func:`_finish_chunks` merges them)."""
    x = p.x
    call = _engine._call(p, p.family, values, grad, lse_out, lse_in, gscale=gscale,
                         want_total=values is None and op != "backward")
    run, threads, _ = _plan.plan(p.kind, op, x.dtype, x.shape[0], x.shape[1], p.backend,
                                 p.n_threads)
    return run(call, threads)


def _finish_chunks(p, statuses, rows):
    """Merge the statuses of chunks of ``rows`` rows and report them against the problem
    ``p`` of all rows (diagnostics then name rows of the whole batch); the loss total."""
    if not statuses:
        return 0.0
    merged = _backends.merge(statuses, rows)
    if merged.nbad or merged.diag is not None:
        _engine._status(p, merged)
    return merged.total


# ------------------------------------------------------------------------------ operations

def _per_row_buffer(lp, out):
    if out is not None and out.flags.c_contiguous and out.dtype == lp.dtype:
        return out
    return np.empty(lp.rows.n_rows, lp.dtype)


def _finish_row_buffer(out, buf):
    if out is None or out is buf:
        return buf
    np.copyto(out, buf, casting="unsafe")
    return out


def run(lp, chunk_size=None, op="fused", wrt=_WANT_ALL):
    """Run a linear problem: ``op`` "forward" (loss), "fused" (loss and gradients) or
    "backward" (gradients, with ``lp.lse`` when saved). Returns (loss or None, grad_inputs,
    grad_weight, grad_bias), the gradients not in ``wrt`` (or not computed) None."""
    rows = lp.rows
    N, V = rows.n_rows, rows.n_classes
    D = lp.X.shape[1]
    dtype = lp.dtype
    m = chunk_rows(N, V, D, dtype.itemsize, chunk_size)
    denom = _engine._denominator(rows)
    gs = _engine._gscale(rows, denom)
    none = rows.reduction == "none"
    want_loss = op != "backward"
    grads = op != "forward"

    values = _per_row_buffer(lp, lp.loss_out) if (none and want_loss) else None
    lse_buf = _per_row_buffer(lp, lp.lse_out) if lp.lse_out is not None else None
    GX = None
    if grads and "inputs" in wrt:
        GX = lp.grad_inputs_out if lp.grad_inputs_out is not None else \
            np.empty(lp.X.shape, dtype)
    want_w = grads and "weight" in wrt
    want_b = grads and "bias" in wrt and lp.b is not None
    acc = xa = None
    if want_w or want_b:
        k = D * want_w + want_b
        out = lp.grad_weight_out
        if not want_b and out is not None and out.dtype == dtype and out.flags.f_contiguous:
            acc = out  # accumulated where the caller wants it
        else:
            acc = np.empty((V, k), dtype, order="F")
        acc.fill(0)
        if want_b and not lp.sparse and (V > D or not want_w):
            # the chunk's inputs and a column of ones: the bias gradient comes out of the
            # same GEMM, for a copy of m D values instead of a pass over m V (narrow
            # problems sum columns instead, ``_column_sums``)
            xa = np.empty((min(m, N), k), dtype)
            xa[:, -1] = 1
    buf = np.empty((min(m, N), V), dtype)
    statuses = []
    for r0 in range(0, N, m):
        r1 = min(N, r0 + m)
        Z = buf[:r1 - r0]
        _logits(lp, r0, r1, Z)
        p = lp.chunk(r0, r1, Z)
        statuses.append(_run_chunk(
            p, op, values=None if values is None else values[r0:r1],
            grad=Z if grads else None, gscale=gs,
            lse_out=None if lse_buf is None else lse_buf[r0:r1],
            lse_in=None if lp.lse is None else lp.lse[r0:r1]))
        if GX is not None:
            _grad_inputs(lp, Z, GX[r0:r1])
        if acc is not None:
            _accumulate(lp, r0, r1, Z, acc, xa, want_w)
    total = _finish_chunks(rows, statuses, m)

    loss = None
    if want_loss:
        if none:
            if rows.sw is not None:
                values *= rows.sw
            loss = _finish_row_buffer(lp.loss_out, values)
        else:
            loss = _engine.reduced(total, lp.rows.reduction, denom, lp.rows.out_dtype,
                                   lp.loss_out)
    if lse_buf is not None:
        _finish_row_buffer(lp.lse_out, lse_buf)
    GW = gb = None
    if want_w:
        GW = acc if acc is lp.grad_weight_out else acc[:, :D]
        if lp.grad_weight_out is not None and GW is not lp.grad_weight_out:
            np.copyto(lp.grad_weight_out, GW, casting="unsafe")
            GW = lp.grad_weight_out
    if want_b:
        gb = acc[:, -1]
        if lp.grad_bias_out is not None:
            np.copyto(lp.grad_bias_out, gb, casting="unsafe")
            gb = lp.grad_bias_out
    if lp.sparse and GX is not None:
        GX = np.asarray(GX)
    return loss, GX, GW, gb
