"""The kernel table: what every backend implements, with the same names and argument order.

A backend is a module that defines ``NAME``, ``is_available()``, ``why_unavailable()`` and
every function in :data:`KERNELS`. The NumPy backend (``numpy_.py``) is the readable
specification of the maths; the others must agree with it (tests run the whole matrix per
backend).

Contract (DESIGN.md "Kernel contract"):

* ``x`` (logits) is a 2-D C-contiguous ``(n, C)`` float32 or float64 array, possibly
  read-only. Every other float array has ``x.dtype``. Kernels never convert, never allocate
  an output the caller provides, and never raise on data: they *report* (return a count).
* ``y`` dense labels: ``(n, C)``, same dtype. ``t`` integer labels: ``(n,)`` ``np.intp``.
* ``cw`` class weights: ``(C,)``, or length 0 for "no class weights".
* ``eps`` label smoothing in [0, 1]: ``y' = (1 - eps) y + eps / C`` (sigmoid: ``eps / 2``),
  applied inside the kernel, never materialised.
* ``z`` z-loss coefficient: the row loss gains ``z * lse**2``.
* ``has_ignore``/``ignore_index``: rows with ``t == ignore_index`` (when ``has_ignore``)
  contribute exactly 0 to loss and gradient.
* ``scale``: per-row factor applied to gradients (upstream gradient x sample weight /
  reduction denominator). Softmax kernels: shape ``(n,)`` or ``(1,)`` (broadcast).
  Sigmoid kernels: 2-D ``(n or 1, C or 1)`` (elementwise upstream gradients).
* ``lse``: ``(n,)`` buffer; forward kernels fill it when its length is ``n`` (length 0: skip);
  backward kernels use it instead of recomputing max and sum-of-exp when its length is ``n``.
* Outputs (``loss``, ``grad``, ``out``) are caller-provided; ``grad``/``out`` may be ``x``
  itself (in-place), so a kernel must finish reading a row of ``x`` before writing it or
  write each element only after its last read.
* Per-row losses (softmax: ``loss`` shape ``(n,)``) include class weights, smoothing and the
  z-loss, but not sample weights (the boundary applies those and the reduction).
  Sigmoid ``loss`` is ``(n, C)`` (elementwise) or ``(n,)`` (row sums of the elementwise loss).
* Sparse kernels return the number of labels outside ``[0, C)`` that are not ignored; such
  rows are treated as ignored (never indexed), and the boundary turns the count into an error.
  Other kernels return 0.
* Exactness: a class whose coefficient is 0 (label 0, class weight 0) contributes exactly 0
  even where its logit is -inf (no ``0 * inf``). NaN in a row propagates to that row only.
* ``n_threads`` (>= 1) is honoured; results do not depend on it (same bits).
"""

#: Every kernel a backend must provide, with its argument list (the contract above).
KERNELS = {
    "dense_forward": "x, y, cw, eps, z, loss, lse, n_threads",
    "dense_backward": "x, y, cw, eps, z, scale, lse, grad, n_threads",
    "dense_fused": "x, y, cw, eps, z, scale, loss, grad, n_threads",
    "dense_label_grad": "x, cw, eps, scale, lse, out, n_threads",
    "dense_hessp": "x, y, cw, eps, z, scale, v, out, n_threads",
    "sparse_forward": "x, t, cw, eps, z, has_ignore, ignore_index, loss, lse, n_threads",
    "sparse_backward": "x, t, cw, eps, z, has_ignore, ignore_index, scale, lse, grad, n_threads",
    "sparse_fused": "x, t, cw, eps, z, has_ignore, ignore_index, scale, loss, grad, n_threads",
    "sparse_hessp": "x, t, cw, eps, z, has_ignore, ignore_index, scale, v, out, n_threads",
    "sigmoid_forward": "x, y, pw, eps, loss, n_threads",
    "sigmoid_backward": "x, y, pw, eps, scale, grad, n_threads",
    "sigmoid_fused": "x, y, pw, eps, scale, loss, grad, n_threads",
    "sigmoid_label_grad": "x, pw, eps, scale, out, n_threads",
    "logsumexp": "x, out, n_threads",
    "log_softmax": "x, out, n_threads",
    "softmax": "x, out, n_threads",
}
