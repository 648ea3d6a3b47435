#!/usr/bin/env bash
# A non-editable install works: build chromaflow's wheel, install it into a fresh venv and
# run the demo from outside the source tree. The fresh venv borrows the dependencies of
# .venv through a .pth line (so torch's 5 GB are not installed twice); chromaflow itself
# comes only from the wheel (a .pth line adds a folder to sys.path without running the
# editable finder that lives there).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/chromaflow-install-check.XXXXXX)
trap 'rm -rf "$work"' EXIT
.venv/bin/python -m pip wheel --quiet --no-deps --no-build-isolation . -w "$work/wheel"
python3.11 -m venv "$work/venv"
site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$site/chromaflow-deps.pth"
"$work/venv/bin/python" -m pip install --quiet --no-deps "$work"/wheel/chromaflow-*.whl
cd "$work"
where=$("$work/venv/bin/python" -c 'import chromaflow.conf, chromaflow.stages; print(chromaflow.conf.__file__)')
case "$where" in "$work"/venv/*) ;; *) echo "chromaflow imported from $where, not from the wheel"; exit 1;; esac
HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 "$work/venv/bin/chromaflow" demo --out "$work/demo" --pages 4
test -f "$work/demo/job/report.html" && test -f "$work/demo/job/chapter.cbz"
echo "install check: wheel installed into a fresh venv, demo ran from $work"
