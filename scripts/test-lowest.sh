#!/usr/bin/env bash
# Test the lower bounds of pyproject.toml's ranges: a fresh virtual environment with every
# runtime dependency at the lowest version its range allows (constraints-lowest.txt), then the
# test suite in it (arguments go to pytest, e.g. -m unit). CI tests the newest versions
# (constraints.txt); run this after changing a lower bound.
#
#   bash scripts/test-lowest.sh [PYTEST ARGS]      # VENV=DIR picks the environment's place
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-${TMPDIR:-/tmp}/reppo-lowest}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
# torch first, for the same reason as in the README's commands (the CPU build where one is found).
"$VENV/bin/pip" install -c constraints-lowest.txt torch==2.13.0
"$VENV/bin/pip" install -c constraints-lowest.txt -e ".[dev]"
"$VENV/bin/python" - <<'PY'
from importlib.metadata import version
from pathlib import Path

pins = [line.split("==") for line in Path("constraints-lowest.txt").read_text().splitlines()
        if line and not line.startswith("#")]
wrong = [f"{name} {version(name)} (wanted {want})" for name, want in pins
         if version(name).split("+")[0] != want]
if wrong:
    raise SystemExit("not installed at the lowest versions: " + ", ".join(wrong))
print(f"installed at the lowest versions: {len(pins)} packages")
PY
REPPO_LOWEST_VERSIONS=1 exec "$VENV/bin/python" -m pytest -n 2 "$@"
