"""Shared parameters and set-up helpers of the asv suites (no benchmarks in this module).

Self-contained on purpose: it uses only fastxent's public API (plus its stream measurement
where present), so ``asv continuous`` can run the current suites against older commits.
"""

import numpy as np

import fastxent

#: The NumPy backend is the baseline; "auto" is what users get by default.
BACKENDS = ["numpy", "numba", "cython", "auto"]
DTYPES = ["float32", "float64"]
#: (rows, classes) as strings (readable in the dashboard); the smoke test swaps in tiny ones.
SHAPES = ["256x10", "4096x1000", "2048x32768", "1000000x3"]
LABELS = ["dense", "integer", "sigmoid"]
SEED = 20240601


def parse_shape(shape):
    n, c = (int(v) for v in str(shape).lower().split("x"))
    return n, c


def require_backend(backend):
    """asv skips a parameter combination whose setup raises NotImplementedError."""
    if backend == "auto":
        return
    if backend not in fastxent.available_backends():
        raise NotImplementedError(f"backend {backend!r} is not available here")


def loss_object(labels, backend, n_threads=None):
    cls = {"dense": fastxent.SoftmaxCrossEntropy,
           "integer": fastxent.SparseSoftmaxCrossEntropy,
           "sigmoid": fastxent.SigmoidCrossEntropy}[labels]
    try:
        return cls(reduction="none", backend=backend, n_threads=n_threads, check="off")
    except TypeError:  # before diagnostics existed
        return cls(reduction="none", backend=backend, n_threads=n_threads)


class Data:
    """Seeded logits and labels, and preallocated, touched outputs (all in setup)."""

    def __init__(self, labels, dtype, shape, seed=SEED):
        n, c = parse_shape(shape)
        dtype = np.dtype(dtype)
        rng = np.random.default_rng([seed, n, c, LABELS.index(labels)])
        self.labels_kind, self.dtype, self.shape = labels, dtype, (n, c)
        self.x = rng.standard_normal((n, c), dtype=dtype)
        self.x *= 3
        if labels == "sigmoid":
            self.y = (rng.random((n, c), dtype=np.float32) < 0.3).astype(dtype)
        else:
            t = rng.integers(0, c, n).astype(np.intp)
            if labels == "integer":
                self.y = t
            else:
                self.y = np.zeros((n, c), dtype)
                self.y[np.arange(n), t] = 1
        self.loss = np.zeros((n, c) if labels == "sigmoid" else (n,), dtype)
        self.grad = np.zeros((n, c), dtype)
        self.lse = np.zeros(n, dtype)
        self.work = self.x.copy()

    def bytes_moved(self, op):
        """Bytes read + written per call (the bytes model of ``python -m fastxent bench``)."""
        x, lab = self.x.nbytes, self.y.nbytes
        n = self.shape[0] * self.dtype.itemsize
        return {"forward": x + lab + self.loss.nbytes,
                "fused": 2 * x + lab + self.loss.nbytes,
                "backward": 2 * x + lab + n,
                "inplace": 2 * x + lab}[op]


def _names(obj):
    """The output keywords of this version of fastxent: (loss, gradient); 0.1 had out= and
    grad_out= (the suites stay runnable on older commits for asv continuous)."""
    import inspect
    if "gradient_out" in inspect.signature(obj.gradient).parameters:
        return "loss_out", "gradient_out", "gradient_out"
    return "out", "out", "grad_out"


def make_call(obj, data, op):
    """The call a benchmark times, as a zero-argument function (outputs preallocated)."""
    x, y = data.x, data.y
    loss_kw, grad_kw, fused_kw = _names(obj)
    if op == "forward":
        return lambda: obj.loss(y, x, **{loss_kw: data.loss})
    if op == "fused":
        return lambda: obj.loss_gradient(y, x, loss_out=data.loss, **{fused_kw: data.grad})
    if op == "backward":
        if data.labels_kind == "sigmoid":
            raise NotImplementedError("sigmoid cross-entropy has no logsumexp to save")
        obj.loss(y, x, lse_out=data.lse, **{loss_kw: data.loss})  # the saved lse (in setup)
        return lambda: obj.gradient(y, x, lse=data.lse, **{grad_kw: data.grad})
    if op == "inplace":
        # Repeated calls overwrite the buffer with a gradient of a gradient: values stay in
        # [-1, 1], so every call does the same work as on fresh logits.
        return lambda: obj.gradient(y, data.work, **{grad_kw: data.work})
    raise ValueError(op)


def tiny_warmup(labels, dtype, backend, op, n_threads=None):
    """Compile/initialise a backend for (labels, dtype, op) on a tiny problem: JIT
    signatures depend on dtypes and label kind, not on the shape."""
    d = Data(labels, dtype, "8x5")
    make_call(loss_object(labels, backend, n_threads), d, op)()
