"""``python -m fastxent bench``: every available backend against the NumPy baseline.

For each cell of the grid (operation x label kind x dtype x shape x thread count) this

1. makes seeded data once (pages touched, outputs preallocated, nothing allocated in the
   timed loop: every call passes ``out=`` / ``loss_out=`` / ``grad_out=``);
2. computes a float64 reference with the NumPy backend, and for each backend runs the call
   once untimed (JIT warm-up, first touch) and checks its loss and gradient against that
   reference (``max|a - ref| / max(1, max|ref|)`` within a dtype tolerance);
3. times it: median of ``--repeat`` samples, each long enough to beat timer noise, within a
   time budget per backend and cell;
4. measures a memory stream of the same bytes in the same process (``fastxent._stream``)
   and reports the kernel's GB/s as a percentage of it;
5. prints one row per backend with time, GB/s, % of the stream, speed-up over NumPy, the
   check, and which backend ``"auto"`` picks for that cell (marked ``*``).

``--peers`` adds scikit-learn, PyTorch and JAX (when installed) as extra rows of the same
cells, measured in the same run with the same thread count where the library allows it.
"""

import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np

from . import _dispatch, _registry, _stream, _threads
from ._version import __version__

DEFAULT_SHAPES = ((256, 10), (4096, 1000), (2048, 32768), (1_000_000, 3))
DEFAULT_DTYPES = ("float32", "float64")
DEFAULT_LABELS = ("integer", "dense")
DEFAULT_OPS = ("forward", "fused")
QUICK_SHAPES = ((256, 10), (4096, 1000), (1_000_000, 3))
QUICK_DTYPES = ("float32",)
QUICK_LABELS = ("integer",)

LABEL_KINDS = ("dense", "integer", "sigmoid")
#: forward: loss only; fused: loss and gradient in one pass; backward: gradient from a saved
#: logsumexp (softmax only); gradient: gradient recomputing the logsumexp; inplace: gradient
#: written over the logits (``out=logits``).
OPS = ("forward", "fused", "backward", "gradient", "inplace")
PEERS = ("sklearn", "torch", "jax")
SEED = 20240601
_TOL = {"float32": 1e-4, "float64": 1e-9}
_DISPATCH_OP = {"forward": "forward", "fused": "fused", "backward": "backward",
                "gradient": "backward", "inplace": "backward"}
_DISPATCH_KIND = {"dense": "dense", "integer": "sparse", "sigmoid": "sigmoid"}

BYTES_MODEL = (
    "Bytes model for GB/s: forward reads logits (+ labels: dense/sigmoid N*C, integer N*8) "
    "and writes the losses (N; sigmoid N*C); fused reads logits (+ labels) and writes the "
    "gradient (N*C) and the losses; backward additionally reads the saved logsumexp (N); "
    "gradient/inplace read logits (+ labels) and write the gradient. "
    "%stream = GB/s / GB/s of a stream of the same bytes measured in this run with the same "
    "threads: a read stream (max/sum over the bytes read) for softmax forward, a copy "
    "(np.copyto of the logits into a preallocated buffer, counted read+write) otherwise. "
    "xNumPy = NumPy backend time / time. check = max|a - ref| / max(1, max|ref|) of loss "
    "and gradient against the NumPy backend in float64, within 1e-4 (float32) / 1e-9 "
    "(float64). * = the backend 'auto' picks for that cell.")


# ------------------------------------------------------------------------------ options

def _csv(text):
    return [s.strip() for s in str(text).split(",") if s.strip()]


def parse_shapes(text):
    """``"256x10,4096x1000,1_000_000x3"`` -> [(256, 10), (4096, 1000), (1000000, 3)]."""
    shapes = []
    for item in _csv(text):
        parts = item.lower().replace("*", "x").split("x")
        try:
            dims = tuple(int(float(p.replace("_", ""))) for p in parts)
        except ValueError:
            raise ValueError(f"shape {item!r} is not NxC (e.g. 4096x1000)") from None
        if len(dims) != 2 or min(dims) < 1:
            raise ValueError(f"shape {item!r} is not NxC with N, C >= 1 (e.g. 4096x1000)")
        shapes.append(dims)
    if not shapes:
        raise ValueError("--shapes is empty")
    return shapes


