#!/usr/bin/env bash
# Here (no GPU): fetch the wheels the lent GPU machine lacks into .whl/ (git-ignored, carried by the device tool).
# The device image (Python 3.12, torch 2.11+cu130) has torch, accelerate, peft's needs, pyarrow, xxhash, but no
# trl, datasets, bitsandbytes or orjson, and an older transformers. bitsandbytes' wheel holds a library for every
# CUDA and ROCm release (43 MB); only the CPU and CUDA 13 ones are kept, so the whole set is about 20 MB of the
# 64 MiB a call may carry. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
v() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .whl \
  "trl==$(v trl)" "transformers==$(v transformers)" "peft==$(v peft)" "datasets==$(v datasets)" \
  "bitsandbytes==$(v bitsandbytes)" "orjson==$(v orjson)" liger-kernel dill multiprocess
# slim bitsandbytes: drop the other CUDA / ROCm / XPU builds from the wheel and from its RECORD
bnb=$(ls .whl/bitsandbytes-*.whl)
tmp=$(mktemp -d)
(cd "$tmp" && python3 -m zipfile -e "$OLDPWD/$bnb" . \
  && find bitsandbytes -name 'libbitsandbytes_*.so' ! -name '*_cpu.so' ! -name '*_cuda13*.so' -delete \
  && rec=$(ls -d bitsandbytes-*.dist-info)/RECORD \
  && grep -v -E 'libbitsandbytes_(cuda1[0-2]|rocm|xpu)' "$rec" > "$rec.new" && mv "$rec.new" "$rec" \
  && rm "$OLDPWD/$bnb" && python3 -m zipfile -c "$OLDPWD/$bnb" bitsandbytes bitsandbytes-*.dist-info)
rm -rf "$tmp"
ls -la .whl && du -sh .whl
