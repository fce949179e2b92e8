"""``python -m fastxent bench``: every available backend against the NumPy baseline.

For each cell of the grid (operation x label kind x dtype x shape x thread count) this

1. makes seeded data once (pages touched, outputs preallocated, nothing allocated in the
   timed loop: every call passes ``loss_out=`` / ``gradient_out=``);
2. computes a float64 reference with the NumPy backend, and for each backend runs the call
   once untimed (JIT warm-up, first touch) and checks its loss and gradient against it;
3. times it: median of ``--repeat`` samples within a time budget per backend and cell;
4. measures a memory stream of the same bytes in the same process (``bench.stream``) and
   reports the kernel's GB/s as a percentage of it;
5. prints the cell's rows as soon as the cell is done (time, GB/s, % of the stream, speed-up
   over NumPy, the check, and the backend ``"auto"`` picks, marked ``*``), with the elapsed
   time and an estimate of what is left on stderr.

``--peers`` adds scikit-learn, PyTorch and JAX (when installed) as extra rows of the same
cells, measured in the same run with the same thread count where the library allows it.
"""

import json
import math
import os
import platform
import sys
import textwrap
import time

import numpy as np

from .. import _plan, _registry, _threads
from .._version import __version__
from . import stream as _stream
from .common import (BYTES_MODEL, LABEL_KINDS, OPS, SEED, TOLERANCE, BusyCores, Cell,
                     max_rel_err, time_call)

DEFAULT_SHAPES = ((256, 10), (4096, 1000), (2048, 32768), (1_000_000, 3))
DEFAULT_DTYPES = ("float32", "float64")
DEFAULT_LABELS = ("integer", "dense")
DEFAULT_OPS = ("forward", "fused")
QUICK_SHAPES = ((256, 10), (4096, 1000), (1_000_000, 3))
QUICK_DTYPES = ("float32",)
QUICK_LABELS = ("integer",)
PEERS = ("sklearn", "torch", "jax")
_PLAN_OP = {"forward": "forward", "fused": "fused", "backward": "backward",
            "gradient": "backward", "inplace": "backward"}


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
    """Options of the ``bench`` subcommand."""
    g = parser.add_argument
    g("--shapes", help="comma-separated NxC shapes (default: 256x10,4096x1000,2048x32768,"
                       "1000000x3; --quick: 256x10,4096x1000,1000000x3)")
    g("--dtypes", help="float32,float64 (default both; --quick: float32)")
    g("--labels", help="label kinds: dense,integer,sigmoid (default integer,dense; --quick: "
                       "integer)")
    g("--ops", help="forward,fused,backward,gradient,inplace (default forward,fused). "
                    "backward = gradient from a saved logsumexp (softmax only); inplace = "
                    "gradient with gradient_out=logits")
    g("--threads", help="thread counts, comma-separated, at most the usable cores "
                        f"({_threads.usable_cores()} here; default: "
                        f"{_threads.get_num_threads()})")
    g("--backends", help="backends to compare (default: every available one); the NumPy "
                         "baseline is always measured")
    g("--peers", action="store_true",
      help="also measure scikit-learn, PyTorch and JAX when installed (same cells, same "
           "thread count where the library allows)")
    g("--check", choices=("off", "warn"), default="off",
      help="the diagnostics mode of the timed calls (default off; --check warn measures "
           "the cost of the value checks)")
    g("--busy", type=int, default=0, metavar="K",
      help="also time every row while K other processes keep a core busy each, and report "
           "the ratio to the quiet time (the cost of a shared machine; default 0: off)")
    g("--quick", action="store_true", help="a small grid and short time budget")
    g("--repeat", type=int, default=None,
      help="timed samples per backend and cell (>= 1); the median is reported (default 7; "
           "--quick 5); fewer when --budget runs out")
    g("--budget", type=float, default=None,
      help="seconds of timing per backend and cell (> 0; default 0.4; --quick 0.1)")
    g("--json", metavar="FILE", help="write every row (and the machine) as JSON to FILE")
    g("--plot", metavar="FILE.png", help="one figure of throughput per cell (matplotlib)")
    g("--no-progress", action="store_true", help="no progress line on stderr")
    g("--seed", type=int, default=SEED, help="seed of the random data")
    return parser


