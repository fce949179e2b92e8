"""Memory per call, on a subset of the grid (float32, the two larger softmax shapes).

* ``peakmem_*``: asv's peak resident memory of the benchmark process. It includes the data
  made in setup (logits, labels, outputs), so compare backends within one shape: the
  difference is what the call itself adds. Setup warms the backend up on a *tiny* problem
  (JIT signatures do not depend on the shape), so no large temporary of a warm-up call
  inflates the peak.
* ``track_alloc_mb``: what one call allocates through NumPy/Python beyond the preallocated
  outputs (tracemalloc peak), in MB. The NumPy baseline allocates several N x C
  temporaries; a fused compiled kernel should allocate almost nothing.
"""

import tracemalloc

from .bench_common import BACKENDS, Data, loss_object, make_call, require_backend, tiny_warmup


class Memory:
    params = [BACKENDS, ["4096x1000", "2048x32768"], ["integer", "dense"],
              ["forward", "fused", "inplace"]]
    param_names = ["backend", "shape", "labels", "op"]
    dtype = "float32"
    timeout = 600

    def setup(self, backend, shape, labels, op):
        require_backend(backend)
        tiny_warmup(labels, self.dtype, backend, op)
        self.data = Data(labels, self.dtype, shape)
        self.call = make_call(loss_object(labels, backend), self.data, op)

    def teardown(self, *params):
        self.data = self.call = None

    def peakmem_call(self, backend, shape, labels, op):
        self.call()

    def track_alloc_mb(self, backend, shape, labels, op):
        tracemalloc.start()
        try:
            self.call()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return peak / 1e6

    track_alloc_mb.unit = "MB"
