#!/usr/bin/env bash
# Create .venv with torch 2.13.0 first (on our machines and CI that pin resolves to the CPU build on local disk;
# a bare `torch` would pull a multi-GB CUDA build), then the project.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test]"
