"""Throughput as a fraction of the memory-stream limit, measured in the same process.

For each cell the method times the call (median of several, after the warm-up in setup),
then a stream of the same bytes with the same thread count (``fastxent.bench.stream``: a read
stream for forward, a copy for fused), and returns GB/s(call) / GB/s(stream). 1.0 means the
call runs as fast as a plain copy of its data. ``track_gbps`` is the call's own throughput
under the bytes model of ``python -m fastxent bench``.
"""

import statistics
import time

import fastxent

from .bench_common import BACKENDS, SHAPES, Data, loss_object, make_call, require_backend

#: Seconds spent timing the call, and measuring the stream, per track_ method (the smoke
#: test lowers them).
TIME_BUDGET = 0.25
STREAM_BUDGET = 0.2


def _median_time(fn, budget=None, max_samples=15):
    budget = TIME_BUDGET if budget is None else budget
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    number = max(1, int(2e-3 / max(one, 1e-9)))
    samples = []
    start = time.perf_counter()
    while len(samples) < max_samples:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - t0) / number)
        if len(samples) >= 3 and time.perf_counter() - start > budget:
            break
    return statistics.median(samples)


class StreamFraction:
    params = [BACKENDS, SHAPES, ["integer", "dense"], ["forward", "fused"]]
    param_names = ["backend", "shape", "labels", "op"]
    dtype = "float32"
    timeout = 600

    def setup(self, backend, shape, labels, op):
        require_backend(backend)
        try:
            from fastxent.bench import stream as _stream
        except ImportError:
            try:
                from fastxent import _stream  # fastxent 0.1
            except ImportError:  # an older commit without the stream module
                raise NotImplementedError("no stream measurement in this version") from None
        self.stream = _stream
        self.data = Data(labels, self.dtype, shape)
        self.call = make_call(loss_object(labels, backend), self.data, op)
        self.call()  # warm-up
        self.threads = fastxent.get_num_threads()

    def teardown(self, *params):
        self.data = self.call = None

    def _gbps(self, op):
        return self.data.bytes_moved(op) / _median_time(self.call) / 1e9

    def track_gbps(self, backend, shape, labels, op):
        return self._gbps(op)

    track_gbps.unit = "GB/s"

    def track_stream_fraction(self, backend, shape, labels, op):
        d = self.data
        if op == "forward":
            stream = self.stream.stream_gbps("read", d.x.nbytes + d.y.nbytes, self.threads,
                                             d.dtype, budget=STREAM_BUDGET)
        else:
            stream = self.stream.stream_gbps("copy", d.x.nbytes, self.threads, d.dtype,
                                             budget=STREAM_BUDGET)
        self.stream.clear_cache()
        return self._gbps(op) / stream

    track_stream_fraction.unit = "fraction"
