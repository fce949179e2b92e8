"""``python -m fastxent dashboard --output DIR [--serve]``: the asv dashboard as a page that
works without network access.

``asv publish`` writes a page whose scripts (jQuery, Flot, Bootstrap) load from CDNs; offline
it shows asv's "continental origin of swallow" error. This publishes into DIR, then points
every CDN ``<script>``/``<link>`` at a local copy in ``DIR/vendor`` taken from the system's
JavaScript packages (Debian/Ubuntu: ``apt-get install libjs-jquery libjs-jquery-flot
libjs-bootstrap``), with small stand-ins for the optional ones (md5, stupidtable,
orderBars). A library with no local copy keeps its CDN address and is listed. ``--serve``
then serves DIR on 127.0.0.1 (the page loads its data with XHR, which ``file://`` forbids).
Needs asv results first (``asv run``: benchmarks/README.md).
"""

import functools
import http.server
import json
import os
import pathlib
import re
import shutil
import socketserver
import subprocess
import sys
import threading

# CDN file name -> local candidates (first found wins), in load order of asv's index.html.
_JS = "/usr/share/javascript"
LOCAL_LIBS = {
    "jquery-3.3.1.min.js": [f"{_JS}/jquery/jquery.min.js", f"{_JS}/jquery/jquery.js"],
    "jquery.flot.min.js": [f"{_JS}/jquery-flot/jquery.flot.min.js",
                           f"{_JS}/jquery-flot/jquery.flot.js"],
    "jquery.flot.time.min.js": [f"{_JS}/jquery-flot/jquery.flot.time.min.js",
                                f"{_JS}/jquery-flot/jquery.flot.time.js"],
    "jquery.flot.selection.min.js": [f"{_JS}/jquery-flot/jquery.flot.selection.min.js",
                                     f"{_JS}/jquery-flot/jquery.flot.selection.js"],
    "jquery.flot.categories.min.js": [f"{_JS}/jquery-flot/jquery.flot.categories.min.js",
                                      f"{_JS}/jquery-flot/jquery.flot.categories.js"],
    "bootstrap.min.js": [f"{_JS}/bootstrap/js/bootstrap.min.js",
                         f"{_JS}/bootstrap/js/bootstrap.js"],
    "bootstrap.min.css": [f"{_JS}/bootstrap/css/bootstrap.min.css",
                          f"{_JS}/bootstrap/css/bootstrap.css"],
}
# Optional libraries asv uses for table sorting, the regressions "ignore" key and bar
# charts: harmless stand-ins when no local copy exists.
SHIMS = {
    "md5.min.js": (
        "window.md5 = window.md5 || function (s) {  /* FNV-1a, not md5: ignore keys only */\n"
        "  var h = 0x811c9dc5; s = String(s);\n"
        "  for (var i = 0; i < s.length; i++) { h ^= s.charCodeAt(i);\n"
        "    h = (h + ((h << 1) + (h << 4) + (h << 7) + (h << 8) + (h << 24))) >>> 0; }\n"
        "  return ('00000000' + h.toString(16)).slice(-8);\n};\n"),
    # asv's list and regressions pages call $(th).stupidsort(): both must exist
    "stupidtable.min.js": (
        "(function ($) { $.fn.stupidtable = $.fn.stupidtable || function () { return this; };"
        "\n  $.fn.stupidsort = $.fn.stupidsort || function () { return this; };"
        "\n})(jQuery);\n"),
    "jquery.flot.orderBars.js": "/* orderBars: not needed for asv's line plots */\n",
}


FLOT4_CSS = """\
.legendLayer .background { fill: rgba(255, 255, 255, 0.85); stroke: rgba(0, 0, 0, 0.85);
                           stroke-width: 1; }
.legendLayer text { fill: #333; }
"""


def load_asv_conf(path):
    text = pathlib.Path(path).read_text()
    text = re.sub(r"^\s*//.*$", "", text, flags=re.M)  # asv allows // comment lines
    return json.loads(text)


