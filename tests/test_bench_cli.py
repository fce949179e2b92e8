"""``python -m fastxent bench`` on a tiny grid: JSON rows, verification, speed-ups, options."""

import argparse
import json
import subprocess
import sys

import pytest

import fastxent
from fastxent import __main__ as cli
from fastxent import _threads
from fastxent.bench import common
from fastxent.bench import run as _bench
from fastxent.bench import stream as _stream

TINY = ["--shapes", "16x10,8x3", "--repeat", "2", "--budget", "0.001", "--no-progress"]


def _run(tmp_path, *extra):
    path = tmp_path / "bench.json"
    status = cli.main(["bench", *TINY, "--json", str(path), *extra])
    with open(path) as f:
        return status, json.load(f)


def test_json_has_a_verified_row_per_cell(tmp_path, capsys):
    status, result = _run(tmp_path, "--dtypes", "float32,float64",
                          "--labels", "dense,integer,sigmoid",
                          "--ops", "forward,fused,backward,gradient,inplace")
    out = capsys.readouterr().out
    assert status == 0
    backends = list(fastxent.available_backends())
    # 2 shapes x 2 dtypes x (2 softmax kinds x 5 ops + sigmoid x 4 ops: no saved lse)
    n_cells = 2 * 2 * (2 * 5 + 4)
    rows = result["rows"]
    assert len(rows) == n_cells * len(backends)
    cells = {(r["op"], r["labels"], r["dtype"], tuple(r["shape"]), r["threads"]) for r in rows}
    assert len(cells) == n_cells
    for cell in cells:
        assert sorted(r["backend"] for r in rows if (r["op"], r["labels"], r["dtype"],
                      tuple(r["shape"]), r["threads"]) == cell) == sorted(backends)
    for r in rows:
        assert r["status"] == "ok", r
        assert r["verified"] is True, r
        assert r["time_s"] > 0 and r["gbps"] > 0 and r["stream_gbps"] > 0
        assert r["speedup"] > 0 and r["stream_fraction"] > 0
        assert r["auto"] in backends
        if r["backend"] == "numpy":
            assert r["speedup"] == pytest.approx(1.0)
    assert sum(r["is_auto_pick"] for r in rows) == n_cells
    assert result["meta"]["config"]["shapes"] == ["16x10", "8x3"]
    assert "Verification: all passed." in out
    assert "Bytes model" in out and "xNumPy" in out and "%stream" in out


def test_backends_option_and_threads(tmp_path):
    status, result = _run(tmp_path, "--backends", "numpy", "--threads", "1", "--ops", "fused",
                          "--labels", "integer", "--dtypes", "float64")
    assert status == 0
    assert {r["backend"] for r in result["rows"]} == {"numpy"}
    assert {r["threads"] for r in result["rows"]} == {1}
    assert len(result["rows"]) == 2


def test_failed_verification_gives_status_1(tmp_path, monkeypatch):
    real = common.Cell.reference

    def wrong(cell):
        loss, grad = real(cell)
        return loss + 1, grad
    monkeypatch.setattr(common.Cell, "reference", wrong)
    status, result = _run(tmp_path, "--backends", "numpy", "--ops", "forward",
                          "--labels", "integer", "--dtypes", "float32")
    assert status == 1
    assert all(r["verified"] is False for r in result["rows"])


