"""The auto policy is data: tune writes a table, and auto follows whatever table it is given."""

import json

import numpy as np
import pytest

import fastxent as fx
from fastxent import _dispatch, _registry, _tune


@pytest.fixture
def policy_file(tmp_path, monkeypatch):
    def use(table):
        path = tmp_path / "policy.json"
        path.write_text(json.dumps(table))
        monkeypatch.setenv(_dispatch.POLICY_ENV_VAR, str(path))
        _dispatch.reload_policy()
        return path
    yield use
    monkeypatch.undo()
    _dispatch.reload_policy()


def test_auto_follows_the_policy_table(policy_file):
    last = _registry.available_backends()[-1]
    policy_file({"cells": {
        "sparse/fused/float32": [
            {"max_classes": 5, "order": ["numpy"], "small_order": [last],
             "parallel_from": 100},
            {"max_classes": 1 << 62, "order": [last, "numpy"], "small_order": ["numpy"],
             "parallel_from": 10 ** 9}],
        "default": [{"max_classes": 1 << 62, "order": ["numpy"], "parallel_from": 1}]}})
    f32 = np.dtype(np.float32)
    pick = lambda n, c: (lambda m, t: (m.NAME, t))(  # noqa: E731
        *_dispatch.select("fused", "sparse", f32, n, c, n_threads=2))
    assert pick(1000, 3) == ("numpy", 2)       # big: "order", threads from 100 elements
    assert pick(10, 3) == (last, 1)            # small: "small_order", one thread
    assert pick(1000, 100) == ("numpy", 1)     # below 10**9 elements: one thread
    assert _dispatch.select("forward", "dense", f32, 10, 10)[0].NAME == "numpy"  # default
    assert "measured fastest on numpy" in fx.explain(shape=(1000, 3), dtype="float32",
                                                      n_threads=2)


def test_tune_writes_a_table_auto_can_use(tmp_path, monkeypatch, policy_file):
    monkeypatch.setattr(_tune, "CLASSES", (3, 40))
    monkeypatch.setattr(_tune, "CELLS", [("sparse", "fused"), ("util", "logsumexp")])
    table = _tune.measure(elements=2000, repeat=1, sizes=(1000,), progress=lambda s: None)
    names = set(_registry.available_backends())
    for key in ("sparse/fused/float32", "sparse/fused/float64", "util/logsumexp/float64"):
        bands = table["cells"][key]
        assert bands[-1]["max_classes"] == 1 << 62
        assert [b["max_classes"] for b in bands] == sorted(b["max_classes"] for b in bands)
        for band in bands:
            assert set(band["order"]) == names and set(band["small_order"]) == names
            assert band["parallel_from"] in (1000, 1 << 62)
    assert all(v > 0 for t in table["timings_s"].values() for v in t.values())
    policy_file(table)
    x = np.random.default_rng(0).standard_normal((50, 3))
    np.testing.assert_allclose(fx.sparse_softmax_cross_entropy_with_logits(np.zeros(50, int), x),
                               fx.sparse_softmax_cross_entropy_with_logits(
                                   np.zeros(50, int), x, backend="numpy"))
