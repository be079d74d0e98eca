#!/usr/bin/env bash
# The GPU checks in one script, for a session lent a CUDA machine (the device tool), under 8 minutes:
# the GPU-marked tests (tests/gpu: bf16/fp16, SDPA/flash attention, LoRA on a 4-bit base, two-GPU
# negatives), then bench/gpu_throughput.py on BERT-base and BERT-large sized models at batch 128,
# max length 128, bf16 (pairs/s, peak GPU memory, model FLOP/s against a bf16 matmul timed in the run).
#   here, once:   bash bench/gpu_wheels.sh                  # the Python packages the GPU image lacks, into .whl/
#   device run:   bash bench/gpu_check.sh    (carry: [".whl"]; results under $OUT)
# On any other CUDA machine with the project installed, `bash bench/gpu_check.sh` runs the same.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  PYTHONUNBUFFERED=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
timeout 200 python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/gpu -rs 2>&1 | tee "$OUT/tests.log"
timeout 240 python3 bench/gpu_throughput.py --sizes base,large --batch 128 --maxlen 128 --steps 40 --warmup 10 \
  2>&1 | tee "$OUT/throughput.log"
grep -A4 "^| model" "$OUT/throughput.log" > "$OUT/throughput.md" || true