def _choices(text, allowed, what):
    items = _csv(text)
    bad = [i for i in items if i not in allowed]
    if bad or not items:
        raise ValueError(f"--{what} {text!r}: use a comma-separated subset of "
                         f"{','.join(allowed)}")
    return items


def add_arguments(parser):
    """Options of the ``bench`` subcommand (called by ``fastxent.__main__``)."""
    g = parser.add_argument
    g("--shapes", help="comma-separated NxC shapes (default: 256x10,4096x1000,2048x32768,"
                       "1000000x3; --quick: 256x10,4096x1000,1000000x3)")
    g("--dtypes", help="float32,float64 (default both; --quick: float32)")
    g("--labels", help="label kinds: dense,integer,sigmoid (default integer,dense; --quick: "
                       "integer)")
    g("--ops", help="forward,fused,backward,gradient,inplace (default forward,fused). "
                    "backward = gradient from a saved logsumexp (softmax only); inplace = "
                    "gradient with out=logits")
    g("--threads", help="thread counts, comma-separated (default: the library default, "
                        f"{_threads.get_num_threads()} here)")
    g("--backends", help="backends to compare (default: every available one); the NumPy "
                         "baseline is always measured")
    g("--peers", action="store_true",
      help="also measure scikit-learn, PyTorch and JAX when installed (same cells, same "
           "thread count where the library allows)")
    g("--quick", action="store_true", help="a small grid and short time budget (seconds)")
    g("--repeat", type=int, default=None,
      help="timed samples per backend and cell; the median is reported (default 7; "
           "--quick 5). Fewer are taken when --budget runs out (at least 1; 3 unless one "
           "call takes over a third of the budget)")
    g("--budget", type=float, default=None,
      help="seconds of timing per backend and cell (default 0.4; --quick 0.1)")
    g("--json", metavar="FILE", help="write every row (and the machine) as JSON to FILE")
    g("--plot", metavar="FILE.png",
      help="plot throughput against the number of classes per backend (needs matplotlib)")
    g("--no-progress", action="store_true", help="no progress bar on stderr")
    g("--seed", type=int, default=SEED, help="seed of the random data")
    return parser


class Config:
    """A resolved benchmark grid (what ``main`` runs); build with :func:`config_from_args`."""

    def __init__(self, shapes, dtypes, labels, ops, threads, backends, peers, repeat, budget,
                 seed=SEED, progress=True):
        self.shapes = [tuple(s) for s in shapes]
        self.dtypes = list(dtypes)
        self.labels = list(labels)
        self.ops = list(ops)
        self.threads = [int(t) for t in threads]
        self.backends = list(backends)
        self.peers = list(peers)
        self.repeat = int(repeat)
        self.budget = float(budget)
        self.seed = int(seed)
        self.progress = progress

    def cells(self):
        """(op, labels, dtype, shape, threads) for every meaningful combination."""
        out = []
        for shape in self.shapes:
            for dtype in self.dtypes:
                for labels in self.labels:
                    for op in self.ops:
                        if op == "backward" and labels == "sigmoid":
                            continue  # no logsumexp to save for an elementwise loss
                        for nt in self.threads:
                            out.append((op, labels, dtype, shape, nt))
        return out

    def as_dict(self):
        return {"shapes": ["x".join(map(str, s)) for s in self.shapes], "dtypes": self.dtypes,
                "labels": self.labels, "ops": self.ops, "threads": self.threads,
                "backends": self.backends, "peers": self.peers, "repeat": self.repeat,
                "budget_s": self.budget, "seed": self.seed}


