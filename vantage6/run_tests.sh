#!/usr/bin/env bash
# Test the vantage6 algorithm in its own venv (vantage6-algorithm-tools pins SQLAlchemy 1.4,
# the main project needs 2.x). Runs four simulated centers through vantage6's in-process
# MockAlgorithmClient: no server, node or Docker. Usage: vantage6/run_tests.sh [pytest args]
# V6_VENV=DIR chooses the venv (default: ~/.cache/blina-study/venv-v6); PYTHON=python3.X
# the interpreter that creates it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
VENV="${V6_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/blina-study/venv-v6}"
PY="${PYTHON:-python3}"

stamp="$VENV/.requirements.sha256"
want="$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "vantage6/run_tests.sh: creating $VENV"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -r "$HERE/requirements.txt"
  echo "$want" > "$stamp"
fi
# The code under test, always fresh; --no-deps keeps the venv's pins (see requirements.txt).
"$VENV/bin/python" -m pip install --quiet --no-deps --force-reinstall "$REPO" "$HERE"

cd "$HERE"
exec "$VENV/bin/python" -m pytest -q "$@"
