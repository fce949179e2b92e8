"""benchmarks/check_dashboard.py helpers, without a browser or asv: the offline fix-up of the
published page and the blank-screenshot test."""

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("_fastxent_check_dashboard",
                                                  ROOT / "benchmarks" / "check_dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PAGE = """<html><head>
<script src="https://code.jquery.com/jquery-3.3.1.min.js" integrity="sha256-x" crossorigin="anonymous"></script>
<script src="https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.min.js"></script>
<script language="javascript" type="text/javascript" src="jquery.flot.axislabels.js"></script>
<script src="https://cdnjs.cloudflare.com/ajax/libs/blueimp-md5/2.19.0/js/md5.min.js"></script>
<script src="https://example.org/unknown.js"></script>
</head><body></body></html>
"""


def test_localize_points_cdn_links_at_local_files(tmp_path):
    cd = _module()
    (tmp_path / "index.html").write_text(PAGE)
    used = cd.localize(tmp_path)
    text = (tmp_path / "index.html").read_text()
    assert used["md5.min.js"] == "shim" and 'src="vendor/md5.min.js"' in text
    assert (tmp_path / "vendor" / "md5.min.js").exists()
    assert "https://example.org/unknown.js" in text  # no local copy: the CDN stays
    assert "integrity=" not in text and "crossorigin=" not in text
    for name in ("jquery-3.3.1.min.js", "jquery.flot.min.js"):
        if used[name].startswith("/"):  # a system copy was found (Debian libjs-*)
            assert f'src="vendor/{name}"' in text
            assert (tmp_path / "vendor" / name).stat().st_size > 1000


def test_png_stats_tell_blank_from_drawn(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    cd = _module()
    blank, drawn = tmp_path / "blank.png", tmp_path / "drawn.png"
    fig = plt.figure(figsize=(3, 2))
    fig.savefig(blank)
    fig.gca().plot([0, 1, 2], [0, 1, 0]); fig.gca().set_title("x")  # noqa: E702
    fig.savefig(drawn)
    plt.close(fig)
    b, d = cd.png_stats(blank, step=1), cd.png_stats(drawn, step=1)
    assert b["non_background"] < 0.02 and b["colours"] < 16
    assert d["non_background"] > 0.02 and d["colours"] >= 16


def test_dom_checks():
    cd = _module()
    facts, problems = cd.check_grid(
        '<a class="btn benchmark-container" href="#a"><div id="summarygrid-a" '
        'class="benchmark-plot"><canvas></canvas></div></a>', 1)
    assert facts == {"tiles": 1, "plots_drawn": 1} and not problems
    _, problems = cd.check_grid("<body></body>", 3)
    assert len(problems) == 2
    _, problems = cd.check_graph('<div id="main-graph"><p>No graphs to load.</p></div>'
                                 '<div id="overview"></div>')
    assert len(problems) == 2
    # the list and regressions pages: 0.1's stand-in for stupidtable left them on "Loading..."
    loaded = ('<div id="summarylist-display"><table><tr><td>a</td></tr></table></div>'
              '<div id="regressions-display" style="display: none">Loading...</div>')
    facts, problems = cd.check_table_page(loaded, "summarylist-display", "list")
    assert facts == {"table_rows": 1} and not problems
    _, problems = cd.check_table_page(loaded, "regressions-display", "regressions")
    assert problems == ["the regressions page is hidden",
                        "the regressions page is stuck on 'Loading...'"]
    _, problems = cd.check_table_page("<body></body>", "summarylist-display", "list")
    assert problems == ["the list page is missing", "the list page shows no table"]


def test_stupidtable_stand_in_defines_what_asv_calls():
    from fastxent.bench.dashboard import SHIMS
    assert "$.fn.stupidsort" in SHIMS["stupidtable.min.js"]
    assert "$.fn.stupidtable" in SHIMS["stupidtable.min.js"]
