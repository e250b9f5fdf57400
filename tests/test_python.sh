#!/bin/sh
# Runs the Python package's tests (python/tests) when pytest is available;
# tests that need torch or a GPU skip themselves.  Prints the usual closing
# line "N passed, N failed".
set -u
BUILD=${KILN_BUILD:-build}
PY=${PYTHON:-python3}
if ! "$PY" -c 'import pytest, torch' 2>/dev/null; then
    echo "skipped: pytest or torch is not installed for $PY (pip install pytest torch to run python/tests)"
    exit 0
fi
export KILN_LIB="$(cd "$BUILD" && pwd)/libkiln.so"
cd python && exec "$PY" -m pytest tests -q -rs -p no:cacheprovider
