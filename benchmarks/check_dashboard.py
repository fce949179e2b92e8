#!/usr/bin/env python
"""Publish the asv results and check, in a real headless browser, that the dashboard renders.

    python benchmarks/check_dashboard.py [--no-publish] [--out DIR] [--chromium PATH]

1. ``asv publish`` (results must exist: ``asv run --python=same --quick ...`` first);
2. makes the published page work offline: asv's index.html loads jQuery, Flot and Bootstrap
   from CDNs, which a machine without internet access cannot reach, so every CDN ``<script>``
   / ``<link>`` is pointed at a local copy (``vendor/`` in the html directory) taken from the
   system's JavaScript packages (Debian: ``apt-get install libjs-jquery libjs-jquery-flot
   libjs-bootstrap``), with tiny shims for the optional ones (md5, stupidtable, orderBars).
   A library with no local copy keeps its CDN address (fine on a machine that is online);
3. serves the html directory on 127.0.0.1 (as ``asv preview`` does: the page loads its data
   with XHR, which file:// URLs do not allow);
4. opens the benchmark grid and one benchmark's graph page in headless Chromium
   (``--dump-dom`` after ``--virtual-time-budget``, and ``--screenshot``), and checks that the
   JavaScript ran: one benchmark tile per benchmark with a drawn plot (a canvas), the graph
   page's main plot drawn, no "failed to load" error shown; and that the PNG screenshots
   are not blank (many colours, enough non-background pixels).

Exit status 0 when every check passes; the screenshots are left in ``--out``
(default ``.asv/dashboard-check``) to look at.
"""

import argparse
import json
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

ROOT = pathlib.Path(__file__).resolve().parents[1]

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--disable-dev-shm-usage", "--mute-audio"]

from fastxent.bench.dashboard import load_asv_conf, localize, serve  # noqa: E402


def find_chromium(explicit=None):
    for name in ([explicit] if explicit else []) + ["chromium", "chromium-browser",
                                                      "google-chrome", "chrome"]:
        path = shutil.which(name) if name else None
        if path:
            return path
    return None


def chromium(binary, url, *, dump_dom=False, screenshot=None, budget_ms=15000, size="1400,1000",
             timeout=120, console=None):
    """Run headless Chromium on ``url``; the DOM (``dump_dom``) as text. JavaScript errors
    the page logged (uncaught exceptions, failed loads) are appended to ``console``."""
    with tempfile.TemporaryDirectory(prefix="asv-dash-chromium-") as profile:
        cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
               f"--virtual-time-budget={budget_ms}", f"--window-size={size}",
               "--enable-logging=stderr", "--v=0"]
        if dump_dom:
            cmd.append("--dump-dom")
        if screenshot:
            cmd.append(f"--screenshot={screenshot}")
        cmd.append(url)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}")
    if console is not None:
        console.extend(line.split("] ", 1)[-1] for line in proc.stderr.splitlines()
                       if "CONSOLE" in line and ("Uncaught" in line or "Error" in line))
    return proc.stdout


# ------------------------------------------------------------------------------ PNG

def png_pixels(path):
    """(width, height, channels, rows of bytes) of an 8-bit, non-interlaced PNG."""
    data = pathlib.Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, color, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(color)
    if depth != 8 or channels is None or interlace:
        raise ValueError(f"unsupported PNG format (depth {depth}, colour type {color})")
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + ((a + b) >> 1)) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, channels, rows


def png_stats(path, step=4):
    """Distinct colours and the fraction of pixels that differ from the most common one."""
    width, height, channels, rows = png_pixels(path)
    counts = {}
    for y in range(0, height, step):
        row = rows[y]
        for x in range(0, width, step):
            px = row[x * channels:x * channels + min(channels, 3)]
            counts[px] = counts.get(px, 0) + 1
    total = sum(counts.values())
    background = max(counts.values())
    return {"width": width, "height": height, "colours": len(counts),
            "non_background": 1 - background / total}


