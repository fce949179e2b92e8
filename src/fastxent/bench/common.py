"""What every benchmark shares: one timer, one cell (seeded data and the call under test), one
bytes model, one verification rule. Used by ``bench``, ``tune``, ``overhead``, the asv suites
and the tests."""

import statistics
import time

import numpy as np

LABEL_KINDS = ("dense", "integer", "sigmoid")
#: forward: loss only; fused: loss and gradient in one pass; backward: gradient from a saved
#: logsumexp (softmax only); gradient: gradient recomputing the logsumexp; inplace: gradient
#: written over the logits (``gradient_out=logits``).
OPS = ("forward", "fused", "backward", "gradient", "inplace")
SEED = 20240601
TOLERANCE = {"float32": 1e-4, "float64": 1e-9}

BYTES_MODEL = (
    "Bytes model for GB/s: forward reads logits (+ labels: dense/sigmoid N*C, integer N*8) "
    "and writes the losses (N; sigmoid N*C); fused reads logits (+ labels) and writes the "
    "gradient (N*C) and the losses; backward additionally reads the saved logsumexp (N); "
    "gradient/inplace read logits (+ labels) and write the gradient. %stream = GB/s / GB/s of "
    "a stream of the same bytes measured in this run with the same threads: a read stream "
    "(max over the bytes read) for softmax forward, a copy (np.copyto of the logits, counted "
    "read+write) otherwise. check = max|a - ref| / max(1, max|ref|) of loss and gradient "
    "against the NumPy backend in float64, within 1e-4 (float32) / 1e-9 (float64).")


def time_call(fn, repeat, budget, prepare=None):
    """Median seconds per call of ``fn`` (warmed up once): ``(median, samples, number)``.

    Each sample runs ``fn`` ``number`` times (enough for >= ~2 ms) and divides. Sampling
    stops after ``repeat`` samples, or once ``budget`` seconds are spent and at least 3
    samples are in (1 when a single call takes over a third of the budget).
    """
    if prepare is not None:
        prepare()
    number, one = _calls_per_sample(fn, 2e-3)
    min_samples = min(repeat, 1 if one > budget / 3 else 3)
    samples = []
    start = time.perf_counter()
    while len(samples) < repeat:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - t0) / number)
        if len(samples) >= min_samples and time.perf_counter() - start >= budget:
            break
    return statistics.median(samples), samples, number


def _calls_per_sample(fn, seconds):
    """(calls of ``fn`` lasting about ``seconds``, 1 to 10,000; the seconds of one call),
    from one call of ``fn``."""
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    return max(1, min(10000, int(seconds / max(one, 1e-9)))), one


def interleaved(fns, repeat, sample_s=0.0):
    """Seconds per call of each callable of the dict ``fns``: ``{name: (best, median)}``.

    The callables are sampled in turn for ``repeat`` rounds, so that a slow moment of a
    shared machine hits all of them alike. With ``sample_s`` > 0 each is called once first
    and a sample runs it enough times to last about ``sample_s``; else a sample is one call.
    """
    numbers = {k: _calls_per_sample(f, sample_s)[0] if sample_s > 0 else 1
               for k, f in fns.items()}
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(numbers[k]):
                f()
            times[k].append((time.perf_counter() - t0) / numbers[k])
    return {k: (min(ts), statistics.median(ts)) for k, ts in times.items()}


class BusyCores:
    """A context in which ``n`` other processes keep a core busy each (a spinning Python
    loop): the conditions of a machine shared with a browser, a data loader or a CI job."""

    def __init__(self, n):
        self.n = int(n)
        self.procs = []

    def __enter__(self):
        import subprocess
        import sys
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                      for _ in range(self.n)]
        time.sleep(0.2 if self.n else 0.0)  # let the scheduler place them
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()
        self.procs = []
        return False


def max_rel_err(got, ref):
    """``max|got - ref| / max(1, max|ref|)`` in float64 (0 for empty arrays)."""
    if got is None or ref is None or np.size(ref) == 0:
        return 0.0
    ref = np.asarray(ref, dtype=np.float64)
    diff = np.max(np.abs(np.asarray(got, dtype=np.float64) - ref))
    return float(diff) / max(1.0, float(np.max(np.abs(ref))))