def localize(html_dir):
    """Point index.html's CDN scripts/styles at local copies; return {name: source}."""
    html_dir = pathlib.Path(html_dir)
    index = html_dir / "index.html"
    text = index.read_text()
    vendor = html_dir / "vendor"
    vendor.mkdir(exist_ok=True)
    used = {}

    def replace(match):
        attr, url = match.group(1), match.group(2)
        name = url.rsplit("/", 1)[-1]
        target = vendor / name
        for candidate in LOCAL_LIBS.get(name, []):
            if os.path.exists(candidate):
                shutil.copyfile(candidate, target)
                used[name] = candidate
                break
        else:
            if name in SHIMS:
                target.write_text(SHIMS[name])
                used[name] = "shim"
            else:
                used[name] = url  # no local copy: keep the CDN
                return match.group(0)
        return f'{attr}="vendor/{name}"'

    # src="https://..." / href="https://..."; drop integrity/crossorigin (local files differ)
    text = re.sub(r'(src|href)="(https?://[^"]+\.(?:js|css))"', replace, text)
    text = re.sub(r'\s+integrity="[^"]*"', "", text)
    text = re.sub(r'\s+crossorigin="[^"]*"', "", text)
    if "jquery-flot/" in used.get("jquery.flot.min.js", ""):
        # Debian ships Flot 4, which draws axis labels itself (asv's own axislabels plugin
        # for Flot 0.8 would draw them twice) and styles its SVG legend with CSS.
        text = re.sub(r'<script[^>]*src="jquery\.flot\.axislabels\.js"[^>]*>\s*</script>',
                      "", text)
        (vendor / "flot4-compat.css").write_text(FLOT4_CSS)
        text = text.replace("</head>",
                            '    <link href="vendor/flot4-compat.css" rel="stylesheet" '
                            'type="text/css"/>\n  </head>', 1)
        used["flot4-compat.css"] = "written (Flot 4 legend style)"
    index.write_text(text)
    return used


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(directory, port=0):
    """Serve ``directory`` on 127.0.0.1 from a daemon thread (port 0: any free port)."""
    handler = functools.partial(_Quiet, directory=str(directory))
    server = socketserver.ThreadingTCPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server




def _port(text):
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(text)
    return value


def add_arguments(parser):
    parser.add_argument("--output", "-o", required=True, metavar="DIR",
                        help="directory to write the page into (created if its parent exists)")
    parser.add_argument("--config", default="asv.conf.json",
                        help="asv configuration (default: ./asv.conf.json, the repository's)")
    parser.add_argument("--serve", action="store_true",
                        help="then serve DIR on http://127.0.0.1:PORT until Ctrl-C")
    parser.add_argument("--port", type=_port, default=8080, help="port for --serve (0: any)")


def main(args):
    config = pathlib.Path(args.config).resolve()
    out = pathlib.Path(args.output).resolve()
    if not config.is_file():
        print(f"dashboard: no asv configuration at {config}; run from the repository root "
              f"or pass --config PATH", file=sys.stderr)
        return 2
    if not out.parent.is_dir():
        print(f"dashboard: --output {args.output}: its parent {out.parent} does not exist",
              file=sys.stderr)
        return 2
    results = config.parent / load_asv_conf(config).get("results_dir", "results")
    if not any(results.glob("*/*.json")):
        print(f"dashboard: no asv results in {results}; run the benchmarks first, e.g.\n"
              f"  asv run --python=same --quick --set-commit-hash=$(git rev-parse HEAD)",
              file=sys.stderr)
        return 1
    proc = subprocess.run([sys.executable, "-m", "asv", "publish", "--config", str(config),
                           "--html-dir", str(out)], cwd=config.parent, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-2000:], "dashboard: asv publish failed",
              sep="\n", file=sys.stderr)
        return 1
    used = localize(out)
    remote = sorted(name for name, source in used.items() if source.startswith("http"))
    print(f"dashboard written to {out}")
    for name, source in sorted(used.items()):
        print(f"  {name:32s} <- {source}")
    if remote:
        print(f"  still loaded from the network: {', '.join(remote)} (install the system "
              f"packages libjs-jquery libjs-jquery-flot libjs-bootstrap for local copies)")
    if not args.serve:
        print(f"open it with: python -m fastxent dashboard --output {args.output} --serve")
        return 0
    server = serve(out, args.port)
    print(f"serving on http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C to stop)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()
    return 0
