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
