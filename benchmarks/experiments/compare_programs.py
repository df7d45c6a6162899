"""Fingerprints of ``dynamic_rnn``'s compiled gradient programs, to compare two versions.

For each cell (rnn, gru, lstm; 64 units, 32 inputs, batch 16, T = 200) x path and strategy
(the default, the generic loop, ``memory="recompute"``, ``CheckpointEvery(16)``) x lengths (none,
traced), prints the optimised HLO's instruction count and a hash of its instructions (source
locations stripped). Run it under each version and compare the lines::

    PYTHONPATH=/path/to/other/checkout/src python benchmarks/experiments/compare_programs.py
    python benchmarks/experiments/compare_programs.py

The same hash means the same compiled program: the same speed and memory by construction.
Versions before ``implementation=`` existed take ``fused=False`` for the generic loop.
"""

import hashlib
import re

import jax
import jax.numpy as jnp
import numpy as np

import recurrax

NEW = hasattr(recurrax, "cells")


def generic():
    return {"implementation": "generic"} if NEW else {"fused": False}


x = jnp.asarray(np.random.default_rng(0).standard_normal((16, 200, 32)), jnp.float32)
lengths = jnp.asarray(np.random.default_rng(1).integers(1, 200, 16), jnp.int32)
cases = []
for name, cls in (
    ("rnn", recurrax.BasicRNNCell),
    ("gru", recurrax.GRUCell),
    ("lstm", recurrax.BasicLSTMCell),
):
    cell = cls(64, 32, key=jax.random.key(0))
    for label, kw in (
        ("auto", {}),
        ("generic", generic()),
        ("recompute", {"memory": "recompute"}),
        ("every", {"memory": recurrax.CheckpointEvery(16)}),
    ):
        for lens in ("none", "traced"):

            def loss(c, x, n, kw=kw, lens=lens):
                out, st = recurrax.dynamic_rnn(c, x, None if lens == "none" else n, **kw)
                return jnp.sum(out**2) + sum(jnp.sum(s) for s in jax.tree.leaves(st))

            cases.append((f"{name}/{label}/{lens}", jax.value_and_grad(loss), (cell, x, lengths)))
for key, f, args in cases:
    txt = jax.jit(f).lower(*args).compile().as_text()
    txt = re.sub(r", metadata=\{[^}]*\}", "", txt)
    lines = [
        re.sub(r",? ?stack_frame_id=\d+", "", line) for line in txt.splitlines() if " = " in line
    ]
    txt = "\n".join(lines)
    ops = len(lines)
    print(key, ops, hashlib.sha1(txt.encode()).hexdigest()[:12])
