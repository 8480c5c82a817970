#!/usr/bin/env bash
# Build the HTML documentation with every warning an error.
#   bash docs/build.sh              # uses python3 (needs: pip install -e '.[docs]')
#   PYTHON=.venv/bin/python bash docs/build.sh
# Output: docs/_build/html/index.html. A new page (docs/NAME.md) must be listed in a toctree of
# docs/index.md: the build fails on a page that is in none.
set -euo pipefail
PY="${PYTHON:-python3}"
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac
cd "$(dirname "$0")"
rm -rf _build/html _build/doctrees
"$PY" -m sphinx -W --keep-going -q -b html -d _build/doctrees . _build/html
echo "docs built: $(pwd)/_build/html/index.html"
