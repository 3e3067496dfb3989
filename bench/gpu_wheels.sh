#!/usr/bin/env bash
# Here (no GPU): fetch the wheels the lent GPU machine lacks into .whl/ (git-ignored, carried by the device tool).
# The device image has torch, accelerate, peft's needs, pyarrow, xxhash, but no trl, datasets or bitsandbytes,
# and an older transformers. About 59 MB, under the 64 MiB a call may carry. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
v() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .whl \
  "trl==$(v trl)" "transformers==$(v transformers)" "peft==$(v peft)" "datasets==$(v datasets)" \
  "bitsandbytes==$(v bitsandbytes)" liger-kernel dill multiprocess
du -sh .whl
