#!/usr/bin/env bash
# Build lm-gateway as one file: dist/lm-gateway.pyz, a zipapp made by shiv that carries lm-gateway
# and its dependencies (httptools, orjson, uvloop, prometheus-client).
#
#   scripts/build-pyz.sh [OUTPUT]           # default dist/lm-gateway.pyz
#   PYTHON=python3.12 scripts/build-pyz.sh  # build for another Python
#   python3.11 dist/lm-gateway.pyz --config config.toml   # or ./dist/lm-gateway.pyz
#
# Why shiv and not the standard zipapp module: three of the dependencies are C extensions, which
# Python cannot import from inside a zip; shiv unpacks the dependencies once, on first run, into
# ~/.shiv (or $SHIV_ROOT), and runs from there after that.
#
# The .pyz carries binary wheels, so it runs on the Python version (its shebang names it, e.g.
# python3.11) and platform (e.g. Linux x86_64, glibc) it was built with; build it again with that
# other Python, on that other platform, to target them. Needs only PyPI (pip, shiv, the wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUTPUT=${1:-dist/lm-gateway.pyz}
SHIV_VERSION=1.0.8

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check "shiv==$SHIV_VERSION"
version=$("$work/venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# The project is built from a copy of this checkout's files (a build in place would leave build/
# behind, and could pick up stale files from an earlier one).
mkdir -p "$work/project"
cp -R pyproject.toml README.md src "$work/project/"
rm -rf "$work/project/src/"*.egg-info
mkdir -p "$(dirname "$OUTPUT")"
# --reproducible: the same inputs give the same file.
"$work/venv/bin/shiv" --quiet --reproducible --compressed \
    --python "/usr/bin/env python$version" \
    --console-script lm-gateway \
    --output-file "$OUTPUT" \
    "$work/project[redis]"
echo "built $OUTPUT for Python $version ($(uname -s) $(uname -m)): $(du -h "$OUTPUT" | cut -f1)"
