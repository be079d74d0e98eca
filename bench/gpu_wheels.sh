#!/usr/bin/env bash
# The wheels bench/gpu_check.sh needs on the device's image (Python 3.12, torch/transformers/peft/accelerate
# already there; see ../.library/device/KINDS.md), fetched here into .whl/ (ignored by git), under 64 MiB.
# bitsandbytes (~70 MB) does not fit beside them: the 4-bit test then skips, saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  "pydantic==2.12.5" "pydantic-core==2.41.5" "annotated-types==0.7.0" "typing-inspection==0.4.2"
du -sh .whl
