"""Train a small model on the CPU with and without fastxent; print step time and peak memory.

An MLP body and a wide ``Linear(256, 32768)`` output head (a language-model-sized
vocabulary) trained with Adam on generated data (a fixed random "teacher" labels random
features; nothing is downloaded). The head's loss is either

* plain PyTorch: ``F.cross_entropy(head(h), target)`` (the N x V logits, their softmax
  and their gradient are all materialised), or
* fastxent: ``fastxent.torch.linear_cross_entropy(h, head.weight, target, ...)`` (the
  logits exist one chunk of rows at a time, loss and gradients in one fused pass).

Each variant runs in a fresh process, so its peak resident memory is its own.

    python examples/train_cpu.py            # both, side by side
    python examples/train_cpu.py --threads 2 --steps 10 --tokens 2048
"""

import argparse
import json
import os
import subprocess
import sys
import time


def run(mode, tokens, steps, threads, vocab=32768, d_model=256):
    import torch
    import torch.nn.functional as F

    import fastxent
    import fastxent.torch as fxt

    torch.set_num_threads(threads)
    fastxent.set_num_threads(threads)
    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.GELU(),
                               torch.nn.Linear(1024, d_model), torch.nn.GELU())
    head = torch.nn.Linear(d_model, vocab)
    opt = torch.optim.Adam([*body.parameters(), *head.parameters()], lr=1e-3)
    teacher = torch.randn(256, vocab) / 16

    def batch():
        x = torch.randn(tokens, 256)
        t = torch.cat([(c @ teacher).argmax(1) for c in x.split(128)])
        return x, t

    data = [batch() for _ in range(2)]  # made before the memory baseline

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

    x, t = data[0]
    step(x[:16], t[:16])  # allocate gradients and optimizer state, compile kernels
    rss0 = _kib("VmRSS")
    try:  # reset the high-water mark to the current size (Linux)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    times, losses = [], []
    for i in range(steps):
        x, t = data[i % 2]
        t0 = time.perf_counter()
        losses.append(step(x, t))
        times.append(time.perf_counter() - t0)
    return {"mode": mode, "times": times, "losses": losses,
            "growth_mib": (_kib("VmHWM") - rss0) / 1024, "base_mib": rss0 / 1024}


def _kib(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--mode", choices=("plain", "fastxent"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.mode:
        print(json.dumps(run(a.mode, a.tokens, a.steps, a.threads)))
        return
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads),
               OPENBLAS_NUM_THREADS=str(a.threads))
    print(f"MLP + Linear(256, 32768) head, {a.tokens} tokens, float32, Adam, "
          f"{a.threads} threads, {a.steps} steps")
    res = {}
    for mode in ("plain", "fastxent"):
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--tokens",
                              str(a.tokens), "--steps", str(a.steps), "--threads",
                              str(a.threads)], env=env, check=True, capture_output=True,
                             text=True).stdout
        r = res[mode] = json.loads(out.strip().splitlines()[-1])
        ts = sorted(r["times"])
        print(f"  {mode:<9} step {ts[0] * 1e3:7.0f} ms (best) {ts[len(ts) // 2] * 1e3:7.0f} ms "
              f"(median)  peak memory +{r['growth_mib']:6.0f} MiB over {r['base_mib']:.0f} MiB"
              f"  loss {r['losses'][0]:.3f} -> {r['losses'][-1]:.3f}")
    p_, f_ = res["plain"], res["fastxent"]
    print(f"  fastxent / plain: step time {min(f_['times']) / min(p_['times']):.2f}x, "
          f"peak memory growth {f_['growth_mib'] / max(p_['growth_mib'], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
