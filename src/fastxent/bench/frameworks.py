"""PyTorch and JAX integration benchmarks (``python -m fastxent.bench.frameworks``).

Each measurement runs side by side in one process, the two contenders interleaved, and
reports the best of ``--repeat`` samples (the median too):

* ``big``: (2048, 32768) float32 forward + backward, ``fastxent.torch.cross_entropy`` vs
  ``torch.nn.functional.cross_entropy``, and ``fastxent.jax`` vs optax under ``jax.jit``.
* ``overhead``: (256, 10) float32 eager forward + backward: fastxent's eager route (an
  ``autograd.Function``), its custom-op route (``torch.ops.fastxent.cross_entropy``, the
  one ``torch.compile`` traces) and ``F.cross_entropy``.
* ``train``: one training step (forward, backward, ``optim.Adam`` step) of an MLP body and a
  ``Linear(256, 32768)`` head on N=2048 tokens, float32: the head's loss through
  ``fastxent.torch.linear_cross_entropy`` vs ``F.cross_entropy`` on the logits. Each mode
  runs in a fresh process and reports its step time and the peak resident memory a step
  adds over the model, data and optimizer state (Linux ``VmHWM`` after ``clear_refs``).

Threads: ``--threads`` for PyTorch, fastxent and the BLAS both use (set before the
frameworks are imported). Requires torch (and jax, optax for the JAX rows).
"""

import argparse
import json
import os
import subprocess
import sys
import time

from .common import interleaved


def _set_threads(n):
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(n))
    import fastxent
    fastxent.set_num_threads(n)
    try:
        import torch
        torch.set_num_threads(n)
    except ImportError:
        pass


def _report(title, res, base, unit=1e3, label="ms"):
    print(title)
    for k, (best, med) in res.items():
        ratio = res[base][0] / best
        print(f"  {k:<34} best {best * unit:9.3f} {label}  median {med * unit:9.3f} {label}"
              f"  speed-up vs {base}: {ratio:5.2f}x")


# ------------------------------------------------------------------------- big problem

def big(n=2048, c=32768, repeat=7):
    import torch
    import torch.nn.functional as F

    import fastxent.torch as fxt

    torch.manual_seed(0)
    x = torch.randn(n, c).requires_grad_()
    t = torch.randint(0, c, (n,))

    def run(fn):
        def go():
            x.grad = None
            fn(x, t).backward()
        return go

    fns = {"fastxent.torch.cross_entropy": run(fxt.cross_entropy),
           "F.cross_entropy": run(F.cross_entropy)}
    for f in fns.values():
        f()
    res = interleaved(fns, repeat)
    _report(f"({n}, {c}) float32 forward+backward, torch eager", res, "F.cross_entropy")
    out = {"torch": res}
    try:
        out["jax"] = big_jax(n, c, repeat)
    except ImportError as e:
        print(f"  (jax rows skipped: {e})")
    return out


def big_jax(n=2048, c=32768, repeat=7):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import fastxent.jax as fxj

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((n, c), dtype=np.float32))
    t = jnp.asarray(rng.integers(0, c, n))

    def make(lib):
        f = jax.jit(jax.value_and_grad(
            lambda x: lib.softmax_cross_entropy_with_integer_labels(x, t).mean()))
        return lambda: jax.block_until_ready(f(x))

    fns = {"fastxent.jax (jit)": make(fxj), "optax (jit)": make(optax)}
    for f in fns.values():
        f()
    res = interleaved(fns, repeat)
    _report(f"({n}, {c}) float32 value_and_grad, jax.jit", res, "optax (jit)")
    return res


# ------------------------------------------------------------------------- overhead

