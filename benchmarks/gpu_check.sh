#!/usr/bin/env bash
# The speed grid on one GPU: recurrax's dynamic_rnn (fused and generic paths) against PyTorch's
# cuDNN nn.RNN/GRU/LSTM and, for the LSTM, jax.experimental.rnn.lstm (JAX's cuDNN LSTM);
# forward and forward+backward, float32. It first checks that the fused path equals the generic
# one on the GPU. Details: benchmarks/gpu_check.py.
#
#   bash benchmarks/gpu_check.sh [--out FILE.md]     # from the repository root; 81 s on an H200
#   python benchmarks/gpu_check.py --smoke           # dry run of the same code on CPU
#
# Needs jax with CUDA (jax[cuda12] or jax[cuda13]) and a CUDA build of torch.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
exec python3 benchmarks/gpu_check.py "$@"
