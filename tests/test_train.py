"""recurrax train: exact resume, data parallel = one device, the models learn, the command runs."""

import json
import os
import re
import shutil
import subprocess
import sys

import equinox as eqx
import jax
import numpy as np
import pytest

import recurrax
from recurrax.apps.cli import main
from recurrax.apps.train import TrainConfig, train
from recurrax.io.checkpoint import checkpoint_path

# 1437 training digits in batches of 64: 22 steps an epoch, 44 in all; dropout uses the PRNG.
TINY = TrainConfig(num_units=16, batch_size=64, epochs=2, keep_prob=0.8)


def _bits(tree):
    return [
        np.asarray(x).tobytes() for x in jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_array))
    ]


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run of TINY stopped after 7 steps (mid-epoch), with its checkpoint."""
    directory = tmp_path_factory.mktemp("interrupted")
    result = train(TINY, save_dir=directory, stop_after=7)
    return directory, result


def test_resume_is_bit_identical(interrupted, tmp_path):
    directory, first = interrupted
    assert first.step == 7
    shutil.copytree(directory, tmp_path / "run")
    resumed = train(TINY, save_dir=tmp_path / "run", resume=True)
    straight = train(TINY)
    assert resumed.step == straight.step == 44
    assert _bits(resumed.model) == _bits(straight.model)
    assert _bits(resumed.opt_state) == _bits(straight.opt_state)
    assert _bits(first.model) != _bits(straight.model)
    assert resumed.history == straight.history  # per-step losses, before and after the stop
    assert len(straight.history["loss"]) == 44 and len(straight.history["test_metric"]) == 2
    assert straight.test_metric > 0.3  # it learns: chance is 0.1 (it reaches 0.47 here)
    ckpt = recurrax.load_checkpoint(
        tmp_path / "run", model=straight.model, opt_state=straight.opt_state
    )
    assert ckpt.step == 44 and _bits(ckpt.model) == _bits(straight.model)


def test_resume_refuses_other_settings_or_a_damaged_checkpoint(interrupted, tmp_path):
    directory, _ = interrupted
    run = tmp_path / "run"
    shutil.copytree(directory, run)
    before = checkpoint_path(run).read_bytes()
    other = TrainConfig(num_units=16, batch_size=64, epochs=2, keep_prob=0.9)
    with pytest.raises(ValueError, match="keep_prob: checkpoint has 0.8, this run has 0.9"):
        train(other, save_dir=run, resume=True)
    checkpoint_path(run).write_bytes(before[:-100])
    with pytest.raises(ValueError, match="is truncated"):
        train(TINY, save_dir=run, resume=True)
    assert checkpoint_path(run).read_bytes() == before[:-100]  # nothing overwritten
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        train(TINY, save_dir=tmp_path / "empty", resume=True)
    with pytest.raises(ValueError, match="resume=True needs save_dir"):
        train(TINY, resume=True)


_DATA_PARALLEL = """
import json, os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import jax, numpy as np
from recurrax.apps.train import TrainConfig, train

devices = jax.devices()
assert len(devices) == 4, devices
cfg = TrainConfig(task="sine", num_units=8, batch_size=64, keep_prob=0.8)
one = train(cfg, devices=devices[:1], stop_after=6)
four = train(cfg, stop_after=6)
after_one_step = train(cfg, devices=devices[:1], stop_after=1)  # compiled already


def leaves(result):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(result.model)]


def max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(leaves(a), leaves(b)))


out = {
    "loss_one": one.history["loss"],
    "loss_four": four.history["loss"],
    "max_param_diff": max_diff(one, four),
    "max_param_change": max_diff(one, after_one_step),
    "devices": [
        len(one.model.readout_kernel.sharding.device_set),
        len(four.model.readout_kernel.sharding.device_set),
    ],
}
try:
    train(TrainConfig(batch_size=30))
except ValueError as e:
    out["error"] = str(e)
