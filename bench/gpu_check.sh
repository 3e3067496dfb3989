#!/usr/bin/env bash
# There (the lent GPU machine, via the device tool with carry [".whl"]): the GPU tests, then the bench.
#   bash bench/gpu_check.sh tests            # pytest -m gpu (estimate vs measured peaks, QLoRA, varlen, GPU memory release) ~3 min
#   bash bench/gpu_check.sh bench SHAPE R    # e.g. `bench qwen2.5-0.5b a,b,c,d` or `bench llama-2-7b c`
# Results land in $OUT (bench/results.jsonl lines, logs) so they come back to the session.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, trl, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__)"
# without CUDA every gpu test would skip and pytest would exit 0: say so instead
python3 -c "import sys, torch; sys.exit(not torch.cuda.is_available())" || { echo "no CUDA device visible" >&2; exit 1; }
case "${1:-tests}" in
  tests)
    python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_packing.py tests/test_train.py tests/test_estimate.py tests/test_generate.py \
      2>&1 | tee "$OUT/pytest-gpu.log" ;;
  bench)
    python3 bench/bench_train.py --shape "${2:-qwen2.5-0.5b}" --recipes "${3:-a,b,c,d}" --steps "${STEPS:-20}" \
      --machine "lent $(head -1 "$OUT/gpu.txt" | cut -d, -f1)" --out "$OUT/results.jsonl" 2>&1 | tee "$OUT/bench.log" ;;
  *) echo "usage: gpu_check.sh tests | bench SHAPE RECIPES" >&2; exit 2 ;;
esac
