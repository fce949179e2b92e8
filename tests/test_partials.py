"""Mergeable class-shard partials (fastxent.partials): shards merged in any order equal the
whole-row call, for every option, on every backend; and the saved-logsumexp backward the
shard gradient runs on."""

import numpy as np
import pytest

import fastxent as fx

BACKENDS = [b for b in ("numpy", "numba", "cython") if b in fx.available_backends()]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sparse", [True, False])
def test_saved_lse_backward_with_softcap(backend, dtype, sparse):
    # the Cython saved-lse backward once ignored logit_softcap (gradient off by O(1))
    rng = np.random.default_rng(0)
    C = 300
    x = (rng.normal(size=(6, C)) * 5).astype(dtype)
    labels = rng.integers(0, C, 6) if sparse else rng.dirichlet(np.ones(C), 6).astype(dtype)
    cls = fx.SparseSoftmaxCrossEntropy if sparse else fx.SoftmaxCrossEntropy
    loss = cls(logit_softcap=3.0, label_smoothing=0.1, z_loss=0.01, reduction="sum",
               class_weight=np.linspace(0.5, 2, C), backend=backend, check="off")
    lse = np.empty(6, dtype)
    loss.loss(labels, x, lse_out=lse)
    want = loss.gradient(labels, x)
    tol = 2e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(loss.gradient(labels, x, lse=lse), want, rtol=tol,
                               atol=tol * np.abs(want).max())
    inplace = x.copy()
    loss.gradient(labels, inplace, lse=lse, gradient_out=inplace)
    np.testing.assert_allclose(inplace, want, rtol=tol, atol=tol * np.abs(want).max())


# ------------------------------------------------------------------------------ partials

import doctest  # noqa: E402

from hypothesis import given, settings, strategies as st  # noqa: E402

from fastxent import partials as P  # noqa: E402

OPTIONS = [dict(), dict(label_smoothing=0.1), dict(class_weight="w"), dict(logit_softcap=4.0),
           dict(label_smoothing=0.2, class_weight="w", logit_softcap=3.0, z_loss=0.01)]


def _case(dtype, sparse, n=40, C=29, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, C)) * 3).astype(dtype)
    t = rng.integers(0, C, n)
    t[[3, 7]] = -100
    y = rng.dirichlet(np.ones(C), n).astype(dtype)
    return x, (t if sparse else y), rng.uniform(0.5, 2.0, C)


def _split(sparse, labels, x, cuts, opts, backend=None):
    C = x.shape[1]
    kw = dict(opts, n_classes=C, backend=backend)
    kw.pop("z_loss", None)
    if sparse:
        kw["ignore_index"] = -100
    parts = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        if sparse:
            parts.append(P.sparse_softmax_partials(labels, x[:, a:b], class_offset=a, **kw))
        else:
            parts.append(P.softmax_partials(labels[:, a:b], x[:, a:b], class_offset=a, **kw))
    return parts


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(o) or "plain")
def test_shards_equal_whole_row(backend, dtype, sparse, opts):
    x, labels, w = _case(dtype, sparse)
    opts = {k: (w if v == "w" else v) for k, v in opts.items()}
    z = opts.get("z_loss", 0.0)
    cls = fx.SparseSoftmaxCrossEntropy if sparse else fx.SoftmaxCrossEntropy
    extra = dict(ignore_index=-100) if sparse else {}
    ref = cls(reduction="none", check="off", backend=backend, **extra, **opts)
    want, gwant = ref.loss_gradient(labels, x)
    cap = opts.get("logit_softcap")
    lse_want = fx.logsumexp(x if not cap else cap * np.tanh(x.astype(np.float64) / cap),
                            axis=-1)
    cuts = [0, 4, 5, 17, 29]
    x.setflags(write=False)  # shards are read-only views (what dask hands a task)
    parts = _split(sparse, labels, x, cuts, opts, backend)
    merged = P.reduce_partials(np.stack(parts, axis=1))
    loss, lse = P.finalize_partials(merged, z)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(loss, want, rtol=tol, atol=tol * np.abs(want).max())
    np.testing.assert_allclose(lse, lse_want, rtol=tol)
    grads = []
    kw = dict({k: v for k, v in opts.items()}, n_classes=x.shape[1], backend=backend)
    if sparse:
        kw["ignore_index"] = -100
    for a, b in zip(cuts[:-1], cuts[1:]):
        if sparse:
            grads.append(P.sparse_softmax_shard_gradient(labels, x[:, a:b], merged,
                                                         class_offset=a, **kw))
        else:
            grads.append(P.softmax_shard_gradient(labels[:, a:b], x[:, a:b], merged,
                                                  class_offset=a, **kw))
    np.testing.assert_allclose(np.concatenate(grads, axis=1), gwant, rtol=tol,
                               atol=tol * np.abs(gwant).max())


def test_confident_rows_keep_their_tail():
    # a loss of ~1e-20 survives the merge (logs is log1p-exact, the gap has no cancellation)
    x = np.array([[100.0, 50.0, 60.0, 55.0]])
    t = np.array([0])
    want = fx.sparse_softmax_cross_entropy_with_logits(t, x)
    parts = [P.sparse_softmax_partials(t, x[:, a:b], class_offset=a, n_classes=4)
             for a, b in ((0, 1), (1, 3), (3, 4))]
    loss, _ = P.finalize_partials(P.reduce_partials(np.stack(parts, axis=1)))
    assert want[0] > 0
    np.testing.assert_allclose(loss, want, rtol=1e-14)


def _partials_of(seed, n_shards):
    x, t, w = _case(np.float64, True, n=8, C=24, seed=seed)
    cuts = np.linspace(0, 24, n_shards + 1).astype(int)
    return _split(True, t, x, list(cuts), dict(label_smoothing=0.1, class_weight=w))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), order=st.permutations(range(4)))
def test_merge_is_commutative_and_associative(seed, order):
    a, b, c, d = _partials_of(seed, 4)
    ab, ba = P.merge_partials(a, b), P.merge_partials(b, a)
    assert ab.tobytes() == ba.tobytes()  # exactly commutative
    left = P.merge_partials(P.merge_partials(ab, c), d)
    right = P.merge_partials(a, P.merge_partials(b, P.merge_partials(c, d)))
    shuffled = [(a, b, c, d)[i] for i in order]
    tree = P.reduce_partials(np.stack(shuffled, axis=1))
    for other in (right, tree):
        for f in ("m", "logs", "mass", "gap"):
            np.testing.assert_allclose(other[f], left[f], rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(other["dropped"], left["dropped"])


def test_bad_labels_and_shapes_raise():
    x = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"labels\[1\] = 9 is not a class index"):
        P.sparse_softmax_partials([0, 9, 1], x, class_offset=4, n_classes=8)
    with pytest.raises(ValueError, match="does not fit in n_classes=6"):
        P.sparse_softmax_partials([0, 1, 1], x, class_offset=4, n_classes=6)
    with pytest.raises(TypeError, match="PARTIALS_DTYPE"):
        P.merge_partials(np.zeros(3), np.zeros(3))


def test_mean_denominator():
    t = np.array([0, 2, -100, 1])
    cw = np.array([1.0, 2.0, 3.0])
    sw = np.array([1.0, 0.5, 7.0, 2.0])
    assert P.mean_denominator(4, labels=t, sample_weight=sw, class_weight=cw,
                              ignore_index=-100) == 1.0 + 1.5 + 4.0
    assert P.mean_denominator(4, sample_weight=sw) == 10.5
    assert P.mean_denominator(4) == 4.0


def test_docstring_examples():
    result = doctest.testmod(P, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