def loss_object(kind, backend, n_threads, reduction="none"):
    import fastxent as fx
    cls = {"dense": fx.SoftmaxCrossEntropy, "integer": fx.SparseSoftmaxCrossEntropy,
           "sigmoid": fx.SigmoidCrossEntropy}[kind]
    return cls(reduction=reduction, backend=backend, n_threads=n_threads, check="off")


class Cell:
    """Seeded data for one (labels, dtype, shape) with preallocated, touched outputs."""

    def __init__(self, labels, dtype, shape, seed=SEED):
        n, c = shape
        dtype = np.dtype(dtype)
        rng = np.random.default_rng([seed, n, c, LABEL_KINDS.index(labels)])
        self.kind, self.dtype, self.shape = labels, dtype, (n, c)
        self.logits = rng.standard_normal((n, c), dtype=dtype)
        self.logits *= 3
        if labels == "sigmoid":
            self.labels = (rng.random((n, c), dtype=np.float32) < 0.3).astype(dtype)
        else:
            t = rng.integers(0, c, n).astype(np.intp)
            if labels == "integer":
                self.labels = t
            else:
                self.labels = np.zeros((n, c), dtype)
                self.labels[np.arange(n), t] = 1
        self.loss = np.zeros((n, c) if labels == "sigmoid" else (n,), dtype)
        self.grad = np.zeros((n, c), dtype)
        self.lse = np.zeros(n, dtype)
        self.work = np.empty((n, c), dtype)  # in-place target, refilled before each check
        np.copyto(self.work, self.logits)

    @property
    def x_bytes(self):
        return self.logits.nbytes

    def bytes_moved(self, op):
        """(bytes read, bytes written) per call under the bytes model."""
        x, lab, n = self.logits.nbytes, self.labels.nbytes, self.shape[0]
        if op == "forward":
            return x + lab, self.loss.nbytes
        if op == "fused":
            return x + lab, x + self.loss.nbytes
        if op == "backward":
            return x + lab + n * self.dtype.itemsize, x
        return x + lab, x  # gradient, inplace

    def stream_pattern(self, op):
        return "read" if (op == "forward" and self.kind != "sigmoid") else "copy"

    def reference(self):
        """(loss, gradient) from the NumPy backend in float64 (the oracle of every check)."""
        obj = loss_object(self.kind, "numpy", 1)
        y = self.labels if self.kind == "integer" else self.labels.astype(np.float64)
        return obj.loss_gradient(y, self.logits.astype(np.float64))

    def call(self, op, backend, n_threads):
        """(prepare, run, outputs): ``prepare()`` restores inputs an op destroys (untimed),
        ``run()`` the timed call through the public loss object, ``outputs()`` (loss or
        None, gradient or None)."""
        obj = loss_object(self.kind, backend, n_threads)
        y, x = self.labels, self.logits
        if op == "forward":
            return None, lambda: obj.loss(y, x, loss_out=self.loss), lambda: (self.loss, None)
        if op == "fused":
            return None, (lambda: obj.loss_gradient(y, x, loss_out=self.loss,
                                                    gradient_out=self.grad)), \
                lambda: (self.loss, self.grad)
        if op == "backward":
            def prepare():
                obj.loss(y, x, loss_out=self.loss, lse_out=self.lse)
            return prepare, lambda: obj.gradient(y, x, gradient_out=self.grad, lse=self.lse), \
                lambda: (self.loss, self.grad)
        if op == "gradient":
            return None, lambda: obj.gradient(y, x, gradient_out=self.grad), \
                lambda: (None, self.grad)
        if op == "inplace":
            def prepare():
                np.copyto(self.work, x)
            # repeated calls overwrite the buffer with a gradient of a gradient: values stay in
            # [-1, 1], so the work per call is the same as on fresh logits
            return prepare, lambda: obj.gradient(y, self.work, gradient_out=self.work), \
                lambda: (None, self.work)
        raise ValueError(op)
