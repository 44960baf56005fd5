#!/usr/bin/env bash
# Creates .venv and installs the project with the pinned set (constraints.txt).
# Idempotent: a second run only checks. Usage: bash scripts/setup.sh [extras]
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test,dist}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# torch first, exactly pinned: any other version pulls a multi-GB CUDA build here.
.venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e ".[${extras}]"