def config_from_args(args):
    quick = bool(getattr(args, "quick", False))
    get = lambda name: getattr(args, name, None)  # noqa: E731
    shapes = parse_shapes(get("shapes")) if get("shapes") else list(
        QUICK_SHAPES if quick else DEFAULT_SHAPES)
    dtypes = (_choices(get("dtypes"), DEFAULT_DTYPES, "dtypes") if get("dtypes")
              else list(QUICK_DTYPES if quick else DEFAULT_DTYPES))
    labels = (_choices(get("labels"), LABEL_KINDS, "labels") if get("labels")
              else list(QUICK_LABELS if quick else DEFAULT_LABELS))
    ops = _choices(get("ops"), OPS, "ops") if get("ops") else list(DEFAULT_OPS)
    if get("threads"):
        threads = []
        for t in _csv(get("threads")):
            try:
                threads.append(_threads.resolve(int(t)))
            except (TypeError, ValueError):
                raise ValueError(f"--threads {get('threads')!r}: use positive ints or -1 "
                                 f"(all cores)") from None
    else:
        threads = [_threads.get_num_threads()]
    available = list(_registry.available_backends())
    if get("backends"):
        wanted = _choices(get("backends"), _registry.known_backends(), "backends")
        missing = [b for b in wanted if b not in available]
        if missing:
            raise ValueError("backend(s) not available here: " + "; ".join(
                f"{b}: {_registry.why(b)}" for b in missing))
        backends = ["numpy"] + [b for b in wanted if b != "numpy"]
    else:
        backends = ["numpy"] + [b for b in available if b != "numpy"]
    peers = [p for p in PEERS if _peer_available(p)] if get("peers") else []
    repeat = get("repeat") or (5 if quick else 7)
    budget = get("budget") or (0.1 if quick else 0.4)
    if repeat < 1 or budget <= 0:
        raise ValueError("--repeat must be >= 1 and --budget > 0")
    return Config(shapes, dtypes, labels, ops, threads, backends, peers, repeat, budget,
                  get("seed") if get("seed") is not None else SEED,
                  progress=not get("no_progress"))


# ------------------------------------------------------------------------------ data

class Cell:
    """Seeded data for one (labels, dtype, shape) with preallocated, touched outputs."""

    def __init__(self, labels, dtype, shape, seed):
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
        loss_shape = (n, c) if labels == "sigmoid" else (n,)
        self.loss = np.zeros(loss_shape, dtype)
        self.grad = np.zeros((n, c), dtype)
        self.lse = np.zeros(n, dtype)
        self.work = np.empty((n, c), dtype)  # in-place target, refilled before each check
        np.copyto(self.work, self.logits)

    @property
    def x_bytes(self):
        return self.logits.nbytes

    def bytes_moved(self, op):
        """(bytes read, bytes written) per call under the stated bytes model."""
        x, lab, n, item = self.logits.nbytes, self.labels.nbytes, self.shape[0], self.dtype.itemsize
        loss_bytes = self.loss.nbytes
        if op == "forward":
            return x + lab, loss_bytes
        if op == "fused":
            return x + lab, x + loss_bytes
        if op == "backward":
            return x + lab + n * item, x
        return x + lab, x  # gradient, inplace

    def stream_pattern(self, op):
        return "read" if (op == "forward" and self.kind != "sigmoid") else "copy"


def _loss_object(kind, backend, n_threads):
    from .losses import SigmoidCrossEntropy, SoftmaxCrossEntropy, SparseSoftmaxCrossEntropy
    cls = {"dense": SoftmaxCrossEntropy, "integer": SparseSoftmaxCrossEntropy,
           "sigmoid": SigmoidCrossEntropy}[kind]
    return cls(reduction="none", backend=backend, n_threads=n_threads)


def reference(cell):
    """(loss, gradient) from the NumPy backend in float64 (the oracle every row is checked
    against)."""
    obj = _loss_object(cell.kind, "numpy", 1)
    x = cell.logits.astype(np.float64)
    y = cell.labels if cell.kind == "integer" else cell.labels.astype(np.float64)
    return obj.loss_gradient(y, x)


def fastxent_call(cell, op, backend, n_threads):
    """(prepare, run, outputs): ``prepare()`` restores inputs an op destroys (untimed),
    ``run()`` is the timed call, ``outputs()`` gives (loss or None, grad or None)."""
    obj = _loss_object(cell.kind, backend, n_threads)
    y, x = cell.labels, cell.logits
    if op == "forward":
        return None, lambda: obj.loss(y, x, out=cell.loss), lambda: (cell.loss, None)
    if op == "fused":
        return None, (lambda: obj.loss_gradient(y, x, loss_out=cell.loss, grad_out=cell.grad)), \
            lambda: (cell.loss, cell.grad)
    if op == "backward":
        def prepare():
            obj.loss(y, x, out=cell.loss, lse_out=cell.lse)
        return prepare, lambda: obj.gradient(y, x, out=cell.grad, lse=cell.lse), \
            lambda: (cell.loss, cell.grad)
    if op == "gradient":
        return None, lambda: obj.gradient(y, x, out=cell.grad), lambda: (None, cell.grad)
    if op == "inplace":
        def prepare():
            np.copyto(cell.work, x)
        # Timed calls keep overwriting the same buffer with a gradient of a gradient: values
        # stay in [-1, 1], so the work per call is the same as on fresh logits.
        return prepare, lambda: obj.gradient(y, cell.work, out=cell.work), \
            lambda: (None, cell.work)
    raise ValueError(op)