# ------------------------------------------------------------------------------ checks

def check_grid(dom, n_benchmarks):
    problems = []
    tiles = len(re.findall(r'class="btn benchmark-container"', dom))
    plots = re.findall(r'<div id="summarygrid-[^"]+" class="benchmark-plot"[^>]*>(.*?)</div>',
                       dom, flags=re.S)
    drawn = sum("<canvas" in p for p in plots)
    if tiles < n_benchmarks:
        problems.append(f"benchmark grid shows {tiles} tiles, expected {n_benchmarks}")
    if drawn == 0:
        problems.append("no benchmark tile has a drawn plot (no <canvas> in the grid)")
    if "Failed to load required JavaScript" in dom or 'id="error" class="modal fade in"' in dom:
        problems.append("the page shows an error (JavaScript failed to load?)")
    return {"tiles": tiles, "plots_drawn": drawn}, problems


def check_table_page(dom, display_id, what):
    """The benchmark list / regressions pages: shown, loaded (not stuck on "Loading..."),
    with a table or asv's own "nothing here" text."""
    problems = []
    m = re.search(rf'<div id="{display_id}"(.*?)(?=<div id="[a-z]+-display"|</body>|\Z)', dom,
                  flags=re.S)
    body = m.group(1) if m else ""
    if not body:
        problems.append(f"the {what} page is missing")
    elif re.match(r'[^>]*display:\s*none', body):
        problems.append(f"the {what} page is hidden")
    rows = body.count("<tr")
    if "Loading" in re.sub(r"<[^>]+>", " ", body):
        problems.append(f"the {what} page is stuck on 'Loading...'")
    elif rows == 0 and "No regressions" not in body:
        problems.append(f"the {what} page shows no table")
    return {"table_rows": rows}, problems


def check_graph(dom):
    problems = []
    m = re.search(r'<div id="main-graph"[^>]*>(.*?)<div id="overview"', dom, flags=re.S)
    body = m.group(1) if m else ""
    canvases = body.count("<canvas")
    if canvases == 0:
        problems.append("the benchmark's graph page has no drawn plot in #main-graph")
    if "No graphs to load" in body:
        problems.append("the benchmark's graph page says 'No graphs to load'")
    if "graph-display" in dom and re.search(r'id="graph-display"[^>]*display:\s*none', dom):
        problems.append("the graph page is hidden")
    return {"main_graph_canvases": canvases}, problems


