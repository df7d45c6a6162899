"""``benchmarks/gpu_pallas.py``, the GPU benchmark of the Pallas kernel, in its CPU dry run.

The script runs in subprocesses pinned to the CPU (``--dry-run``: Pallas's interpreter, tiny
shapes, one timed call per case); the tests read its JSON. Its helpers that carry numbers (the
``lstmp`` reference and cell, the least-squares fit) are checked in process against recurrax's
own ``LSTMCell`` and exact lines. The dry runs take 35-60 s on two busy cores (the interpreter's
compiles): the tests that read them are marked slow.
"""

import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax

# One process runs this file's tests: the dry runs of the module fixture are started once.
pytestmark = pytest.mark.xdist_group("gpu_pallas_script")

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_pallas.py"
SHAPE = [4, 6, 3, 5]
BREAKDOWN = [4, 8, 3, 5]


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_pallas_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dry_run(out: pathlib.Path, *args: str) -> list:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "gpu_pallas.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One dry run: ``lstmp`` through the check, the grid and the breakdown (the check and the
    timings of the other families are the older part of the script)."""
    shape = ",".join(map(str, SHAPE))
    lstmp = _dry_run(
        tmp_path_factory.mktemp("lstmp"),
        "--families=lstmp",
        "--methods=cudnn,packed,pallas,fused,jaxrnn",
        f"--shapes={shape}",
        f"--breakdown={','.join(map(str, BREAKDOWN))}",
    )
    return {"lstmp": lstmp}


def _of(records, **match):
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]


def _finite_positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_check_covers_lstmp_exactly(runs):
    (rec,) = _of(runs["lstmp"], kind="check")
    assert rec["family"] == "lstmp" and "error" not in rec, rec
    errors = rec["rel_error"]
    assert set(errors) == {"outputs", "final_state", "grad_weights", "grad_inputs"}
    assert all(0.0 <= e < 1e-5 for e in errors.values()), errors


@pytest.mark.slow
def test_jax_timings_recorded(runs):
    for method in ("pallas", "fused"):
        (rec,) = _of(runs["lstmp"], kind="time", method=method)
        assert "error" not in rec, rec
        for mode in ("fwd", "fwd_bwd"):
            assert _finite_positive(rec["result"][mode]["ms"]), rec
    (pallas,) = _of(runs["lstmp"], kind="time", method="pallas")
    # H = 5, P = 2: both padded to the kernel's smallest width.
    assert pallas["plan"]["padded_hidden"] == 16


@pytest.mark.slow
def test_torch_timings_recorded(runs):
    pytest.importorskip("torch")
    for method in ("cudnn", "packed"):
        (rec,) = _of(runs["lstmp"], kind="time", method=method)
        assert "error" not in rec, rec
        for mode in ("fwd", "fwd_bwd"):
            assert _finite_positive(rec["result"][mode]["ms"]), rec


@pytest.mark.slow
def test_jaxrnn_unsupported_on_cpu(runs):
    """For ``lstm`` on a CPU the script's ``jaxrnn`` raises its ``Unsupported`` (which the run
    records as such, as the ``lstmp`` record shows), naming cuDNN and the backend."""
    if jax.default_backend() == "cpu":  # in this process; the dry run is pinned to the CPU
        script = _load_script()
        with pytest.raises(script.Unsupported, match=r"cuDNN only; the JAX backend is 'cpu'"):
            script.time_jaxrnn("lstm", tuple(SHAPE), None)
    (lstmp,) = _of(runs["lstmp"], kind="time", method="jaxrnn")
    assert "result" not in lstmp and "error" not in lstmp, lstmp
    assert "no lstmp family" in lstmp["unsupported"]


def _breakdown(runs, method):
    (rec,) = _of(runs["lstmp"], kind="breakdown", method=method)
    assert rec["family"] == "lstmp" and rec["shape"] == BREAKDOWN and "error" not in rec, rec
    return rec


def _check_fit(rec):
    points = rec["points"]
    assert [p["steps"] for p in points] == [2, 4, 8]
    assert all(_finite_positive(p[k]) for p in points for k in ("fwd_ms", "fwd_bwd_ms"))
    for part in ("fwd", "bwd", "fwd_bwd"):
        assert all(math.isfinite(v) for v in rec["fit"][part].values()), rec["fit"]


@pytest.mark.slow
def test_breakdown_pallas(runs):
    parts = _breakdown(runs, "xla_parts")
    assert parts["steps"] == BREAKDOWN[1]
    assert all(_finite_positive(parts["result"][k]["ms"]) for k in ("project", "wgrad"))
    rec = _breakdown(runs, "pallas")
    _check_fit(rec)
    # The kernels' estimate is the fit minus the XLA parts' time per step.
    steps = BREAKDOWN[1]
    fwd = rec["fit"]["fwd"]["per_step_us"] - parts["result"]["project"]["ms"] * 1e3 / steps
    bwd = rec["fit"]["bwd"]["per_step_us"] - parts["result"]["wgrad"]["ms"] * 1e3 / steps
    assert rec["kernel_us_per_step"] == pytest.approx({"fwd": fwd, "bwd": bwd}, rel=1e-12)


@pytest.mark.slow
def test_breakdown_cudnn(runs):
    pytest.importorskip("torch")
    _check_fit(_breakdown(runs, "cudnn"))


def test_fit_recovers_a_line():
    gp = _load_script()
    points = [
        {"steps": n, "fwd_ms": 0.5 + 0.002 * n, "fwd_bwd_ms": 1.25 + 0.007 * n}
        for n in gp.breakdown_steps(400)
    ]
    assert [p["steps"] for p in points] == [100, 200, 400]
    fits = gp.breakdown_fits(points)
    assert fits["fwd"] == pytest.approx({"per_step_us": 2.0, "fixed_ms": 0.5}, rel=1e-9)
    assert fits["bwd"] == pytest.approx({"per_step_us": 5.0, "fixed_ms": 0.75}, rel=1e-9)
    assert fits["fwd_bwd"] == pytest.approx({"per_step_us": 7.0, "fixed_ms": 1.25}, rel=1e-9)
    # Three noisy points: the least-squares line, not the line through two of them.
    fit = gp.fit_line([1, 2, 4], [1.0, 3.0, 4.0])  # slope 39/42 by the normal equations
    assert fit == pytest.approx({"per_step_us": 13.0 / 14.0 * 1e3, "fixed_ms": 0.5}, rel=1e-9)


def test_lstmp_reference_and_cell_match_recurrax():
    """The script's ``lstmp`` weights in recurrax's ``LSTMCell`` (generic loop) give the same
    outputs and final state as its ``lax.scan`` reference, with TF1's lengths."""
    gp = _load_script()
    batch, steps, n_in, hidden = 3, 5, 4, 6
    params = gp.make_params("lstmp", n_in, hidden, seed=0)
    assert params[2][0].shape == (3, 24) and params[2][1] is None
    assert params[2][2].shape == (6, 3)
    x = jax.random.normal(jax.random.key(0), (steps, batch, n_in), jnp.float32)
    lens = jnp.array([5, 0, 3], jnp.int32)
    with jax.default_matmul_precision("highest"):
        ys, (c, h) = gp.scan_model("lstmp")(params, x, lens)
        cell = gp.make_cell("lstmp", n_in, hidden, params)
        want, state = recurrax.dynamic_rnn(
            cell, x, lens, time_major=True, dtype=jnp.float32, implementation="generic"
        )
    assert ys.shape == (steps, batch, 3)
    np.testing.assert_allclose(ys, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, state.c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, state.h, rtol=1e-5, atol=1e-6)
    assert float(jnp.max(jnp.abs(ys[:, 1]))) == 0.0 and float(jnp.max(jnp.abs(want))) > 0.05


@pytest.mark.parametrize(
    "args, message",
    [
        (["--breakdown", "4,3,3,5"], "expected T >= 4"),
        (["--breakdown", "4,8,3"], "expected B,T,I,H"),
        (["--families", "lstm,lstmq"], "expected a comma-separated list of rnn, gru, lstm, lstmp"),
        (["--methods", "pallas,cudnn_v9"], "got 'pallas,cudnn_v9'"),
    ],
)
def test_bad_arguments_are_refused(args, message, capsys):
    gp = _load_script()
    with pytest.raises(SystemExit) as info:
        gp.main(["--dry-run", *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert args[0] in err and message in err, err
