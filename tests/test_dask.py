"""fastxent.dask on a real LocalCluster (worker processes): losses and gradients over row,
class and row-and-class chunks equal the single-machine call, for every option; the dask
SoftmaxRegression fit equals the in-memory fit."""

import doctest
import logging
import subprocess
import sys

import numpy as np
import pytest

import fastxent as fx

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
import dask  # noqa: E402

import fastxent.dask as fxd  # noqa: E402

N, C = 103, 37
CHUNKS = {"rows": ((30, 30, 30, 13), -1), "classes": (-1, (10, 10, 10, 7)),
          "both": ((50, 40, 13), (15, 15, 7))}


@pytest.fixture(scope="module")
def client():
    # one small cluster for the module: 2 worker processes x 1 thread (the 2-core CI box)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            distributed.Client(cluster) as c:
        yield c


def _data(dtype, kind, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(N, C)) * 3).astype(dtype)
    if kind == "integer":
        labels = rng.integers(0, C, N)
        labels[[5, 60]] = -100
    elif kind == "dense":
        labels = rng.dirichlet(np.ones(C), N).astype(dtype)
    else:
        labels = rng.random((N, C)).astype(dtype)
    return x, labels, rng.uniform(0.2, 2.0, N), rng.uniform(0.5, 2.0, C)


def _options(kind, full, w):
    if not full:
        return {}
    if kind == "sigmoid":
        return dict(pos_weight=w, label_smoothing=0.1)
    opts = dict(label_smoothing=0.1, class_weight=w, z_loss=1e-2, logit_softcap=5.0)
    if kind == "integer":
        opts["ignore_index"] = -100
    return opts


CLASSES = {"dense": (fx.SoftmaxCrossEntropy, fxd.SoftmaxCrossEntropy),
           "integer": (fx.SparseSoftmaxCrossEntropy, fxd.SparseSoftmaxCrossEntropy),
           "sigmoid": (fx.SigmoidCrossEntropy, fxd.SigmoidCrossEntropy)}


def _close(got, want, dtype):
    tol = 1e-6 if dtype == np.float32 else 1e-12
    want = np.asarray(want, np.float64)
    assert np.shape(got) == np.shape(want)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=tol,
                               atol=tol * max(np.abs(want).max(), 1e-300))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("chunks", list(CHUNKS))
@pytest.mark.parametrize("kind", list(CLASSES))
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("full", [False, True], ids=["plain", "all-options"])
def test_equals_single_machine(request, dtype, chunks, kind, reduction, full):
    # on the worker processes for every option with "none" and "mean"; the rest of the matrix
    # on dask's synchronous scheduler (the same graph; each first call of a kernel variant
    # costs a worker process a compile, too slow for the whole matrix on a 2-core CI box)
    on_cluster = full and reduction != "sum"
    scheduler = request.getfixturevalue("client") if on_cluster else "sync"
    _equals_single_machine(dtype, chunks, kind, reduction, full, scheduler)


def _equals_single_machine(dtype, chunks, kind, reduction, full, scheduler):
    x, labels, sw, w = _data(dtype, kind)
    if kind == "integer" and not full:
        labels = np.where(labels == -100, 0, labels)
    opts = _options(kind, full, w)
    single, lazy = CLASSES[kind]
    ref = single(reduction=reduction, check="off", **opts)
    dist = lazy(reduction=reduction, check="off", **opts)
    X = da.from_array(x, chunks=CHUNKS[chunks])
    Y = labels if kind == "integer" else da.from_array(labels, chunks=X.chunks)
    kw = dict(sample_weight=sw) if full else {}
    if full and reduction == "none":
        g = np.random.default_rng(1).normal(size=N)
        kw["grad_loss"] = g
    elif full:
        kw["grad_loss"] = 0.7
    want, gwant = ref.loss_gradient(labels, x, **kw)
    loss, grad = dist.loss_gradient(Y, X, **kw)
    assert isinstance(loss, da.Array) and isinstance(grad, da.Array)  # lazy
    assert grad.chunks == X.chunks
    loss, grad, alone, again = dask.compute(loss, grad, dist.loss(Y, X, kw.get("sample_weight")),
                                            dist.gradient(Y, X, **kw), scheduler=scheduler)
    assert np.asarray(loss).dtype == np.dtype(dtype)
    _close(loss, want, dtype)
    _close(alone, want, dtype)
    _close(grad, gwant, dtype)
    _close(again, gwant, dtype)


def test_mean_over_unequal_chunks_is_not_a_mean_of_means(client):
    x, t, _, _ = _data(np.float64, "integer")
    X = da.from_array(x, chunks=((90, 13), -1))
    T = da.from_array(t, chunks=((90, 13),))
    got = fxd.SparseSoftmaxCrossEntropy(ignore_index=-100).loss(T, X).compute()
    want = fx.SparseSoftmaxCrossEntropy(ignore_index=-100).loss(t, x)
    per_row = fx.SparseSoftmaxCrossEntropy(ignore_index=-100, reduction="none").loss(t, x)
    keep = t != -100
    means = [per_row[:90][keep[:90]].mean(), per_row[90:][keep[90:]].mean()]
    assert abs(np.mean(means) - want) > 1e-3  # dask-ml's log_loss would be this far off
    _close(got, want, np.float64)


