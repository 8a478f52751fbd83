#!/usr/bin/env bash
# The GPU checks of `visionzoo train` / `eval` (fp16 + GradScaler, bf16 + channels_last, resume,
# 2-GPU DDP over NCCL, evaluation throughput, torch.compile): one PASS/FAIL/SKIP line each, in
# under 5 minutes on one H100. See scripts/gpu_check.py for what each check asserts.
#
#   scripts/gpu_check.sh                          # on a GPU machine
#   scripts/gpu_check.sh --device cpu --smoke     # the same steps, tiny, on a CPU (a dry run)
#   scripts/gpu_check.sh --out DIR --only fp16 --only resume
#
# Uses .venv/bin/python when present, else $PYTHON or python3 (torch, torchvision, safetensors,
# pyyaml, matplotlib); the package is imported from src/, so no install is needed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
py=${PYTHON:-}
if [ -z "$py" ]; then
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
# a hung NCCL job ends at the timeout instead of holding the machine
timeout --kill-after=20 480 "$py" scripts/gpu_check.py "$@"
status=$?
[ "$status" -eq 124 ] && echo "FAIL  timeout  gpu_check.py ran past 480 s"
exit "$status"