class Config:
    """A resolved benchmark grid (what ``run`` runs); build with :func:`config_from_args`."""

    def __init__(self, shapes, dtypes, labels, ops, threads, backends, peers, repeat, budget,
                 seed=SEED, progress=True, check="off", busy=0):
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
        self.check = check
        self.busy = int(busy)

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
                "budget_s": self.budget, "seed": self.seed, "check": self.check,
                "busy": self.busy}


def _writable_path(path, option):
    """Fail before any measurement when ``path`` cannot be written."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(folder):
        raise ValueError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{option} {path}: the folder {folder} is not writable")


def config_from_args(args):
    """A Config from parsed options; every option is checked before anything runs."""
    quick = bool(getattr(args, "quick", False))
    get = lambda name: getattr(args, name, None)  # noqa: E731
    shapes = parse_shapes(get("shapes")) if get("shapes") else list(
        QUICK_SHAPES if quick else DEFAULT_SHAPES)
    dtypes = (_choices(get("dtypes"), DEFAULT_DTYPES, "dtypes") if get("dtypes")
              else list(QUICK_DTYPES if quick else DEFAULT_DTYPES))
    labels = (_choices(get("labels"), LABEL_KINDS, "labels") if get("labels")
              else list(QUICK_LABELS if quick else DEFAULT_LABELS))
    ops = _choices(get("ops"), OPS, "ops") if get("ops") else list(DEFAULT_OPS)
    cores = _threads.usable_cores()
    if get("threads"):
        threads = []
        for t in _csv(get("threads")):
            try:
                n = int(t)
            except ValueError:
                n = 0
            if n == -1:
                n = cores
            if not 1 <= n <= cores:
                raise ValueError(f"--threads {get('threads')!r}: use counts from 1 to the "
                                 f"{cores} usable cores (or -1 for all)")
            threads.append(n)
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
        backends = ["numpy"] + [b for b in _plan.available_backends() if b != "numpy"]
    peers = [p for p in PEERS if _peer_available(p)] if get("peers") else []
    repeat = get("repeat") if get("repeat") is not None else (5 if quick else 7)
    budget = get("budget") if get("budget") is not None else (0.1 if quick else 0.4)
    if repeat < 1:
        raise ValueError(f"--repeat {repeat}: use at least 1 sample")
    if not budget > 0:
        raise ValueError(f"--budget {budget}: use a positive number of seconds")
    busy = get("busy") or 0
    if not 0 <= busy <= cores:
        raise ValueError(f"--busy {busy}: use 0 to {cores} (the usable cores) busy processes")
    for option in ("json", "plot"):
        if get(option):
            _writable_path(get(option), f"--{option}")
    if get("plot"):
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError("--plot needs matplotlib, which is not installed: pip install "
                             "matplotlib (or pip install 'fastxent[bench]')") from None
    return Config(shapes, dtypes, labels, ops, threads, backends, peers, repeat, budget,
                  get("seed") if get("seed") is not None else SEED,
                  progress=not get("no_progress"), check=get("check") or "off", busy=busy)


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




# ------------------------------------------------------------------------------ progress

class _Progress:
    """One line on stderr (a terminal only): cells done, elapsed time, an estimate of what is
    left (from the bytes measured so far, which dominate the time), the current step."""

    def __init__(self, weights, enabled):
        self.total = float(sum(weights)) or 1.0
        self.done = 0.0
        self.started = time.perf_counter()
        self.enabled = enabled and sys.stderr.isatty()

    def set(self, text):
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.started
        left = elapsed / self.done * (self.total - self.done) if self.done else None
        eta = f", ~{_fmt_duration(left)} left" if left is not None else ""
        line = (f"[{100 * self.done / self.total:3.0f}%] {_fmt_duration(elapsed)} elapsed"
                f"{eta}: {text}")
        sys.stderr.write("\r" + line[:110].ljust(110))
        sys.stderr.flush()

    def step(self, weight):
        self.done += weight

    def close(self):
        if self.enabled:
            sys.stderr.write("\r" + " " * 110 + "\r")
            sys.stderr.flush()


def _fmt_duration(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


# ------------------------------------------------------------------------------ run

def auto_pick(op, labels, dtype, shape, n_threads):
    """(backend name, threads) that ``backend="auto"`` uses for this cell."""
    run, threads, name = _plan.plan(labels, _PLAN_OP[op], np.dtype(dtype), shape[0],
                                    shape[1], "auto", n_threads)
    return name, max(1, threads)


def run(cfg, emit=None):
    """Run the grid; return ``{"meta": ..., "rows": [...]}`` (what ``--json`` writes).
    ``emit(rows)`` receives each cell's rows as soon as the cell is done."""
    cells = cfg.cells()
    names = list(cfg.backends) + list(cfg.peers)
    groups = {}
    for op, labels, dtype, shape, nt in cells:
        groups.setdefault((labels, dtype, shape), []).append((op, nt))
    weights = {key: len(todo) * len(names) * (1 + shape[0] * shape[1] * 1e-6)
               for key, todo in groups.items() for labels, dtype, shape in [key]}
    progress = _Progress(weights.values(), cfg.progress)
    rows = []
    started = time.perf_counter()
    try:
        for (labels, dtype, shape), todo in groups.items():
            shape_s = "x".join(map(str, shape))
            progress.set(f"data {labels} {dtype} {shape_s}")
            cell = Cell(labels, dtype, shape, cfg.seed)
            ref_loss, ref_grad = cell.reference()
            for op, nt in todo:
                auto_name, auto_threads = auto_pick(op, labels, dtype, shape, nt)
                read, written = cell.bytes_moved(op)
                pattern = cell.stream_pattern(op)
                stream_bytes = read if pattern == "read" else cell.x_bytes
                progress.set(f"stream {pattern} {shape_s} x{nt}")
                stream = _stream.measure(pattern, stream_bytes, nt, dtype,
                                         budget=min(0.2, cfg.budget))
                base_time = None
                cell_rows = []
                for name in names:
                    progress.set(f"{op} {labels} {dtype} {shape_s} {name}")
                    row = {"op": op, "labels": labels, "dtype": dtype, "shape": list(shape),
                           "n_rows": shape[0], "n_classes": shape[1], "threads": nt,
                           "backend": name, "peer": name in cfg.peers,
                           "bytes_read": read, "bytes_written": written,
                           "stream_pattern": pattern, "stream_gbps": stream["gbps"],
                           "stream_how": stream["how"], "auto": auto_name,
                           "auto_threads": auto_threads, "is_auto_pick": name == auto_name}
                    row.update(_measure(cell, op, name, nt, cfg, ref_loss, ref_grad,
                                        peer=name in cfg.peers))
                    if name == "numpy" and row["status"] == "ok":
                        base_time = row["time_s"]
                    if row["status"] == "ok":
                        row["gbps"] = (read + written) / row["time_s"] / 1e9
                        row["stream_fraction"] = row["gbps"] / stream["gbps"]
                        row["speedup"] = (base_time / row["time_s"]) if base_time else None
                    cell_rows.append(row)
                rows.extend(cell_rows)
                progress.step(weights[(labels, dtype, shape)] / len(todo))
                if emit is not None:
                    progress.close()
                    emit(cell_rows)
            del cell, ref_loss, ref_grad
    finally:
        progress.close()
        _stream.clear_cache()
    return {"meta": _meta(cfg, time.perf_counter() - started), "rows": rows}


