"""The kernel ABI: one record describes every kernel call, and every backend runs it.

A backend is a module with ``NAME``, ``is_available()``, ``why_unavailable()`` and
``run(call, n_threads) -> Status``. ``call`` is a :class:`KernelCall`, built by the engine
(or by :func:`kernel_call` in tools and tests): the only way arguments reach a kernel. The
NumPy backend (``numpy_.py``) is the readable specification of the maths; the compiled ones
must agree with it (the tests run the whole matrix per backend). Adding a kernel means one
family here and one branch per backend, nothing else.

Contract (DESIGN.md, "Kernel contract"):

* ``x`` (logits) is a 2-D C-contiguous ``(n, C)`` float32 or float64 array, possibly
  read-only. Every other float array has ``x.dtype``; ``t`` is ``np.intp``. Kernels never
  convert, never allocate an output the caller provides, and never raise on data: they
  *report* (a :class:`Status`).
* ``None`` means absent (no class weights, no saved logsumexp, no loss wanted, ...); how a
  backend represents that internally is its own business.
* Outputs (``loss``, ``grad``, ``lse_out``) are caller-owned. ``grad`` may be ``x`` itself
  (in place): a kernel finishes reading a row of ``x`` before it writes that row. No other
  output may overlap an input or another output (the boundary guarantees it).
* Per-row losses include class weights, smoothing, the z-loss and the softcap, but not the
  row weights ``rs``; the returned ``total`` is ``sum_i rs_i * loss_i`` (in float64, summed
  in an order that depends on the shape only), so reductions never need a pass in Python.
* Gradients are scaled by ``gscale * rs_i`` (upstream gradient, sample weight and the mean's
  denominator folded in by the engine); kernels never know about "mean" or "sum".
* Integer labels outside ``[0, C)`` that are not ``ignore_index`` are counted in
  ``Status.nbad`` and their rows treated as ignored (never indexed); the boundary turns the
  count into an error. With ``shard=True`` (a class shard of a wider row) such labels are
  simply not in this shard.
* Exactness: a class whose coefficient is 0 contributes exactly 0 even where its logit is
  -inf; NaN in a row stays in that row. Results do not depend on ``n_threads`` (same bits).
"""

from collections import namedtuple

import numpy as np

#: Kernel families (the C side has the same numbers: _cython/fxe_params.h).
SOFTMAX, HESSP, LABEL_GRAD, SIGMOID, SIGMOID_LABEL_GRAD, LOGSUMEXP, LOG_SOFTMAX, SOFTMAX_PROB = \
    range(8)
FAMILIES = ("softmax", "hessp", "label_grad", "sigmoid", "sigmoid_label_grad", "logsumexp",
            "log_softmax", "softmax_prob")

#: Diagnostics (``check`` bits) and the counters a Status reports for them.
CHECK_PROB, CHECK_NONFINITE, CHECK_LABELS = 1, 2, 4
DIAG = ("prob_rows", "nonfinite_rows", "nan_label_rows", "neg_label_rows", "sum_label_rows",
        "big_label_rows", "unit_elems", "out01_elems")

#: The record, field by field (name, meaning). Order matters: the compiled backend reads
#: fields by position.
FIELDS = (
    ("family", "one of the families above"),
    ("x", "(n, C) logits"),
    ("y", "dense labels (n, C), or one row (1, C) broadcast to every row, or None"),
    ("t", "integer labels (n,) np.intp, or None"),
    ("cw", "(C,) class weights (softmax) or pos_weight (sigmoid), or None"),
    ("rs", "row weights (n,); sigmoid: (n,) or per element (n, C); or None (all 1)"),
    ("lse_in", "(n,) saved logsumexp: backward in one pass, or None"),
    ("coef_in", "(n,) softmax coefficient of a class shard (with lse_in), or None"),
    ("v", "(n, C) vector of a Hessian-vector product, or None"),
    ("loss", "(n,) per-row losses (sigmoid: (n, C) elementwise), or None"),
    ("grad", "(n, C) gradient / hessp / softmax output (may be x), or (n,) logsumexp"),
    ("lse_out", "(n,) logsumexp of each row, or None"),
    ("ignore_index", "integer label to ignore, or None"),
    ("eps", "label smoothing in [0, 1]"),
    ("n_classes", "classes the smoothing spreads over (C, or the full row for a shard)"),
    ("z", "z-loss coefficient"),
    ("softcap", "logit softcap c (logits -> c tanh(x / c)), 0 for none"),
    ("gscale", "gradient factor applied to every row (with rs)"),
    ("want_total", "compute Status.total even without a loss buffer"),
    ("shard", "labels outside [0, C) belong to other shards (not errors)"),
    ("check", "diagnostics bits"),
    ("prob_tol", "diagnostics: |row sum - 1| under which logits look like probabilities"),
    ("label_tol", "diagnostics: |row sum - 1| above which labels are not a distribution"),
)
KernelCall = namedtuple("KernelCall", [name for name, _ in FIELDS])
KernelCall.__doc__ = "One kernel call (see the module docstring and FIELDS)."

