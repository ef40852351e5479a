#!/usr/bin/env bash
# Creates .venv (once) and installs vatt with its test/eval extras, torch pinned by constraints.txt.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again (it only reinstalls vatt).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
stamp=".venv/.vatt-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[test,eval]"
  touch "$stamp"
fi
export PATH="$root/.venv/bin:$PATH"
