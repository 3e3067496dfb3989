#!/usr/bin/env bash
# Here (no GPU): rehearse `gpu_check.sh all` on the CPU in a venv made like the lent GPU machine's image
# (Python 3.12, torch 2.11, transformers 5.17, tokenizers 0.23, huggingface_hub 1.33, accelerate 1.15; see
# the device tool's KINDS.md), with the wheels of .whl/ on top, as there. It finds what the wheels lack and
# what the image's versions break before device time is spent. Downloads torch 2.11 (~530 MB) once.
#   bash bench/gpu_wheels.sh && bash bench/gpu_rehearse.sh        # ~10 min on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
SIM=${SIM:-/tmp/tb-gpu-image}
py=$(for c in $(command -v python3.12) /root/.pyenv/versions/3.12*/bin/python; do  # a pyenv shim may not run
  "$c" -c "" 2>/dev/null && { echo "$c"; break; }; done)
[ -n "$py" ] || { echo "no Python 3.12 here" >&2; exit 1; }
if [ ! -x "$SIM/bin/python3" ]; then
  "$py" -m venv "$SIM"
  "$SIM/bin/pip" install -q --no-deps "torch==2.11.0"  # the CUDA build; it runs on a CPU, without its CUDA libraries
  "$SIM/bin/pip" install -q "transformers==5.17.0" "tokenizers==0.23.2" "huggingface_hub==1.33.0" \
    "accelerate==1.15.0" "safetensors==0.8.0" numpy pandas pyarrow xxhash pyyaml jinja2 psutil sacrebleu fsspec \
    requests tqdm pytest sentencepiece typing_extensions sympy networkx filelock
fi
PATH="$SIM/bin:$PATH" REHEARSE=1 BUDGET=${BUDGET:-1500} STEPS=${STEPS:-8} OUT=${OUT:-/tmp/tb-rehearsal} \
  bash bench/gpu_check.sh all