def graph_state(html_dir, bench, name):
    """URL state (``?p-param=value&...``) selecting a parameter combination with results,
    so the graph page draws data rather than an empty frame."""
    import itertools
    import urllib.parse
    params = bench.get("params") or []
    if not params:
        return ""
    for path in (pathlib.Path(html_dir) / "graphs").rglob(f"{name}.json"):
        if "summary" in path.parts:
            continue
        series = json.loads(path.read_text())
        for combo_index, combo in enumerate(itertools.product(*params)):
            if any(isinstance(point[1], list) and combo_index < len(point[1])
                   and point[1][combo_index] is not None for point in series):
                return "?" + "&".join(
                    f"p-{urllib.parse.quote(n)}={urllib.parse.quote(v)}"
                    for n, v in zip(bench["param_names"], combo))
    return ""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "asv.conf.json"),
                    help="asv configuration (default: the repository's asv.conf.json)")
    ap.add_argument("--no-publish", action="store_true", help="use the html already published")
    ap.add_argument("--no-localize", action="store_true",
                    help="keep the CDN links (needs internet access in the browser)")
    ap.add_argument("--out", default=None, help="where screenshots and DOM dumps go "
                                                "(default .asv/dashboard-check)")
    ap.add_argument("--chromium", default=None, help="browser binary (default: chromium)")
    ap.add_argument("--benchmark", default=None,
                    help="graph page to open (default: the first time_ benchmark)")
    ap.add_argument("--budget-ms", type=int, default=15000,
                    help="virtual time the page gets to run its JavaScript")
    args = ap.parse_args(argv)

    conf_path = pathlib.Path(args.config).resolve()
    conf = load_asv_conf(conf_path)
    html_dir = (conf_path.parent / conf.get("html_dir", "html")).resolve()
    out = pathlib.Path(args.out or ROOT / ".asv" / "dashboard-check").resolve()
    out.mkdir(parents=True, exist_ok=True)

    if not args.no_publish:
        proc = subprocess.run([sys.executable, "-m", "asv", "--config", str(conf_path),
                               "publish"], cwd=conf_path.parent,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
            print("asv publish failed: are there results? Run e.g.\n  asv run --python=same "
                  "--quick --set-commit-hash=$(git rev-parse HEAD)", file=sys.stderr)
            return 1
        print(f"published {html_dir}")
    if not (html_dir / "index.html").exists():
        print(f"no dashboard in {html_dir}: run asv publish", file=sys.stderr)
        return 1
    if not args.no_localize:
        for name, source in localize(html_dir).items():
            print(f"  {name:32s} <- {source}")

    index = json.loads((html_dir / "index.json").read_text())
    names = sorted(index["benchmarks"])
    with_data = sorted(p.stem for p in (html_dir / "graphs" / "summary").glob("*.json"))
    if not with_data:
        print("the published dashboard has no results to draw: run asv first",
              file=sys.stderr)
        return 1
    graph_bench = args.benchmark or next((n for n in with_data if ".time_" in n),
                                         with_data[0])
    print(f"{len(names)} benchmarks in index.json, {len(with_data)} with results; graph page: "
          f"{graph_bench}")

    binary = find_chromium(args.chromium)
    if binary is None:
        print("no chromium found: apt-get install -y chromium (or pass --chromium PATH)",
              file=sys.stderr)
        return 1

    server = serve(html_dir)
    base = f"http://127.0.0.1:{server.server_address[1]}/index.html"
    problems, report = [], {}
    try:
        state = graph_state(html_dir, index["benchmarks"][graph_bench], graph_bench)
        # every page of the dashboard: the grid, a benchmark's graph, the benchmark list
        # and the regressions (0.1's check never opened the last two, which hung)
        pages = {"grid": base, "graph": f"{base}#{graph_bench}{state}",
                 "list": f"{base}#summarylist", "regressions": f"{base}#regressions"}
        for page, url in pages.items():
            console = []
            dom = chromium(binary, url, dump_dom=True, budget_ms=args.budget_ms,
                           console=console)
            (out / f"dashboard_{page}.html").write_text(dom)
            shot = out / f"dashboard_{page}.png"
            if shot.exists():
                shot.unlink()
            chromium(binary, url, screenshot=str(shot), budget_ms=args.budget_ms)
            if page == "grid":
                facts, found = check_grid(dom, len(names))
            elif page == "graph":
                facts, found = check_graph(dom)
            else:
                facts, found = check_table_page(
                    dom, f"{'summarylist' if page == 'list' else 'regressions'}-display", page)
            found += [f"JavaScript error: {c}" for c in console]
            if not shot.exists():
                found.append(f"no screenshot was written for the {page} page")
            elif page in ("list", "regressions"):
                pass  # text pages: a short table on white is not a blank plot
            else:
                stats = png_stats(shot)
                facts.update(stats)
                if stats["colours"] < 16 or stats["non_background"] < 0.02:
                    found.append(f"the {page} screenshot looks blank: {stats}")
            report[page] = {"url": url, "screenshot": str(shot), **facts}
            problems += [f"{page}: {p}" for p in found]
    finally:
        server.shutdown()
    (out / "report.json").write_text(json.dumps(report, indent=1))
    for page, facts in report.items():
        print(f"{page}: " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    if problems:
        print("PROBLEMS:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print("dashboard OK: the grid, a graph, the list and the regressions pages render, no "
          "JavaScript errors (screenshots in "
          f"{out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