@pytest.mark.parametrize("chunks", ["rows", "classes"])
def test_mean_over_nothing_is_zero(chunks):
    x, _, _, _ = _data(np.float64, "integer")
    t = np.full(N, -100)
    loss, grad = fxd.SparseSoftmaxCrossEntropy(ignore_index=-100, check="off").loss_gradient(
        t, da.from_array(x, chunks=CHUNKS[chunks]))
    loss, grad = dask.compute(loss, grad, scheduler="sync")
    assert loss == 0 and not grad.any()


def test_bad_label_raises_on_compute():
    x, t, _, _ = _data(np.float64, "integer")
    t = t.copy()
    t[7] = C + 3
    for chunks in ("rows", "classes"):
        loss = fxd.SparseSoftmaxCrossEntropy(ignore_index=-100).loss(
            t, da.from_array(x, chunks=CHUNKS[chunks]))
        with pytest.raises(ValueError, match="is not a class index"):
            loss.compute(scheduler="sync")


BACKENDS = [b for b in ("numpy", "numba", "cython") if b in fx.available_backends()]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("chunks", list(CHUNKS))
@pytest.mark.parametrize("kind", list(CLASSES))
def test_read_only_blocks(backend, chunks, kind):
    x, labels, sw, w = _data(np.float32, kind)
    x.setflags(write=False)
    labels.setflags(write=False)
    opts = _options(kind, True, w)
    X = da.from_array(x, chunks=CHUNKS[chunks])
    Y = labels if kind == "integer" else da.from_array(labels, chunks=X.chunks)
    single, lazy = CLASSES[kind]
    want, gwant = single(check="off", backend=backend, **opts).loss_gradient(labels, x)
    loss, grad = dask.compute(*lazy(check="off", backend=backend, **opts).loss_gradient(Y, X),
                              scheduler="sync")  # from_array hands out read-only views
    _close(loss, want, np.float32)
    _close(grad, gwant, np.float32)


@pytest.mark.parametrize("chunks", list(CHUNKS))
def test_logsumexp(client, chunks):
    x, _, _, _ = _data(np.float64, "dense")
    got = fxd.logsumexp(da.from_array(x, chunks=CHUNKS[chunks])).compute()
    _close(got, fx.logsumexp(x, axis=-1), np.float64)


def test_functions(client):
    x, t, sw, w = _data(np.float64, "integer")
    X = da.from_array(x, chunks=CHUNKS["both"])
    got = fxd.sparse_softmax_cross_entropy_with_logits(t, X, ignore_index=-100,
                                                       sample_weight=sw, reduction="mean")
    _close(got.compute(), fx.sparse_softmax_cross_entropy_with_logits(
        t, x, ignore_index=-100, sample_weight=sw, reduction="mean"), np.float64)
    x, y, _, _ = _data(np.float64, "dense")
    X = da.from_array(x, chunks=CHUNKS["classes"])
    got = fxd.softmax_cross_entropy_with_logits(da.from_array(y, chunks=X.chunks), X)
    _close(got.compute(), fx.softmax_cross_entropy_with_logits(y, x), np.float64)
    x, z, _, _ = _data(np.float64, "sigmoid")
    X = da.from_array(x, chunks=CHUNKS["both"])
    got = fxd.sigmoid_cross_entropy_with_logits(da.from_array(z, chunks=X.chunks), X)
    _close(got.compute(), fx.sigmoid_cross_entropy_with_logits(z, x), np.float64)


def test_one_fastxent_thread_per_block_on_workers(client):
    assert client.submit(fxd.block_threads, pure=False).result() == 1
    assert client.submit(fxd.block_threads, 3, pure=False).result() == 3
    assert fxd.block_threads() is None  # the caller's own thread: fastxent's default


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
def test_softmax_regression_fit_equals_in_memory(client, solver):
    from fastxent.sklearn import SoftmaxRegression
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 5))
    y = rng.integers(0, 3, 600)
    X[:, 0] += y
    sw = rng.uniform(0.5, 2.0, 600)
    kw = dict(tol=1e-8, max_iter=500, class_weight="balanced", label_smoothing=0.05,
              solver=solver)
    ref = SoftmaxRegression(**kw).fit(X, y, sample_weight=sw)
    Xd = da.from_array(X, chunks=(170, -1))
    model = SoftmaxRegression(**kw).fit(Xd, da.from_array(y, chunks=170),
                                        sample_weight=da.from_array(sw, chunks=170))
    np.testing.assert_allclose(model.coef_, ref.coef_, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(model.intercept_, ref.intercept_, rtol=1e-6, atol=1e-6)
    proba = model.predict_proba(Xd)
    pred = model.predict(Xd)
    assert isinstance(proba, da.Array) and isinstance(pred, da.Array)  # lazy
    np.testing.assert_allclose(proba.compute(), ref.predict_proba(X), rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(pred.compute(), ref.predict(X))


def test_import_fastxent_does_not_import_dask():
    code = "import sys, fastxent; assert 'dask' not in sys.modules, 'dask imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_docstring_examples():
    with dask.config.set(scheduler="sync"):
        result = doctest.testmod(fxd, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
