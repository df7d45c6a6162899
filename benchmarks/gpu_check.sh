#!/usr/bin/env bash
# The speed grid on one GPU: recurrax's dynamic_rnn (fused path; on GPU it projects the inputs
# for all steps before the loop) against PyTorch nn.RNN/GRU/LSTM (cuDNN) and, for the LSTM,
# jax.experimental.rnn.lstm (JAX's cuDNN LSTM), forward and forward+backward (gradient of
# sum(outputs) w.r.t. the weights), float32, medians of 5 timed rounds after warm-up. First it
# checks on the GPU that the fused path equals the generic one in value and gradient.
#
#   bash benchmarks/gpu_check.sh            # from the repository root; ~3-5 minutes
#
# Needs jax with CUDA (jax[cuda12]) and a CUDA build of torch; prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python - <<'EOF'
import time

import jax
import jax.numpy as jnp
import numpy as np

import recurrax
from recurrax._bench import GRID, Case, round_robin

if jax.default_backend() != "gpu":
    raise SystemExit(f"JAX sees no GPU (backend {jax.default_backend()!r}): install jax[cuda12].")
import torch

if not torch.cuda.is_available():
    raise SystemExit("torch sees no GPU: install a CUDA build of torch.")
print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; torch {torch.__version__}, "
      f"cuDNN {torch.backends.cudnn.version()}")

# 1. The fused path equals the generic one on the GPU (float32 tolerances).
cell = recurrax.LSTMCell(16, 8, key=jax.random.key(0), use_peepholes=True, num_proj=12)
x, n = jax.random.normal(jax.random.key(1), (4, 9, 8)), jnp.array([9, 0, 4, 7])
def loss(c, fused):
    out, (cc, h) = recurrax.dynamic_rnn(c, x, n, fused=fused)
    return jnp.sum(jnp.sin(out)) + jnp.sum(cc * h[:, :1])
got, want = (jax.jit(jax.value_and_grad(loss), static_argnums=1)(cell, f) for f in (True, False))
err = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)))
print(f"fused vs generic on GPU, value and gradient: max |diff| = {err:.2e}")
assert err < 1e-4, err

# 2. The grid.
CLS = {"rnn": recurrax.BasicRNNCell, "gru": recurrax.GRUCell, "lstm": recurrax.BasicLSTMCell}
TORCH = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}

def sync(fn):
    def run():
        fn()
        torch.cuda.synchronize()
    return run

def builders(case):
    b, t, i, h = case.shape
    data = case.data()
    c = CLS[case.cell](h, i, key=jax.random.key(0))
    xj = jnp.asarray(data)
    fwd = jax.jit(lambda c, x: recurrax.dynamic_rnn(c, x)[0])
    grad = jax.jit(jax.grad(lambda c, x: jnp.sum(recurrax.dynamic_rnn(c, x)[0])))
    fns = {("recurrax", "fwd"): lambda: jax.block_until_ready(fwd(c, xj)),
           ("recurrax", "fwd+bwd"): lambda: jax.block_until_ready(grad(c, xj))}
    layer = TORCH[case.cell](i, h, batch_first=True).cuda()
    xt = torch.from_numpy(data).cuda()
    def t_fwd():
        with torch.no_grad():
            layer(xt)
    def t_fb():
        layer.zero_grad(set_to_none=True)
        layer(xt)[0].sum().backward()
    fns[("torch_cudnn", "fwd")], fns[("torch_cudnn", "fwd+bwd")] = sync(t_fwd), sync(t_fb)
    if case.cell == "lstm":
        from jax.experimental import rnn
        w = rnn.init_lstm_weight(jax.random.key(0), i, h, 1, False)
        z, lengths = jnp.zeros((1, b, h)), jnp.full((b,), t, jnp.int32)
        def lstm(w, x):
            return rnn.lstm(x, z, z, w, lengths, i, h, 1, 0.0, False)[0]
        jf = jax.jit(lstm)
        jg = jax.jit(jax.grad(lambda w, x: jnp.sum(lstm(w, x))))
        fns[("jax_cudnn", "fwd")] = lambda: jax.block_until_ready(jf(w, xj))
        fns[("jax_cudnn", "fwd+bwd")] = lambda: jax.block_until_ready(jg(w, xj))
    return fns

print("\n| cell | (B, T, I, H) | mode | PyTorch cuDNN ms | recurrax ms | recurrax / PyTorch |"
      " JAX cuDNN LSTM / PyTorch |\n|---|---|---|---|---|---|---|")
for shape in GRID:
    for cell_name in ("rnn", "gru", "lstm"):
        case = Case(cell_name, *shape)
        times = round_robin(builders(case), repeats=5, warmup=2)
        med = {k: float(np.median(v)) for k, v in times.items()}
        for mode in ("fwd", "fwd+bwd"):
            ref, mine = med[("torch_cudnn", mode)], med[("recurrax", mode)]
            cud = med.get(("jax_cudnn", mode))
            print(f"| {cell_name} | {shape} | {mode} | {ref * 1e3:.2f} | {mine * 1e3:.2f} | "
                  f"{mine / ref:.2f} | {'-' if cud is None else f'{cud / ref:.2f}'} |", flush=True)
print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
EOF