# ------------------------------------------------------------------------------ peers

def _peer_available(name):
    import importlib.util
    module = {"sklearn": "sklearn", "torch": "torch", "jax": "jax"}[name]
    return importlib.util.find_spec(module) is not None


def peer_call(name, cell, op, n_threads):
    """Like :func:`fastxent_call` for a peer library, or a string saying why not (n/a)."""
    try:
        return {"sklearn": _sklearn_call, "torch": _torch_call, "jax": _jax_call}[name](
            cell, op, n_threads)
    except ImportError as exc:
        return f"import failed: {exc}"


def _sklearn_call(cell, op, n_threads):
    from sklearn._loss.loss import HalfBinomialLoss, HalfMultinomialLoss
    if op not in ("forward", "fused", "gradient"):
        return f"scikit-learn has no {op} operation"
    if cell.kind == "dense":
        return "scikit-learn's losses take class indices, not dense labels"
    if cell.kind == "integer":
        loss_obj = HalfMultinomialLoss(n_classes=cell.shape[1])
        y = cell.labels.astype(cell.dtype)
        x, loss, grad = cell.logits, cell.loss, cell.grad
    else:  # elementwise binomial on the flattened arrays (views, no copies)
        loss_obj = HalfBinomialLoss()
        y = cell.labels.reshape(-1)
        x, loss, grad = cell.logits.reshape(-1), cell.loss.reshape(-1), cell.grad.reshape(-1)
    if op == "forward":
        run = lambda: loss_obj.loss(y, x, loss_out=loss, n_threads=n_threads)  # noqa: E731
        return None, run, lambda: (cell.loss, None)
    if op == "fused":
        run = lambda: loss_obj.loss_gradient(  # noqa: E731
            y, x, loss_out=loss, gradient_out=grad, n_threads=n_threads)
        return None, run, lambda: (cell.loss, cell.grad)
    run = lambda: loss_obj.gradient(y, x, gradient_out=grad, n_threads=n_threads)  # noqa: E731
    return None, run, lambda: (None, cell.grad)


class _TorchThreads:
    def __init__(self, torch, n):
        self.torch, self.n = torch, n

    def __call__(self, fn):
        def run():
            old = self.torch.get_num_threads()
            self.torch.set_num_threads(self.n)
            try:
                return fn()
            finally:
                self.torch.set_num_threads(old)
        return run


def _torch_call(cell, op, n_threads):
    import torch
    import torch.nn.functional as F
    if op not in ("forward", "fused", "gradient"):
        return f"PyTorch has no separate {op} operation"
    x = torch.from_numpy(cell.logits)
    y = torch.from_numpy(cell.labels)
    loss_np, grad_np = cell.loss, cell.grad
    loss_t, grad_t = torch.from_numpy(loss_np), torch.from_numpy(grad_np)
    if cell.kind == "sigmoid":
        f = lambda z: F.binary_cross_entropy_with_logits(z, y, reduction="none")  # noqa: E731
    else:  # integer: class indices (int64); dense: probability targets
        f = lambda z: F.cross_entropy(z, y, reduction="none")  # noqa: E731
    ones = torch.ones(loss_np.shape, dtype=x.dtype)
    threads = _TorchThreads(torch, n_threads)
    if op == "forward":
        def run():
            with torch.no_grad():
                loss_t.copy_(f(x))
        return None, threads(run), lambda: (loss_np, None)

    def run():  # autograd: what a PyTorch training step does for this loss
        z = x.detach().requires_grad_(True)
        value = f(z)
        value.backward(ones)
        with torch.no_grad():
            loss_t.copy_(value)
            grad_t.copy_(z.grad)
    return None, threads(run), lambda: (loss_np if op == "fused" else None, grad_np)


