"""fastxent.dask on a LocalCluster against the single-machine call (issue 17's targets).

``python -m fastxent.bench.dask_bench [--rows-shape 200000 1000 --row-chunks 8]
[--sharded-shape 2048 131072 --class-chunks 4] [--workers 2] [--repeat 3]``

Two cases, float32, integer labels, ``loss_gradient`` with ``reduction="mean"``:

* rows: (N, C) in ``row-chunks`` row blocks (one fused pass per block);
* sharded: (N, V) in ``class-chunks`` class blocks (partials, a merge, the shard backward).

The logits are generated on the workers (``dask.array.random``) and persisted; each timed
run computes the loss and *persists* the gradient on the workers (``wait``), which is what a
training step does with it; the gather of the gradient to the client is timed separately.
The single-machine reference is the same call on the same data, in this process, on all of
this process's cores. The scheduler overhead is the time of the same graph with empty tasks.
"""

import argparse
import time

import numpy as np

from .common import interleaved


def _noop(*args, **kwargs):
    return np.zeros((1, 1))


def run(shape, chunks, workers, repeat, label):
    import dask.array as da
    import distributed

    import fastxent as fx
    import fastxent.dask as fxd

    n, C = shape
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        rs = da.random.RandomState(0)
        X = rs.standard_normal(shape, chunks=chunks).astype(np.float32)
        T = rs.randint(0, C, size=n, chunks=(X.chunks[0],))
        X, T = client.persist([X, T])
        distributed.wait([X, T])
        loss_fn = fxd.SparseSoftmaxCrossEntropy(reduction="mean")

        def step():
            # one submission: the fused block tasks feed both the loss and the gradient
            loss, grad = client.persist(list(loss_fn.loss_gradient(T, X)))
            distributed.wait([loss, grad])
            return loss.compute(), grad

        step()  # warm: kernels compiled / loaded in every worker
        # the single-machine reference on the same data, in this process, timed between the
        # dask runs (the same load from anything else on the machine)
        x, t = client.compute([X, T], sync=True)
        single = fx.SparseSoftmaxCrossEntropy(reduction="mean")
        g = np.empty_like(x)
        single.loss_gradient(t, x, gradient_out=g)
        best = interleaved({"dask": step,
                            "single": lambda: single.loss_gradient(t, x, gradient_out=g)},
                           repeat)
        t_dask, t_single = best["dask"][0], best["single"][0]
        del x, t, g
        _, grad = step()
        t0 = time.perf_counter()
        grad.compute()
        t_gather = time.perf_counter() - t0
        del grad
        # scheduler overhead: the same graph shape with empty tasks
        loss, grad = loss_fn.loss_gradient(T, X)
        n_tasks = len(dict(grad.__dask_graph__())) + len(dict(loss.__dask_graph__()))
        empty = da.map_blocks(_noop, X, chunks=((1,) * X.numblocks[0], (1,) * X.numblocks[1]))
        t_sched = interleaved({0: lambda: empty.sum().compute()}, repeat)[0][0]
    ratio = t_dask / t_single
    print(f"{label}: {shape} float32, chunks {tuple(len(c) for c in X.chunks)} "
          f"({n_tasks} tasks), {workers} workers x 1 thread")
    print(f"  single machine ({fx.get_num_threads()} threads): {t_single * 1e3:8.1f} ms")
    print(f"  dask loss_gradient (gradient persisted): {t_dask * 1e3:8.1f} ms  "
          f"= {ratio:.2f}x")
    print(f"  scheduler overhead (same blocks, empty tasks): {t_sched * 1e3:8.1f} ms")
    print(f"  gather of the gradient to the client: {t_gather * 1e3:8.1f} ms")
    return dict(shape=shape, single=t_single, dask=t_dask, ratio=ratio, sched=t_sched,
                gather=t_gather)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows-shape", type=int, nargs=2, default=(200_000, 1000))
    ap.add_argument("--row-chunks", type=int, default=8)
    ap.add_argument("--sharded-shape", type=int, nargs=2, default=(2048, 131_072))
    ap.add_argument("--class-chunks", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=("rows", "sharded"))
    a = ap.parse_args(argv)
    if a.only != "sharded":
        n, C = a.rows_shape
        run((n, C), (-(-n // a.row_chunks), -1), a.workers, a.repeat, "rows")
    if a.only != "rows":
        n, V = a.sharded_shape
        run((n, V), (-1, -(-V // a.class_chunks)), a.workers, a.repeat, "sharded")


if __name__ == "__main__":
    main()