def _measure(cell, op, name, nt, cfg, ref_loss, ref_grad, peer=False):
    """Warm up, verify and time one backend (or peer) on one cell; a dict of results."""
    out = {"status": "ok", "time_s": None, "samples": [], "number": 0, "gbps": None,
           "stream_fraction": None, "speedup": None, "loss_err": None, "grad_err": None,
           "tol": TOLERANCE[np.dtype(cell.dtype).name], "verified": None, "note": "",
           "backend_threads": nt}
    if not peer:
        try:
            _plan.require(name)
        except Exception as exc:
            out.update(status="n/a", note=f"{type(exc).__name__}: {exc}")
            return out
        prepare, fn, outputs = cell.call(op, name, nt)
        if cfg.check != "off":
            import fastxent as fx
            inner = fn

            def fn():
                with fx.checking(cfg.check):
                    return inner()
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
        if cfg.busy:
            with BusyCores(cfg.busy):
                busy, _, _ = time_call(fn, cfg.repeat, cfg.budget, prepare)
            out.update(time_busy_s=busy, busy_ratio=busy / median)
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


def _isa():
    from .._info import isa
    return isa()


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
            "cpu": _cpu_name(), "isa": _isa(), "usable_cores": _threads.usable_cores(),
            "platform": platform.platform(), "elapsed_s": elapsed,
            "bytes_model": BYTES_MODEL, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


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