#: What a kernel reports: bad labels, the weighted loss total, and diagnostics counts
#: (``diag`` and ``first``: dicts keyed by DIAG names, or None when ``check`` is 0).
Status = namedtuple("Status", ["nbad", "total", "diag", "first"])

_DEFAULTS = dict(y=None, t=None, cw=None, rs=None, lse_in=None, coef_in=None, v=None,
                 loss=None, grad=None, lse_out=None, ignore_index=None, eps=0.0,
                 n_classes=0, z=0.0, softcap=0.0, gscale=1.0, want_total=False,
                 shard=False, check=0, prob_tol=0.0, label_tol=0.0)


def kernel_call(family, x, **fields):
    """A :class:`KernelCall` with defaults for the fields not given (tools and tests; the
    engine builds its records positionally)."""
    unknown = set(fields) - set(_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown kernel fields: {', '.join(sorted(unknown))}")
    values = dict(_DEFAULTS, **fields)
    if not values["n_classes"]:
        values["n_classes"] = x.shape[1]
    return KernelCall(family, x, **values)


#: Elements per block when a long call is split so that Python can take Ctrl-C between
#: blocks (~10-50 ms of work each; the C backend uses the same size in _kernels.pyx).
SIGNAL_BLOCK_ELEMS = 1 << 24

_PER_ROW = ("x", "t", "lse_in", "coef_in", "v", "loss", "grad", "lse_out")


def rows(call, r0, r1):
    """The same call restricted to rows ``[r0, r1)`` (a broadcast label row stays whole)."""
    n = call.x.shape[0]
    parts = {f: getattr(call, f)[r0:r1] for f in _PER_ROW if getattr(call, f) is not None}
    for f in ("y", "rs"):
        a = getattr(call, f)
        if a is not None and a.shape[0] == n:
            parts[f] = a[r0:r1]
    return call._replace(**parts)


def in_row_blocks(run_block, call, rows_per_block):
    """``run_block(rows(call, r0, r1), r0, r1)`` block after block, the statuses merged
    (totals in block order, diagnostics' first rows shifted). Between blocks the interpreter
    takes pending signals, so Ctrl-C stops a long call there (outputs partly written)."""
    n = call.x.shape[0]
    return merge([run_block(rows(call, r0, min(n, r0 + rows_per_block)), r0,
                            min(n, r0 + rows_per_block))
                  for r0 in range(0, n, rows_per_block)], rows_per_block)


def merge(statuses, rows_per_block):
    """One Status for consecutive blocks of ``rows_per_block`` rows: counts and totals
    added in block order, diagnostics' first rows shifted by the block offsets."""
    diag = first = None
    if statuses and statuses[0].diag is not None:
        diag, first = dict.fromkeys(DIAG, 0), dict.fromkeys(DIAG, -1)
        for k, s in enumerate(statuses):
            for name in DIAG:
                if s.diag[name] and first[name] < 0:
                    first[name] = s.first[name] + k * rows_per_block
                diag[name] += s.diag[name]
    return Status(sum(s.nbad for s in statuses), sum(s.total for s in statuses), diag, first)


def empty_status(check):
    """The Status of a call with no rows."""
    if not check:
        return Status(0, 0.0, None, None)
    return Status(0, 0.0, dict.fromkeys(DIAG, 0), dict.fromkeys(DIAG, -1))


def float_dtypes():
    return (np.dtype(np.float32), np.dtype(np.float64))
