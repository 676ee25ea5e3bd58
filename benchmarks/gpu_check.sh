#!/usr/bin/env bash
# The GPU path, on a machine with a CUDA GPU, in under 5 minutes:
#   1. a venv with this project and its test extras (torch as installed on the machine when it
#      sees CUDA; else the pip default, a CUDA build);
#   2. the engine tests with OPTARENA_TEST_DEVICE=cuda: batched equals sequential on the GPU to
#      the same tolerance as on the CPU (tests/test_engine.py), and CUDA runs match CPU runs;
#   3. the sweep benchmark on the GPU: the engine against the sequential torch loop on the same GPU.
# Usage: bash benchmarks/gpu_check.sh   (from the repository root; writes gpu_check.log)
set -euo pipefail
cd "$(dirname "$0")/.."
LOG=gpu_check.log
exec > >(tee "$LOG") 2>&1
PY=${PYTHON:-python3}
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  test -d .venv-gpu || $PY -m venv .venv-gpu
  PY=.venv-gpu/bin/python
  $PY -m pip install -q --upgrade pip
  $PY -m pip install -q torch
fi
$PY -m pip install -q -e ".[test]"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
echo "== engine tests on cuda"
OPTARENA_TEST_DEVICE=cuda timeout 180 $PY -m pytest -q -p no:cacheprovider tests/test_engine.py
echo "== sweep benchmark on cuda (engine vs the sequential loop, same GPU)"
timeout 120 $PY benchmarks/sweep_throughput.py --device cuda --loop-sample 40
