#!/usr/bin/env bash
# The README's test command: set up, make sure Chromium is there for the browser tests, run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
fi
. .venv/bin/activate
ruff check engine board tests bench scripts
set +e
python -m pytest -q "$@"
rc=$?
set -e
[ "$rc" = 5 ] && { echo "error: no tests ran" >&2; exit 1; }
exit "$rc"
