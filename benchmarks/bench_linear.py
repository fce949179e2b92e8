"""Fused linear + softmax cross-entropy (``fastxent.LinearSoftmaxCrossEntropy``): time and
peak memory against the GEMMs of an unfused linear layer with full (N, V) logits.

* ``LinearLoss.time_*``: ``loss`` and ``loss_gradient`` per backend (float32, integer
  labels, a bias, reduction "mean"); ``Gemms.time_*`` the floor they are compared with in
  the same run: one GEMM (``X W^T`` into a preallocated (N, V) buffer) and the three of a
  forward + backward (``X W^T``, ``dZ W``, ``dZ^T X``).
* ``LinearMemory.peakmem_*``: asv's peak resident memory of the process, inputs included:
  the fused loss holds one chunk of rows, the GEMM baseline the whole (N, V) logits.

``python -m fastxent linbench`` measures the same side by side with PyTorch, and the peak
memory beyond inputs and outputs in fresh processes.
"""

import numpy as np

import fastxent

from .bench_common import SEED, require_backend

SHAPES = ["512x64x8192", "2048x128x65536"]  # N x D x V


def _data(shape, dtype="float32"):
    n, d, v = (int(s) for s in shape.split("x"))
    rng = np.random.default_rng([SEED, n, d, v])
    X = rng.standard_normal((n, d), dtype=dtype)
    W = rng.standard_normal((v, d), dtype=dtype) * np.asarray(d ** -0.5, dtype)
    b = rng.standard_normal(v, dtype=dtype) * np.asarray(0.1, dtype)
    return X, W, b, rng.integers(0, v, n).astype(np.intp)


def _require_linear():
    if not hasattr(fastxent, "LinearSoftmaxCrossEntropy"):
        raise NotImplementedError("this fastxent has no fused linear loss (issue 15)")


class LinearLoss:
    params = [["numba", "cython", "auto"], SHAPES, ["loss", "loss_gradient"]]
    param_names = ["backend", "shape", "op"]
    timeout = 600
    warmup_time = 0.05
    repeat = (1, 5, 10.0)

    def setup(self, backend, shape, op):
        _require_linear()
        require_backend(backend)
        self.X, self.W, self.b, self.t = _data(shape)
        loss = fastxent.LinearSoftmaxCrossEntropy(backend=backend, check="off")
        self.call = getattr(loss, op)
        self.call(self.t, self.X, self.W, self.b)  # compilation, first touch, BLAS threads

    def time_call(self, backend, shape, op):
        self.call(self.t, self.X, self.W, self.b)


class Gemms:
    params = [SHAPES]
    param_names = ["shape"]
    timeout = 600
    warmup_time = 0.05
    repeat = (1, 5, 10.0)

    def setup(self, shape):
        self.X, self.W, _, _ = _data(shape)
        n, v = self.X.shape[0], self.W.shape[0]
        self.Z = np.ones((n, v), np.float32)
        self.GX, self.GW = np.ones_like(self.X), np.ones_like(self.W)
        self.time_three()

    def time_one(self, shape):
        np.matmul(self.X, self.W.T, out=self.Z)

    def time_three(self, *args):
        np.matmul(self.X, self.W.T, out=self.Z)
        np.matmul(self.Z, self.W, out=self.GX)
        np.matmul(self.Z.T, self.X, out=self.GW)


class LinearMemory:
    params = [["fused", "unfused"], ["2048x256x65536"]]  # logits: 512 MiB
    param_names = ["method", "shape"]
    timeout = 600

    def setup(self, method, shape):
        _require_linear()
        self.X, self.W, self.b, self.t = _data(shape)
        self.loss = fastxent.LinearSoftmaxCrossEntropy(check="off")
        self.plain = fastxent.SparseSoftmaxCrossEntropy(check="off")
        small = (self.t[:4] % 8, self.X[:4], self.W[:8], self.b[:8])
        self._run(method, *small)  # warm-up on a tiny problem

    def _run(self, method, t, X, W, b):
        if method == "fused":
            self.loss.loss_gradient(t, X, W, b)
        else:
            Z = X @ W.T + b
            self.plain.gradient(t, Z, gradient_out=Z)
            Z @ W, Z.T @ X, Z.sum(axis=0)

    def peakmem_loss_gradient(self, method, shape):
        self._run(method, self.t, self.X, self.W, self.b)