def test_peers_side_by_side(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # what --peers sets in a fresh process
    status, result = _run(tmp_path, "--peers", "--backends", "numpy", "--labels",
                          "integer,dense", "--ops", "forward,fused", "--dtypes", "float64")
    assert status == 0
    sk = [r for r in result["rows"] if r["backend"] == "sklearn"]
    assert len(sk) == 2 * 2 * 2 and all(r["peer"] for r in sk)
    assert all(r["status"] == "ok" and r["verified"] for r in sk if r["labels"] == "integer")
    assert all(r["status"] == "n/a" for r in sk if r["labels"] == "dense")


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "bench.png"
    status, _ = _run(tmp_path, "--backends", "numpy", "--ops", "fused", "--labels", "integer",
                     "--dtypes", "float32", "--plot", str(png))
    assert status == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    status = cli.main(["bench", *TINY, "--plot", str(tmp_path / "x.png")])
    assert status == 2
    assert "matplotlib" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--shapes", "10"], ["--shapes", "0x3"], ["--ops", "nope"],
                                 ["--labels", "soft"], ["--dtypes", "float16"],
                                 ["--threads", "0"], ["--backends", "tensorflow"],
                                 ["--repeat", "0"], ["--budget", "0"],
                                 ["--threads", str(_threads.usable_cores() + 1)],
                                 ["--busy", "-1"], ["--busy", str(_threads.usable_cores() + 1)],
                                 ["--json", "/nonexistent/dir/x.json"],
                                 ["--plot", "/nonexistent/dir/x.png"]])
def test_bad_options_exit_2_before_measuring(bad, capsys):
    assert cli.main(["bench", *TINY, *bad]) == 2
    captured = capsys.readouterr()
    assert "error" in captured.err
    assert "Verification" not in captured.out  # nothing was measured


def test_busy_times_every_row_again_under_load(tmp_path, capsys):
    status, result = _run(tmp_path, "--busy", "1", "--backends", "numpy")
    assert status == 0 and result["meta"]["config"]["busy"] == 1
    for row in result["rows"]:
        assert row["time_busy_s"] > 0
        assert row["busy_ratio"] == pytest.approx(row["time_busy_s"] / row["time_s"])
    assert "busy " in capsys.readouterr().out


def test_busy_cores_start_and_stop_their_processes():
    with common.BusyCores(1) as busy:
        (proc,) = busy.procs
        assert proc.poll() is None          # running
    assert proc.poll() is not None          # stopped


def test_parse_shapes():
    assert _bench.parse_shapes("256x10, 1_000_000x3,4096X1000") == [
        (256, 10), (1_000_000, 3), (4096, 1000)]


def test_default_grid():
    cfg = _bench.config_from_args(argparse.Namespace())
    assert cfg.shapes == [(256, 10), (4096, 1000), (2048, 32768), (1_000_000, 3)]
    assert cfg.dtypes == ["float32", "float64"] and cfg.labels == ["integer", "dense"]
    assert cfg.ops == ["forward", "fused"] and cfg.backends[0] == "numpy"
    quick = _bench.config_from_args(argparse.Namespace(quick=True))
    assert len(quick.cells()) < len(cfg.cells())


def test_stream_measurement():
    _stream.clear_cache()
    read = _stream.measure("read", 1 << 16, 2, budget=0.01)
    copy = _stream.measure("copy", 1 << 16, 1, budget=0.01)
    assert read["moved"] == 1 << 16 and copy["moved"] == 2 << 16
    assert read["gbps"] > 0 and copy["gbps"] > 0
    assert _stream.measure("read", 1 << 16, 2, budget=0.01) is read  # cached
    _stream.clear_cache()


def test_help_lists_the_options_and_every_command_has_a_description():
    out = subprocess.run([sys.executable, "-m", "fastxent", "bench", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for opt in ("--shapes", "--dtypes", "--threads", "--labels", "--ops", "--quick",
                "--repeat", "--json", "--plot", "--peers", "--check"):
        assert opt in out
    top = subprocess.run([sys.executable, "-m", "fastxent", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "``" not in top and ":func:" not in top  # no raw reStructuredText
    for name, (_, text) in cli.COMMANDS.items():
        assert name in top and text.split()[0] in top


def test_rows_are_printed_as_each_cell_finishes(tmp_path, monkeypatch, capsys):
    seen = []
    real = _bench.format_rows

    def spy(rows):
        seen.append(len(capsys.readouterr().out))  # output so far, before these rows
        return real(rows)
    monkeypatch.setattr(_bench, "format_rows", spy)
    status, _ = _run(tmp_path, "--backends", "numpy", "--ops", "forward,fused",
                     "--labels", "integer", "--dtypes", "float32")
    assert status == 0 and len(seen) == 4
    assert seen[0] > 0  # the header came out before the first cell was measured
