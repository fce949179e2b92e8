"""Time of one call per backend x dtype x shape x label kind, one class per operation.

Pattern of scipy's ``benchmarks/fft_basic.py`` (FftBackends): the backend is a parameter,
and a backend that is not available raises NotImplementedError in setup, so asv skips it.
Everything that is not the call itself happens in ``setup``: seeded data, touching every
page, preallocated outputs (``loss_out=`` / ``gradient_out=``), the saved
logsumexp, and one untimed call (JIT compilation, thread-pool start-up, first touch).
"""

from .bench_common import (BACKENDS, DTYPES, LABELS, SHAPES, Data, loss_object, make_call,
                           require_backend)


class _LossBenchmark:
    op = None
    params = [BACKENDS, DTYPES, SHAPES, LABELS]
    param_names = ["backend", "dtype", "shape", "labels"]
    timeout = 600
    # setup already warmed the call up; large cells take ~1 s per call on NumPy
    warmup_time = 0.05
    repeat = (1, 10, 5.0)

    def setup(self, backend, dtype, shape, labels):
        require_backend(backend)
        if self.op == "backward" and labels == "sigmoid":
            raise NotImplementedError("sigmoid cross-entropy has no logsumexp to save")
        self.data = Data(labels, dtype, shape)
        self.call = make_call(loss_object(labels, backend), self.data, self.op)
        self.call()  # JIT compilation, first touch: never in the timed method

    def teardown(self, *params):
        self.data = self.call = None


class Forward(_LossBenchmark):
    """Loss only (``loss(..., loss_out=)``), per-example losses."""
    op = "forward"

    def time_forward(self, backend, dtype, shape, labels):
        self.call()


class Fused(_LossBenchmark):
    """Loss and gradient in one pass (``loss_gradient(..., loss_out=, gradient_out=)``)."""
    op = "fused"

    def time_fused(self, backend, dtype, shape, labels):
        self.call()


class BackwardFromLSE(_LossBenchmark):
    """Gradient from a saved logsumexp (``gradient(..., lse=, gradient_out=)``); softmax only."""
    op = "backward"

    def time_backward(self, backend, dtype, shape, labels):
        self.call()


class InplaceGradient(_LossBenchmark):
    """Gradient written over the logits (``gradient_out=logits``): no N x C copy."""
    op = "inplace"

    def time_inplace(self, backend, dtype, shape, labels):
        self.call()