def overhead(n=256, c=10, repeat=15, number=200):
    import torch
    import torch.nn.functional as F

    import fastxent.torch as fxt

    torch.manual_seed(0)
    x = torch.randn(n, c).requires_grad_()
    t = torch.randint(0, c, (n,))
    op = torch.ops.fastxent.cross_entropy

    def custom_op(x, t):
        return op(x, t, None, -100, "mean", 0.0, True)[0]

    def loop(fn):
        def go():
            for _ in range(number):
                x.grad = None
                fn(x, t).backward()
        return go

    fns = {"fastxent.torch (eager Function)": loop(fxt.cross_entropy),
           "fastxent custom op route": loop(custom_op),
           "F.cross_entropy": loop(F.cross_entropy)}
    for f in fns.values():
        f()
    res = {k: (b / number, m / number) for k, (b, m) in interleaved(fns, repeat).items()}
    _report(f"({n}, {c}) float32 forward+backward per call, eager", res, "F.cross_entropy",
            unit=1e6, label="us")
    return res


# ------------------------------------------------------------------------- training step

def _peak_reset():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def train_one(mode, n=2048, d_in=256, hidden=1024, d_model=256, vocab=32768, steps=5):
    """One mode of the training step in this process: {'step_s': [...], 'growth_mib'}."""
    import torch
    import torch.nn.functional as F

    import fastxent.torch as fxt

    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.GELU(),
                               torch.nn.Linear(hidden, d_model), torch.nn.GELU())
    head = torch.nn.Linear(d_model, vocab)
    params = list(body.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    x = torch.randn(n, d_in)
    t = torch.randint(0, vocab, (n,))

    def step(x, t):
        opt.zero_grad(set_to_none=False)
        h = body(x)
        if mode == "fastxent":
            loss = fxt.linear_cross_entropy(h, head.weight, t, linear_bias=head.bias)
        else:
            loss = F.cross_entropy(head(h), t)
        loss.backward()
        opt.step()
        return loss.item()

    step(x[:16], t[:16])  # allocates grads and Adam's state; compiles kernels
    base = _status_kib("VmRSS")
    exact = _peak_reset()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step(x, t)
        times.append(time.perf_counter() - t0)
    peak = _status_kib("VmHWM")
    return {"mode": mode, "step_s": times, "base_mib": base / 1024,
            "growth_mib": (peak - base) / 1024, "peak_reset": exact}


def train(threads=2, steps=5, rounds=2):
    """Both modes, each in fresh processes (alternating), summarised."""
    results = {"plain": [], "fastxent": []}
    for _ in range(rounds):
        for mode in ("plain", "fastxent"):
            cmd = [sys.executable, "-m", "fastxent.bench.frameworks", "train-one", mode,
                   "--threads", str(threads), "--steps", str(steps)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[mode].append(json.loads(out.strip().splitlines()[-1]))
    summary = {}
    for mode, runs in results.items():
        best = min(min(r["step_s"]) for r in runs)
        med = sorted(s for r in runs for s in r["step_s"])[len(runs) * steps // 2]
        growth = min(r["growth_mib"] for r in runs)
        summary[mode] = {"best_s": best, "median_s": med, "growth_mib": growth,
                         "base_mib": runs[0]["base_mib"]}
    p, f = summary["plain"], summary["fastxent"]
    print(f"training step: MLP + Linear(256, 32768) head, N=2048, float32, Adam, "
          f"{threads} threads")
    for mode, s in summary.items():
        print(f"  {mode:<9} step best {s['best_s'] * 1e3:8.1f} ms  median "
              f"{s['median_s'] * 1e3:8.1f} ms  peak memory growth {s['growth_mib']:7.1f} MiB "
              f"(over {s['base_mib']:.0f} MiB)")
    print(f"  fastxent / plain: time {f['best_s'] / p['best_s']:.2f}x (median "
          f"{f['median_s'] / p['median_s']:.2f}x), memory growth "
          f"{f['growth_mib'] / max(p['growth_mib'], 1e-9):.2f}x")
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastxent.bench.frameworks",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", default="all",
                        choices=("all", "big", "overhead", "train", "train-one"))
    parser.add_argument("mode", nargs="?", default="plain", help="train-one: plain|fastxent")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    _set_threads(args.threads)
    if args.what == "train-one":
        print(json.dumps(train_one(args.mode, steps=args.steps)))
        return 0
    print(f"threads: {args.threads}")
    if args.what in ("all", "overhead"):
        overhead(repeat=max(args.repeat, 5))
    if args.what in ("all", "big"):
        big(repeat=args.repeat)
    if args.what in ("all", "train"):
        train(args.threads, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
