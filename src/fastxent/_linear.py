"""Fused linear + softmax cross-entropy: the loss of ``inputs @ weight.T + bias`` without the
N x V logits.

Rows are processed in chunks. Per chunk of ``m`` rows, one reusable (m, V) buffer receives
the chunk's logits (a BLAS GEMM, plus the bias), the fused kernel of the plain softmax loss
turns them into d loss / d logits in place, and while they are in cache two more GEMMs take
the gradients: ``grad_inputs[rows] = dZ @ W`` and ``grad_weight += dZ.T @ x`` (BLAS with
``beta = 1``: accumulated without a temporary), ``grad_bias += column sums of dZ``. Every
option of the plain loss comes with it, because each chunk *is* a plain-loss problem
(``_boundary.Linear.chunk``); reductions are global: the mean's denominator is computed from
the labels and weights of all rows first and passed to every chunk as the gradient's scale.
The extra memory is the chunk buffer (about ``m V`` values) and nothing of size N x V.

Chunk size. The GEMM into ``grad_weight`` has inner dimension ``m``, and it reads and writes
the whole (V, D) ``grad_weight`` once per chunk, so ``m`` must not be small; the chunk's
logits should stay in cache between the kernel and the two GEMMs that read them, so ``m V``
must not be large. ``m`` is the larger of ``_MIN_ROWS`` and what fits ``_CACHE_BYTES`` (with
the chunk's inputs), at most what fits ``_MAX_BYTES``; measured in
``python -m fastxent linbench``.
"""

import numpy as np

from . import _backends, _engine, _plan
from . import _boundary as B

#: Chunk logits + inputs that stay cache-friendly (the chunk of a narrow problem).
_CACHE_BYTES = 4 << 20
#: Rows below which the grad_weight GEMM (inner dimension = rows) loses its efficiency.
_MIN_ROWS = 128
#: Largest chunk buffer (bounds the memory of wide problems).
_MAX_BYTES = 64 << 20
#: float32 column sums (the bias gradient) are taken over blocks of this many rows in BLAS and
#: the block sums added in float64 (a single float32 sum over 10^5 rows loses ~3 digits).
_SUM_BLOCK = 128

_GEMM = {}


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
_WANT_ALL = ("inputs", "weight", "bias")


def chunk_rows(n_rows, n_classes, n_features, itemsize, chunk_size=None):
    """Rows per chunk: ``chunk_size`` if given, else the rule in the module docstring."""
    if chunk_size is not None:
        return max(1, min(int(chunk_size), max(n_rows, 1)))
    per_row = (n_classes + n_features) * itemsize
    rows = max(_MIN_ROWS, _CACHE_BYTES // per_row)
    rows = min(rows, max(1, _MAX_BYTES // (n_classes * itemsize)))
    return max(1, min(rows, max(n_rows, 1)))


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

def _logits(lp, r0, r1, Z):
    """``Z = inputs[r0:r1] @ weight.T + bias``."""
    xc = lp.X[r0:r1]
    if lp.sparse:
        np.copyto(Z, (xc @ lp.W.T))
    else:
        np.matmul(xc, lp.W.T, out=Z)
    if lp.b is not None:
        Z += lp.b


def _grad_inputs(lp, Z, out):
    """``out = Z @ weight`` (the rows of grad_inputs)."""
    if out.dtype == Z.dtype and out.flags.c_contiguous:
        np.matmul(Z, lp.W, out=out)
    else:
        out[...] = Z @ lp.W


def _accumulate_weight(lp, r0, r1, Z, GW):
    """``GW += Z.T @ inputs[r0:r1]`` without a (V, D) temporary: BLAS gemm with beta = 1 on
    the Fortran views (GW (V, D) C-order is GW.T (D, V) F-order)."""
    xc = lp.X[r0:r1]
    if lp.sparse:
        GW += (xc.T @ Z).T
        return
    gemm = _gemm(Z.dtype)
    if gemm is None:
        GW += Z.T @ xc
        return
    # GW.T (D, V) += xc.T (D, m) @ Z (m, V); xc.T and Z.T are F-contiguous views: no copies
    out = gemm(1.0, xc.T, Z.T, beta=1.0, c=GW.T, trans_b=1, overwrite_c=1)
    if not np.shares_memory(out, GW):  # never expected: f2py copied the buffer
        GW[...] = out.T


def _column_sums(Z, ones, acc):
    """``acc += Z.sum(axis=0)``: BLAS matrix-vector products, float64 across blocks."""
    n = Z.shape[0]
    if Z.dtype == np.float64 or n <= _SUM_BLOCK:
        acc += ones[:n] @ Z
        return
    nb = n // _SUM_BLOCK
    head = np.matmul(ones[:_SUM_BLOCK], Z[:nb * _SUM_BLOCK].reshape(nb, _SUM_BLOCK, -1))
    acc += head.sum(axis=0, dtype=np.float64)
    if nb * _SUM_BLOCK < n:
        acc += ones[:n - nb * _SUM_BLOCK] @ Z[nb * _SUM_BLOCK:]


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
    diag = first = None
    if statuses[0].diag is not None:
        diag, first = dict.fromkeys(_backends.DIAG, 0), dict.fromkeys(_backends.DIAG, -1)
        for k, s in enumerate(statuses):
            for name in _backends.DIAG:
                if s.diag[name] and first[name] < 0:
                    first[name] = s.first[name] + k * rows
                diag[name] += s.diag[name]
    merged = _backends.Status(sum(s.nbad for s in statuses), sum(s.total for s in statuses),
                              diag, first)
    if merged.nbad or diag is not None:
        _engine._status(p, merged)
    return merged.total


# ------------------------------------------------------------------------------ operations

def _reduced(lp, total, denom):
    rows = lp.rows
    if rows.reduction == "mean":
        total = total / denom if denom else 0.0
    result = rows.out_dtype.type(total)
    if lp.loss_out is None:
        return result
    lp.loss_out[...] = total
    return lp.loss_out


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
    GX = GW = gb = None
    if grads and "inputs" in wrt:
        GX = lp.grad_inputs_out if lp.grad_inputs_out is not None else \
            np.empty(lp.X.shape, dtype)
    if grads and "weight" in wrt:
        out = lp.grad_weight_out
        GW = out if (out is not None and out.dtype == dtype and out.flags.c_contiguous) \
            else np.empty((V, D), dtype)
        GW.fill(0)
    if grads and "bias" in wrt and lp.b is not None:
        gb = np.zeros(V, np.float64)
    ones = np.ones(min(m, max(N, 1)), dtype) if gb is not None else None

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
        if GW is not None:
            _accumulate_weight(lp, r0, r1, Z, GW)
        if gb is not None:
            _column_sums(Z, ones, gb)
    total = _finish_chunks(rows, statuses, m)

    loss = None
    if want_loss:
        if none:
            if rows.sw is not None:
                values *= rows.sw
            loss = _finish_row_buffer(lp.loss_out, values)
        else:
            loss = _reduced(lp, total, denom)
    if lse_buf is not None:
        _finish_row_buffer(lp.lse_out, lse_buf)
    if GW is not None and lp.grad_weight_out is not None and GW is not lp.grad_weight_out:
        np.copyto(lp.grad_weight_out, GW, casting="unsafe")
        GW = lp.grad_weight_out
    if gb is not None:
        out = lp.grad_bias_out
        if out is not None:
            np.copyto(out, gb, casting="unsafe")
            gb = out
        else:
            gb = gb.astype(dtype)
    if lp.sparse and GX is not None:
        GX = np.asarray(GX)
    return loss, GX, GW, gb