def _jax_call(cell, op, n_threads):
    import jax
    import jax.numpy as jnp
    if op not in ("forward", "fused", "gradient"):
        return f"JAX has no separate {op} operation"
    if cell.dtype == np.float64 and not jax.config.jax_enable_x64:
        return "JAX runs float64 only with JAX_ENABLE_X64=1"
    y = jnp.asarray(cell.labels)
    if cell.kind == "sigmoid":
        def per_row(z):
            return jnp.maximum(z, 0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z)))
    elif cell.kind == "integer":
        def per_row(z):
            picked = jnp.take_along_axis(z, y[:, None], axis=1)[:, 0]
            return jax.nn.logsumexp(z, axis=1) - picked
    else:
        def per_row(z):
            return -jnp.sum(y * jax.nn.log_softmax(z, axis=1), axis=1)
    forward = jax.jit(per_row)

    def fused_fn(z):
        value, vjp = jax.vjp(per_row, z)
        return value, vjp(jnp.ones_like(value))[0]
    fused = jax.jit(fused_fn)
    x = jnp.asarray(cell.logits)  # on the device (the CPU) once, outside the timing
    # XLA's CPU thread pool is sized at start-up (XLA_FLAGS); the thread count is not
    # applied per call, so JAX runs with its own default here (see benchmarks/README.md).
    if op == "forward":
        def run():
            cell.loss[...] = np.asarray(forward(x).block_until_ready())
        return None, run, lambda: (cell.loss, None)

    def run():
        value, grad = fused(x)
        grad.block_until_ready()
        cell.loss[...] = np.asarray(value)
        cell.grad[...] = np.asarray(grad)
    return None, run, lambda: (cell.loss if op == "fused" else None, cell.grad)


# ------------------------------------------------------------------------------ timing

def time_call(fn, repeat, budget, prepare=None):
    """Median seconds per call of ``fn`` (already warmed up): ``(median, samples, number)``.

    Each sample runs ``fn`` ``number`` times (enough for >= ~2 ms) and divides. Sampling
    stops after ``repeat`` samples, or once ``budget`` seconds are spent and at least 3
    samples are in (1 when a single call takes over a third of the budget).
    """
    if prepare is not None:
        prepare()
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    number = max(1, min(10000, int(2e-3 / max(one, 1e-9))))
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


def max_rel_err(got, ref):
    """``max|got - ref| / max(1, max|ref|)`` in float64 (0 for empty arrays)."""
    if got is None or ref is None or np.size(ref) == 0:
        return 0.0
    ref = np.asarray(ref, dtype=np.float64)
    diff = np.max(np.abs(np.asarray(got, dtype=np.float64) - ref))
    scale = max(1.0, float(np.max(np.abs(ref))))
    return float(diff) / scale


def auto_pick(op, labels, dtype, shape, n_threads):
    """(backend name, threads, reason) that ``backend="auto"`` uses for this cell."""
    try:
        module, threads, reason = _dispatch.select(
            _DISPATCH_OP[op], _DISPATCH_KIND[labels], np.dtype(dtype), shape[0], shape[1],
            "auto", n_threads, why=True)
        return module.NAME, int(threads), reason
    except Exception as exc:  # a policy problem must not stop the benchmark
        return "?", n_threads, f"{type(exc).__name__}: {exc}"


# ------------------------------------------------------------------------------ progress

class _Progress:
    def __init__(self, total, enabled):
        self.total, self.done, self.bar = total, 0, None
        self.enabled = enabled
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            self.bar = None
            self.enabled = sys.stderr.isatty()  # the text bar, on a terminal only
        else:
            self.bar = tqdm(total=total, file=sys.stderr, unit="run", dynamic_ncols=True,
                            leave=False, disable=None)  # None: only on a terminal

    def set(self, text):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_description_str(text, refresh=True)
        else:
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] "
                             f"{self.done}/{self.total} {text[:50]:<50}")
            sys.stderr.flush()

    def step(self):
        self.done += 1
        if self.enabled and self.bar is not None:
            self.bar.update(1)

    def close(self):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        else:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


# ------------------------------------------------------------------------------ run

