"""tune measures this machine and writes a version-2 table that auto then follows."""

import json

import numpy as np
import pytest

import fastxent as fx
from fastxent import _plan
from fastxent.bench import tune


@pytest.fixture
def restore_policy(monkeypatch):
    yield
    monkeypatch.undo()
    _plan.reload_policy()


def test_tune_writes_a_table_auto_reads_back(tmp_path, monkeypatch, restore_policy):
    monkeypatch.setattr(tune, "CELLS", [("integer", "fused")])
    cells, parallel_min = tune.measure(elements=4096, repeat=1, classes=(3, 40),
                                       progress=lambda s: None)
    assert parallel_min >= 1
    for cell in cells:  # only measured exceptions, each a band of class counts
        assert cell["order"][0] in fx.available_backends()
        assert cell["min_classes"] <= cell["max_classes"]
    table = {"version": 2, "parallel_min_elements": parallel_min, "cells": cells}
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(table))
    monkeypatch.setenv(_plan.POLICY_ENV_VAR, str(path))
    _plan.reload_policy()
    x = np.random.default_rng(0).standard_normal((50, 3))
    np.testing.assert_allclose(fx.sparse_softmax_cross_entropy_with_logits(np.zeros(50, int), x),
                               fx.sparse_softmax_cross_entropy_with_logits(
                                   np.zeros(50, int), x, backend="numpy"), rtol=1e-12)


def test_tune_command_validates_before_measuring(tmp_path, capsys):
    from fastxent.__main__ import main
    assert main(["tune", "--elements", "-5"]) == 2
    assert "--elements -5" in capsys.readouterr().err
    assert main(["tune", "-o", str(tmp_path / "no" / "such" / "x.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()
