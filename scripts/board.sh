#!/usr/bin/env bash
# The README's launch command: set up, then serve the board on the embedded demo at http://127.0.0.1:7860
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec tuneboard "$@"