def run(cfg):
    """Run the grid; return ``{"meta": ..., "rows": [...]}`` (what ``--json`` writes)."""
    cells = cfg.cells()
    names = list(cfg.backends) + list(cfg.peers)
    progress = _Progress(len(cells) * len(names), cfg.progress)
    rows = []
    started = time.perf_counter()
    groups = {}
    for op, labels, dtype, shape, nt in cells:
        groups.setdefault((labels, dtype, shape), []).append((op, nt))
    try:
        for (labels, dtype, shape), todo in groups.items():
            shape_s = "x".join(map(str, shape))
            progress.set(f"data {labels} {dtype} {shape_s}")
            cell = Cell(labels, dtype, shape, cfg.seed)
            ref_loss, ref_grad = reference(cell)
            for op, nt in todo:
                auto_name, auto_threads, auto_reason = auto_pick(op, labels, dtype, shape, nt)
                read, written = cell.bytes_moved(op)
                pattern = cell.stream_pattern(op)
                stream_bytes = read if pattern == "read" else cell.x_bytes
                progress.set(f"stream {pattern} {shape_s} x{nt}")
                stream = _stream.measure(pattern, stream_bytes, nt, dtype,
                                         budget=min(0.2, cfg.budget))
                base_time = None
                for name in names:
                    progress.set(f"{op} {labels} {dtype} {shape_s} {name}")
                    row = {"op": op, "labels": labels, "dtype": dtype, "shape": list(shape),
                           "n_rows": shape[0], "n_classes": shape[1], "threads": nt,
                           "backend": name, "peer": name in cfg.peers,
                           "bytes_read": read, "bytes_written": written,
                           "stream_pattern": pattern, "stream_gbps": stream["gbps"],
                           "stream_how": stream["how"], "auto": auto_name,
                           "auto_threads": auto_threads, "auto_reason": auto_reason,
                           "is_auto_pick": name == auto_name}
                    row.update(_measure(cell, op, name, nt, cfg, ref_loss, ref_grad,
                                        peer=name in cfg.peers))
                    if name == "numpy" and row["status"] == "ok":
                        base_time = row["time_s"]
                    if row["status"] == "ok":
                        row["gbps"] = (read + written) / row["time_s"] / 1e9
                        row["stream_fraction"] = row["gbps"] / stream["gbps"]
                        row["speedup"] = (base_time / row["time_s"]) if base_time else None
                    rows.append(row)
                    progress.step()
            del cell, ref_loss, ref_grad
    finally:
        progress.close()
        _stream.clear_cache()
    return {"meta": _meta(cfg, time.perf_counter() - started), "rows": rows}


