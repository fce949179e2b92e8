#!/usr/bin/env bash
# asv smoke run against the installed package (pip install -e . --no-build-isolation), then
# publish and check the dashboard in headless Chromium. Runs every benchmark class once on
# the small cells (about 2-4 minutes on 2 cores); the full grid is `asv run --python=same`.
set -euo pipefail
cd "$(dirname "$0")/.."

asv machine --yes >/dev/null
asv check --python=same
# Parameter-filtered: asv matches -b against "name(param, ...)" for parameterised benchmarks.
asv run --python=same --quick --show-stderr \
    --set-commit-hash="$(git rev-parse HEAD)" \
    -b "'256x10'" -b "Memory.*'4096x1000', 'integer'"
python benchmarks/check_dashboard.py
