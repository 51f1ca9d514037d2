#!/usr/bin/env sh
# Run the benchmark from anywhere: bench/run.sh [--quick] [--only bare,c16] [--rounds 3] ...
# Uses $PYTHON if set, else .venv/bin/python if present, else python3 (it needs aiohttp,
# httptools, orjson and uvloop, the project's own dependencies).
set -eu
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" -m bench "$@"