def _measure(cell, op, name, nt, cfg, ref_loss, ref_grad, peer=False):
    """Warm up, verify and time one backend (or peer) on one cell; a dict of results."""
    out = {"status": "ok", "time_s": None, "samples": [], "number": 0, "gbps": None,
           "stream_fraction": None, "speedup": None, "loss_err": None, "grad_err": None,
           "tol": _TOL[np.dtype(cell.dtype).name], "verified": None, "note": "",
           "backend_threads": nt}
    if not peer:
        try:
            module, threads = _dispatch.select(_DISPATCH_OP[op], _DISPATCH_KIND[cell.kind],
                                               cell.dtype, cell.shape[0], cell.shape[1], name,
                                               nt)
            out["backend_threads"] = int(threads)
        except Exception as exc:
            out.update(status="n/a", note=f"{type(exc).__name__}: {exc}")
            return out
        prepare, fn, outputs = fastxent_call(cell, op, name, nt)
    else:
        made = peer_call(name, cell, op, nt)
        if isinstance(made, str):
            out.update(status="n/a", note=made)
            return out
        prepare, fn, outputs = made
        if name == "jax":
            out["backend_threads"] = None  # not settable per call (see the README)
    try:
        cell.loss.fill(np.nan)  # a backend that writes nothing cannot pass the check
        cell.grad.fill(np.nan)
        if prepare is not None:
            prepare()
        fn()  # warm-up: JIT compilation, first touch; its result is what gets checked
        loss, grad = outputs()
        out["loss_err"] = max_rel_err(loss, ref_loss) if loss is not None else None
        out["grad_err"] = max_rel_err(grad, ref_grad) if grad is not None else None
        errs = [e for e in (out["loss_err"], out["grad_err"]) if e is not None]
        out["verified"] = bool(errs) and all(e <= out["tol"] for e in errs) and all(
            math.isfinite(e) for e in errs)
        median, samples, number = time_call(fn, cfg.repeat, cfg.budget, prepare)
    except Exception as exc:  # a broken backend is reported in its row, never fatal
        out.update(status="error", note=f"{type(exc).__name__}: {exc}", verified=False)
        return out
    out.update(time_s=median, samples=samples, number=number)
    return out


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _meta(cfg, elapsed):
    backends = {}
    for name in _registry.known_backends():
        ok = _registry.load(name) is not None
        backends[name] = {"available": ok, "why": "" if ok else _registry.why(name)}
    versions = {"fastxent": __version__, "numpy": np.__version__,
                "python": sys.version.split()[0]}
    for peer in cfg.peers:
        try:
            versions[peer] = __import__(peer).__version__
        except Exception:
            pass
    return {"config": cfg.as_dict(), "backends": backends, "versions": versions,
            "cpu": _cpu_name(), "usable_cores": _threads.usable_cores(),
            "platform": platform.platform(), "elapsed_s": elapsed,
            "bytes_model": BYTES_MODEL,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


# ------------------------------------------------------------------------------ output

def _fmt_time(t):
    if t is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if t >= scale:
            return f"{t / scale:.3g} {unit}"
    return f"{t / 1e-9:.3g} ns"


def _check_mark(row):
    if row["status"] == "n/a":
        return "n/a"
    if row["status"] == "error":
        return "ERROR"
    errs = [e for e in (row["loss_err"], row["grad_err"]) if e is not None]
    worst = max(errs) if errs else 0.0
    return f"{'ok' if row['verified'] else 'FAIL'} {worst:.0e}"


def format_table(result):
    """The rows as an aligned text table with a header and the bytes-model footer."""
    meta = result["meta"]
    header = ["op", "labels", "dtype", "shape", "thr", "backend", "time", "GB/s", "%stream",
              "xNumPy", "check", "auto"]
    lines = []
    prev = None
    table = []
    for r in result["rows"]:
        key = (r["op"], r["labels"], r["dtype"], tuple(r["shape"]), r["threads"])
        first = key != prev
        prev = key
        name = r["backend"] + ("*" if r["is_auto_pick"] else "")
        ok = r["status"] == "ok"
        table.append([
            r["op"] if first else "", r["labels"] if first else "", r["dtype"] if first else "",
            "x".join(map(str, r["shape"])) if first else "", str(r["threads"]) if first else "",
            name,
            _fmt_time(r["time_s"]) if ok else "-",
            f"{r['gbps']:.3g}" if ok else "-",
            f"{100 * r['stream_fraction']:.0f}%" if ok else "-",
            f"{r['speedup']:.2f}x" if ok and r["speedup"] else "-",
            _check_mark(r),
            r["auto"] if first else "",
        ])
    widths = [max(len(h), *(len(row[i]) for row in table)) if table else len(h)
              for i, h in enumerate(header)]
    right = {"thr", "time", "GB/s", "%stream", "xNumPy"}

    def fmt(cells):
        return "  ".join(c.rjust(w) if h in right else c.ljust(w)
                         for c, w, h in zip(cells, widths, header)).rstrip()
    avail = ", ".join(n for n, b in meta["backends"].items() if b["available"])
    missing = "; ".join(f"{n} ({b['why']})" for n, b in meta["backends"].items()
                        if not b["available"])
    lines.append(f"fastxent {meta['versions']['fastxent']} bench on {meta['cpu']} "
                 f"({meta['usable_cores']} usable cores), numpy {meta['versions']['numpy']}, "
                 f"python {meta['versions']['python']}")
    lines.append(f"backends: {avail}" + (f"; unavailable: {missing}" if missing else ""))
    lines.append("")
    lines.append(fmt(header))
    lines.append(fmt(["-" * w for w in widths]))
    prev_op = None
    for row, r in zip(table, result["rows"]):
        if row[0] and prev_op is not None:
            lines.append("")
        prev_op = True
        lines.append(fmt(row))
    notes = sorted({f"{r['backend']}: {r['note']}" for r in result["rows"]
                    if r["status"] != "ok" and r["note"]})
    lines.append("")
    if notes:
        lines.append("Not measured:")
        lines.extend(f"  {n}" for n in notes)
    lines.append(f"Time: median of up to {meta['config']['repeat']} samples "
                 f"(budget {meta['config']['budget_s']} s per row); took "
                 f"{meta['elapsed_s']:.0f} s.")
    import textwrap
    lines.extend(textwrap.wrap(BYTES_MODEL, 92))
    for note in meta.get("notes", []):
        lines.extend(textwrap.wrap("Note: " + note, 92))
    n_fail = sum(1 for r in result["rows"] if r["verified"] is False)
    lines.append(f"Verification: {'all passed' if not n_fail else f'{n_fail} FAILED'}.")
    return "\n".join(lines)


def plot(result, path):
    """Throughput (GB/s) against the number of classes, one line per backend, one panel per
    (op, labels, threads); dtype as line style."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in result["rows"] if r["status"] == "ok"]
    panels = sorted({(r["op"], r["labels"], r["threads"]) for r in rows})
    if not panels:
        raise ValueError("nothing was measured, so there is nothing to plot")
    ncols = min(2, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.5 * ncols, 4.2 * nrows), squeeze=False)
    styles = {"float32": "-", "float64": "--"}
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    colors = {b: f"C{i}" for i, b in enumerate(backends)}
    for ax, (op, labels, nt) in zip(axes.flat, panels):
        sub = [r for r in rows if (r["op"], r["labels"], r["threads"]) == (op, labels, nt)]
        for b in backends:
            for dt in styles:
                pts = sorted((r["n_classes"], r["gbps"]) for r in sub
                             if r["backend"] == b and r["dtype"] == dt)
                if pts:
                    ax.plot(*zip(*pts), styles[dt], marker="o", color=colors[b],
                            label=f"{b} {dt}")
        for dt in styles:  # the stream of each dtype's bytes (the limit per cell)
            streams = sorted({(r["n_classes"], r["stream_gbps"]) for r in sub
                              if r["dtype"] == dt and r["backend"] == "numpy"})
            if streams:
                ax.plot(*zip(*streams), ":" if dt == "float32" else "-.", color="gray",
                        label=f"memory stream {dt}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("number of classes C")
        ax.set_ylabel("GB/s (bytes model)")
        ax.set_title(f"{op}, {labels} labels, {nt} thread{'s' if nt != 1 else ''}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"fastxent {result['meta']['versions']['fastxent']} on "
                 f"{result['meta']['cpu']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


_OMP_MODULES = ("fastxent._backends._cython._kernels", "sklearn", "torch")


def _omp_policy_for_peers(peers):
    """Side by side in one process, several OpenMP runtimes (fastxent's Cython backend,
    scikit-learn's and PyTorch's own libgomp/libiomp) busy-wait for work after each parallel
    region and steal each other's cores: a 20 us call then takes ~10 ms. With peers, and
    unless the user chose otherwise, make idle OpenMP threads sleep (set before any runtime
    is loaded, so it applies to all of them alike). Returns a note for the table, or None."""
    if not peers or "OMP_WAIT_POLICY" in os.environ:
        return None
    if any(m in sys.modules for m in _OMP_MODULES):
        return ("several OpenMP runtimes are loaded and OMP_WAIT_POLICY is unset: peer "
                "timings of small cells may include spin-wait interference")
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return ("OMP_WAIT_POLICY=PASSIVE was set for this run (--peers): otherwise the OpenMP "
            "runtimes of fastxent, scikit-learn and PyTorch spin-wait against each other; "
            "set OMP_WAIT_POLICY yourself to override")


def _to_json(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def main(args):
    """Entry point of ``python -m fastxent bench``; returns the exit status."""
    # Before any backend is loaded: OpenMP reads OMP_WAIT_POLICY when its runtime starts.
    omp_note = _omp_policy_for_peers(bool(getattr(args, "peers", False)))
    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        print(f"fastxent bench: error: {exc}", file=sys.stderr)
        return 2
    plot_path = getattr(args, "plot", None)
    if plot_path:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("fastxent bench: error: --plot needs matplotlib, which is not installed: "
                  "pip install matplotlib (or pip install 'fastxent[plot]')", file=sys.stderr)
            return 2
    if getattr(args, "peers", False) and not cfg.peers:
        print("fastxent bench: --peers: none of scikit-learn, PyTorch, JAX is installed",
              file=sys.stderr)
    result = run(cfg)
    result["meta"]["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
    if omp_note:
        result["meta"]["notes"] = [omp_note]
    print(format_table(result))
    if getattr(args, "json", None):
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=_to_json)
        print(f"JSON: {os.path.abspath(args.json)}")
    if plot_path:
        plot(result, plot_path)
        print(f"Plot: {os.path.abspath(plot_path)}")
    failed = [r for r in result["rows"] if r["verified"] is False]
    return 1 if failed else 0