HEADER = ["op", "labels", "dtype", "shape", "thr", "backend", "time", "GB/s", "%stream",
          "xNumPy", "check", "auto"]
_WIDTHS = [7, 7, 7, 11, 3, 8, 8, 6, 7, 7, 8, 8]
_RIGHT = {"thr", "time", "GB/s", "%stream", "xNumPy"}


def _fmt_line(cells):
    return "  ".join(c.rjust(w) if h in _RIGHT else c.ljust(w)
                     for c, w, h in zip(cells, _WIDTHS, HEADER)).rstrip()


def format_rows(rows):
    """The lines of one cell's rows (the first row names the cell)."""
    lines = []
    for k, r in enumerate(rows):
        first = k == 0
        ok = r["status"] == "ok"
        name = r["backend"] + ("*" if r["is_auto_pick"] else "")
        lines.append(_fmt_line([
            r["op"] if first else "", r["labels"] if first else "", r["dtype"] if first else "",
            "x".join(map(str, r["shape"])) if first else "", str(r["threads"]) if first else "",
            name, _fmt_time(r["time_s"]) if ok else "-", f"{r['gbps']:.3g}" if ok else "-",
            f"{100 * r['stream_fraction']:.0f}%" if ok else "-",
            f"{r['speedup']:.2f}x" if ok and r["speedup"] else "-", _check_mark(r),
            f"{r['auto']}" if first else ""]) + (
            f"  busy {r['busy_ratio']:.2f}x" if ok and r.get("busy_ratio") else ""))
    return lines


def format_header(meta_like):
    avail = ", ".join(n for n, b in meta_like["backends"].items() if b["available"])
    missing = "; ".join(f"{n} ({b['why']})" for n, b in meta_like["backends"].items()
                        if not b["available"])
    from .._info import isa
    return [f"fastxent {__version__} bench on {_cpu_name()} ({_threads.usable_cores()} usable "
            f"cores), numpy {np.__version__}, python {sys.version.split()[0]}",
            f"ISA: {isa()}",
            f"backends: {avail}" + (f"; unavailable: {missing}" if missing else ""), "",
            _fmt_line(HEADER), _fmt_line(["-" * w for w in _WIDTHS])]


def format_footer(result):
    meta = result["meta"]
    lines = [""]
    notes = sorted({f"{r['backend']}: {r['note']}" for r in result["rows"]
                    if r["status"] != "ok" and r["note"]})
    if notes:
        lines.append("Not measured:")
        lines.extend(f"  {n}" for n in notes)
    lines.append(f"Time: median of up to {meta['config']['repeat']} samples (budget "
                 f"{meta['config']['budget_s']} s per row); took "
                 f"{_fmt_duration(meta['elapsed_s'])}. * = the backend 'auto' picks.")
    lines.extend(textwrap.wrap(BYTES_MODEL, 92))
    for note in meta.get("notes", []):
        lines.extend(textwrap.wrap("Note: " + note, 92))
    n_fail = sum(1 for r in result["rows"] if r["verified"] is False)
    lines.append(f"Verification: {'all passed' if not n_fail else f'{n_fail} FAILED'}.")
    return lines


def format_table(result):
    """The whole table as text (what the command prints, cell by cell)."""
    lines = format_header(result["meta"])
    key = None
    group = []
    for r in result["rows"]:
        k = (r["op"], r["labels"], r["dtype"], tuple(r["shape"]), r["threads"])
        if k != key and group:
            lines += format_rows(group) + [""]
            group = []
        key = k
        group.append(r)
    if group:
        lines += format_rows(group)
    return "\n".join(lines + format_footer(result))