print("RESULT " + json.dumps(out))
"""


def test_data_parallel_matches_one_device():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"  # the four devices are forced host devices, even beside a GPU
    proc = subprocess.run(
        [sys.executable, "-c", _DATA_PARALLEL], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert out["devices"] == [1, 4]
    assert len(out["loss_one"]) == 6
    np.testing.assert_allclose(out["loss_four"], out["loss_one"], rtol=1e-5)
    assert out["max_param_diff"] < 1e-5  # float32 summation order only
    assert out["max_param_change"] > 1e-3  # the weights moved: agreement is not vacuous
    assert "batch_size=30 must be divisible by the 4 devices" in out["error"]


@pytest.mark.slow
def test_static_and_dynamic_modes_train_alike():
    runs = {
        mode: train(
            TrainConfig(cell="gru", mode=mode, num_units=8, batch_size=64),
            stop_after=4,
            progress="rich" if mode == "static" else "none",
        )
        for mode in ("static", "dynamic")
    }
    np.testing.assert_allclose(
        runs["static"].history["loss"], runs["dynamic"].history["loss"], rtol=1e-5
    )
    for a, b in zip(
        jax.tree_util.tree_leaves(runs["static"].model),
        jax.tree_util.tree_leaves(runs["dynamic"].model),
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_cli_sine_stops_resumes_beats_the_baseline_and_plots(tmp_path, capsys):
    plot, ck = tmp_path / "curves.png", str(tmp_path / "ck")
    argv = ["train", "--task", "sine", "--epochs", "1", "--num-units", "32", "--save", ck]
    assert main([*argv, "--progress", "none", "--stop-after", "40"]) == 0
    out = capsys.readouterr().out
    assert f"stopped early at step 40 of 64: continue with --save {ck} --resume" in out
    assert "test mse" not in out
    assert main([*argv, "--progress", "plain", "--resume", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"epoch   1/1  step    64  loss \d\.\d{4}  train mse", out)
    found = re.search(r"test mse: (\S+) \(last-value baseline: (\S+)\)", out)
    mse, baseline = map(float, found.groups())
    assert mse < 0.5 * baseline
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_reports_errors(tmp_path, capsys):
    """Each a line on stderr and exit status 2, before a step is taken or a file written."""
    assert main(["train", "--resume"]) == 2
    assert capsys.readouterr().err == (
        "recurrax train: error: resume=True needs save_dir: the directory holding the checkpoint.\n"
    )
    assert main(["train", "--save", str(tmp_path), "--resume"]) == 2
    assert "recurrax train: error: no checkpoint at" in capsys.readouterr().err
    assert main(["train", "--keep-prob", "1.5"]) == 2
    assert "keep_prob must be in (0, 1]; got 1.5" in capsys.readouterr().err
    assert main(["train", "--cell", "basic_rnn"]) == 2
    assert "argument --cell: invalid choice: 'basic_rnn'" in capsys.readouterr().err
    assert main(["train", "--stop-after", "0"]) == 2
    assert "--stop-after must be a positive integer; got '0'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_a_checkpoint_of_other_settings(interrupted, tmp_path, capsys):
    directory, _ = interrupted
    shutil.copytree(directory, tmp_path / "run")
    argv = ["train", "--num-units", "16", "--batch-size", "64", "--epochs", "2"]
    assert main([*argv, "--keep-prob", "0.9", "--save", str(tmp_path / "run"), "--resume"]) == 2
    captured = capsys.readouterr()
    assert "keep_prob: checkpoint has 0.8, this run has 0.9" in captured.err
    assert len(captured.err.splitlines()) == 1 and captured.out == ""


def test_config_is_validated():
    with pytest.raises(ValueError, match=r"cell must be one of \['gru', 'lstm', 'rnn'\]"):
        TrainConfig(cell="basic_rnn")
    with pytest.raises(ValueError, match="num_units must be a positive int; got 0"):
        TrainConfig(num_units=0)
    assert TrainConfig(task="sine").epochs == 20
    assert TrainConfig(cell="rnn").cell == "rnn"