def plot(result, path):
    """One figure: GB/s (higher is better) per backend, one group of bars per shape, one panel
    per (operation, labels, dtype, threads); the memory stream of the same bytes is the
    black line over each group (the limit); panels of one operation share their y range."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in result["rows"] if r["status"] == "ok"]
    panels = sorted({(r["op"], r["labels"], r["dtype"], r["threads"]) for r in rows})
    if not panels:
        raise ValueError("nothing was measured, so there is nothing to plot")
    ncols = min(2, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(7 * ncols, 3.4 * nrows + 0.9),
                             squeeze=False)
    names = list(dict.fromkeys(r["backend"] for r in rows))
    colors = {b: f"C{i}" for i, b in enumerate(names)}
    ymax = {}
    for r in rows:
        ymax[r["op"]] = max(ymax.get(r["op"], 0), r["gbps"], r["stream_gbps"])
    width = 0.8 / len(names)
    for ax, (op, labels, dtype, nt) in zip(axes.flat, panels):
        sub = [r for r in rows if (r["op"], r["labels"], r["dtype"], r["threads"]) ==
               (op, labels, dtype, nt)]
        shapes = list(dict.fromkeys("x".join(map(str, r["shape"])) for r in sub))
        for j, b in enumerate(names):
            vals = {("x".join(map(str, r["shape"]))): r["gbps"] for r in sub
                    if r["backend"] == b}
            xs = [i - 0.4 + width * (j + 0.5) for i, s in enumerate(shapes) if s in vals]
            ax.bar(xs, [vals[s] for s in shapes if s in vals], width, color=colors[b],
                   label=b)
        for i, s in enumerate(shapes):
            stream = next(r["stream_gbps"] for r in sub if "x".join(map(str, r["shape"])) == s)
            ax.hlines(stream, i - 0.45, i + 0.45, colors="black", linewidth=2)
        ax.set_xticks(range(len(shapes)))
        ax.set_xticklabels(shapes)
        ax.set_ylim(0, ymax[op] * 1.1)
        ax.set_ylabel("GB/s (higher is better)")
        ax.set_title(f"{op}, {labels} labels, {dtype}, {nt} thread{'s' if nt != 1 else ''}",
                     fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles, labels_ = axes.flat[0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], color="black", linewidth=2))
    labels_.append("memory stream of the same bytes (the limit)")
    fig.legend(handles, labels_, loc="upper center", ncol=min(6, len(handles)), fontsize=8,
               frameon=False)
    fig.suptitle(f"fastxent {result['meta']['versions']['fastxent']} on "
                 f"{result['meta']['cpu']} ({result['meta']['usable_cores']} cores): "
                 f"throughput by shape (N x C)", fontsize=10, y=0.995)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=100)
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
    # before any OpenMP runtime is loaded (it reads OMP_WAIT_POLICY when it starts)
    omp_note = _omp_policy_for_peers(bool(getattr(args, "peers", False)))
    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        print(f"fastxent bench: error: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "peers", False) and not cfg.peers:
        print("fastxent bench: --peers: none of scikit-learn, PyTorch, JAX is installed",
              file=sys.stderr)
    meta_like = {"backends": {n: {"available": _registry.load(n) is not None,
                                  "why": _registry.why(n)} for n in _registry.known_backends()}}
    print("\n".join(format_header(meta_like)), flush=True)
    first = [True]

    def emit(rows):
        if not first[0]:
            print()
        first[0] = False
        print("\n".join(format_rows(rows)), flush=True)
    result = run(cfg, emit)
    result["meta"]["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
    if omp_note:
        result["meta"]["notes"] = [omp_note]
    print("\n".join(format_footer(result)))
    if getattr(args, "json", None):
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=_to_json)
        print(f"JSON: {os.path.abspath(args.json)}")
    if getattr(args, "plot", None):
        plot(result, args.plot)
        print(f"Plot: {os.path.abspath(args.plot)}")
    failed = [r for r in result["rows"] if r["verified"] is False]
    return 1 if failed else 0
