"""recurrax train: exact resume, data parallel = one device, the models learn, the command runs."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import equinox as eqx
import jax
import numpy as np
import pytest

import recurrax
import recurrax.apps.options as options
import recurrax.apps.prepare as preparer
import recurrax.apps.train as trainer
from recurrax.apps.cli import main
from recurrax.apps.launch import child_environment
from recurrax.apps.train import NonFiniteLoss, TrainConfig, TrainingInterrupted, train
from recurrax.io.checkpoint import checkpoint_path, checkpoint_steps

# One process runs this file's tests: they share the module's trained runs and compiled steps.
pytestmark = pytest.mark.xdist_group("train")

# 1438 training digits in batches of 64: 22 steps an epoch, 44 in all; dropout uses the PRNG.
TINY = TrainConfig(num_units=16, batch_size=64, epochs=2, keep_prob=0.8)
TINY_ARGV = ["train", "--num-units", "16", "--batch-size", "64", "--epochs", "2"]
TINY_ARGV += ["--keep-prob", "0.8", "--progress", "none"]


def _bits(tree):
    return [
        np.asarray(x).tobytes() for x in jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_array))
    ]


def _files(directory):
    """Every file under ``directory`` with its bytes: what "nothing was written" compares."""
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def straight():
    """TINY trained to its end without a stop."""
    return train(TINY)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run of TINY stopped after 7 steps (mid-epoch), with its checkpoint."""
    directory = tmp_path_factory.mktemp("interrupted")
    result = train(TINY, save_dir=directory, stop_after=7)
    return directory, result


def test_resume_is_bit_identical(interrupted, straight, tmp_path):
    directory, first = interrupted
    assert first.step == 7
    shutil.copytree(directory, tmp_path / "run")
    resumed = train(TINY, save_dir=tmp_path / "run", resume=True, keep=2)
    assert resumed.step == straight.step == 44
    assert checkpoint_steps(tmp_path / "run") == [22, 44]  # one per epoch, the last 2 kept
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
    metadata = checkpoint_path(run) / "meta" / "metadata"  # the step's JSON metadata
    before = metadata.read_bytes()
    other = TrainConfig(num_units=16, batch_size=64, epochs=2, keep_prob=0.9)
    with pytest.raises(ValueError, match="keep_prob: checkpoint has 0.8, this run has 0.9"):
        train(other, save_dir=run, resume=True)
    metadata.write_bytes(before[:-100])
    with pytest.raises(ValueError, match="is corrupted or incomplete"):
        train(TINY, save_dir=run, resume=True)
    assert metadata.read_bytes() == before[:-100]  # nothing overwritten
    assert checkpoint_steps(run) == [7]
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        train(TINY, save_dir=tmp_path / "empty", resume=True)
    with pytest.raises(ValueError, match="resume=True needs save_dir"):
        train(TINY, resume=True)
    with pytest.raises(ValueError, match=r"holds the checkpoints of another run already \(the"):
        train(TINY, save_dir=run)  # a fresh run would mix with the one saved there
    with pytest.raises(ValueError, match="keep must be a positive int or None"):
        train(TINY, save_dir=tmp_path / "new", keep=0)
    assert checkpoint_steps(run) == [7] and not (tmp_path / "new").exists()


_DATA_PARALLEL = """
import json, os
FORCED = "--xla_force_host_platform_device_count=4"
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " " + FORCED
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
    env = child_environment()  # the four devices are forced host devices, even beside a GPU
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
    # Two programs of float32 dots: at full precision also on a GPU, where TF32 (the default)
    # could round a last-bit difference between them up to about 1e-3.
    with jax.default_matmul_precision("highest"):
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


# -------------------------------------------------------- checked before any work, exit 2 --


@pytest.fixture
def no_work(monkeypatch):
    """Any data loading or compilation fails the test: the checks must come first."""

    def work(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(preparer, "_dataset", work)
    monkeypatch.setattr(preparer, "_init", work)


def _one_line_error(capsys, status_line):
    captured = capsys.readouterr()
    assert captured.err.startswith(status_line), captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.out == ""


def test_cli_refuses_an_unusable_save_directory_before_any_work(tmp_path, capsys, no_work):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(["train", "--save", str(a_file)]) == 2
    _one_line_error(capsys, f"recurrax train: error: --save {a_file}: it is a file, not a")
    assert main(["train", "--save", str(a_file / "sub")]) == 2
    _one_line_error(capsys, f"recurrax train: error: --save {a_file / 'sub'}: {a_file} is a file")
    # A directory that holds another run's checkpoints: a fresh run is refused (it would mix
    # two runs, and the next save would be below the latest step), --resume continues it.
    (tmp_path / "run" / "40" / "meta").mkdir(parents=True)
    assert main(["train", "--save", str(tmp_path / "run")]) == 2
    _one_line_error(
        capsys,
        f"recurrax train: error: {tmp_path / 'run'} holds the checkpoints of another run "
        "already (the latest at step 40): continue it with resume=True (--resume)",
    )
    assert main(["train", "--save", str(tmp_path / "run"), "--keep", "0"]) == 2
    _one_line_error(capsys, "recurrax train: error: argument --keep: ")


def test_cli_refuses_a_read_only_save_directory_before_any_work(
    tmp_path, capsys, no_work, monkeypatch
):
    """Read-only as this process sees it (os.access): root may write anywhere, so the test
    makes the directories read-only for the check itself."""
    read_only = tmp_path / "ro"
    read_only.mkdir()
    monkeypatch.setattr(options, "_can_write", lambda d: os.path.realpath(d) != str(read_only))
    assert main(["train", "--save", str(read_only)]) == 2
    _one_line_error(capsys, f"recurrax train: error: --save {read_only}: the directory is not")
    assert main(["train", "--save", str(read_only / "new" / "run")]) == 2
    _one_line_error(capsys, f"recurrax train: error: --save {read_only / 'new' / 'run'}: cannot")
    assert main(["train", "--plot", str(read_only / "c.png")]) == 2
    _one_line_error(capsys, f"recurrax train: error: --plot {read_only / 'c.png'}: its directory")
    assert main(["demo", "--plot", str(read_only / "c.png")]) == 2
    _one_line_error(capsys, "recurrax demo: error: --plot ")
    assert list(read_only.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_cli_refuses_a_chmod_read_only_directory(tmp_path, capsys, no_work):
    read_only = tmp_path / "ro"
    read_only.mkdir(mode=0o555)
    assert main(["train", "--save", str(read_only)]) == 2
    _one_line_error(capsys, f"recurrax train: error: --save {read_only}: the directory is not")


def test_cli_refuses_a_bad_plot_path_before_any_work(tmp_path, capsys, no_work):
    assert main(["train", "--plot", str(tmp_path / "missing" / "c.png")]) == 2
    _one_line_error(capsys, "recurrax train: error: --plot ")
    assert main(["train", "--plot", str(tmp_path)]) == 2
    _one_line_error(capsys, f"recurrax train: error: --plot {tmp_path}: it is a directory")
    assert list(tmp_path.iterdir()) == []


def test_cli_save_as_a_file_fails_as_a_process_without_a_traceback(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    proc = subprocess.run(
        [sys.executable, "-m", "recurrax.apps.cli", "train", "--save", str(a_file)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert (
        proc.stderr == f"recurrax train: error: --save {a_file}: it is a file, not a directory.\n"
    )


def test_cli_refuses_a_batch_larger_than_the_training_set_before_compiling(capsys, monkeypatch):
    def compile_(*args, **kwargs):
        raise AssertionError("compiled before the batch size was checked")

    monkeypatch.setattr(preparer, "_init", compile_)
    assert main(["train", "--batch-size", "2000"]) == 2
    _one_line_error(
        capsys,
        "recurrax train: error: batch_size=2000 exceeds the 1438 training examples of task "
        "'digits'; pick a batch_size of at most 1438.",
    )


# ------------------------------------------------------------ a diverged run, exit 1 --


def test_a_non_finite_loss_stops_the_run_exit_1_and_saves_nothing(tmp_path, capsys):
    save = tmp_path / "run"
    argv = ["train", "--num-units", "16", "--batch-size", "64", "--epochs", "1"]
    assert main([*argv, "--learning-rate", "1e38", "--save", str(save), "--progress", "none"]) == 1
    captured = capsys.readouterr()
    assert captured.err == (
        "recurrax train: error: the training loss became nan at step 2 of 22 (learning rate "
        "1e+38): the run diverged, and no checkpoint of it was written. Try a smaller "
        "--learning-rate.\n"
    )
    assert "test accuracy" not in captured.out
    assert checkpoint_steps(save) == []


def test_a_non_finite_loss_raises_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    """Diverging in epoch 2 of a run: the checkpoint of epoch 1 stays as it was."""
    config = TINY  # whose training step the module's runs have compiled already
    train(config, save_dir=tmp_path, stop_after=22)
    before = _files(tmp_path)
    real_step = trainer._train_step

    def step_that_diverges(model, opt_state, batch, run_key, step, *rest):
        model, opt_state, loss, metric = real_step(model, opt_state, batch, run_key, step, *rest)
        return model, opt_state, loss * np.inf if int(step) >= 30 else loss, metric

    monkeypatch.setattr(trainer, "_train_step", step_that_diverges)
    with pytest.raises(NonFiniteLoss, match="became inf at step 31 of 44") as error:
        train(config, save_dir=tmp_path, resume=True)
    assert error.value.step == 31
    assert _files(tmp_path) == before


# ---------------------------------------------------------------- Ctrl-C, exit 130 --


def _interrupt_at(monkeypatch, at: int):
    """Make the progress reporter raise KeyboardInterrupt (as Ctrl-C would) after step ``at``."""
    real = trainer.make_reporter

    def make_reporter(*args, **kwargs):
        reporter = real(*args, **kwargs)
        advance = reporter.advance

        def interrupting(step, latest):
            advance(step, latest)
            if step == at:
                raise KeyboardInterrupt

        reporter.advance = interrupting
        return reporter

    monkeypatch.setattr(trainer, "make_reporter", make_reporter)


def test_ctrl_c_saves_exits_130_and_resumes_to_the_same_bits(
    straight, tmp_path, capsys, monkeypatch
):
    save = tmp_path / "run"
    _interrupt_at(monkeypatch, 9)
    assert main([*TINY_ARGV, "--save", str(save)]) == 130
    captured = capsys.readouterr()
    assert captured.err == (
        f"recurrax train: interrupted: after step 9 of 44; checkpoint saved to "
        f"{checkpoint_path(save)}: continue with --save {save} --resume\n"
    )
    monkeypatch.undo()
    like = train(TINY, stop_after=1)
    ckpt = recurrax.load_checkpoint(save, model=like.model, opt_state=like.opt_state)
    assert ckpt.step == 9 and len(ckpt.history["loss"]) == 9
    assert main([*TINY_ARGV, "--save", str(save), "--resume"]) == 0
    ckpt = recurrax.load_checkpoint(save, model=like.model, opt_state=like.opt_state)
    assert ckpt.step == 44
    assert _bits(ckpt.model) == _bits(straight.model)
    assert _bits(ckpt.opt_state) == _bits(straight.opt_state)
    assert ckpt.history == straight.history


def test_ctrl_c_at_an_epoch_end_keeps_that_epoch_and_resumes_exactly(
    straight, tmp_path, monkeypatch
):
    _interrupt_at(monkeypatch, 22)  # before the epoch's test metric was measured
    with pytest.raises(TrainingInterrupted) as stop:
        train(TINY, save_dir=tmp_path)
    assert (stop.value.step, stop.value.total_steps) == (22, 44)
    assert stop.value.path == checkpoint_path(tmp_path)
    assert isinstance(stop.value, KeyboardInterrupt)
    monkeypatch.undo()
    resumed = train(TINY, save_dir=tmp_path, resume=True)
    assert _bits(resumed.model) == _bits(straight.model)
    assert resumed.history == straight.history


def test_ctrl_c_without_save_says_nothing_was_saved(tmp_path, capsys, monkeypatch):
    _interrupt_at(monkeypatch, 3)
    assert main([*TINY_ARGV]) == 130
    assert capsys.readouterr().err == (
        "recurrax train: interrupted: after step 3 of 44; nothing saved (no --save).\n"
    )


def test_a_real_ctrl_c_is_one_line_exit_130_and_a_checkpoint(tmp_path):
    """SIGINT to the process, once it has trained an epoch: no traceback, a checkpoint."""
    save = tmp_path / "run"
    argv = [*TINY_ARGV[:-2], "--epochs", "1000", "--progress", "plain", "--save", str(save)]
    # Ctrl-C raises KeyboardInterrupt, as in a terminal, even if this process ignores SIGINT.
    command = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        f"sys.argv = ['recurrax', *{argv!r}]; runpy.run_module('recurrax.apps.cli', "
        "run_name='__main__')"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # On the CPU also beside a GPU: the signal is the point, and a second process on the GPU
        # could not take the memory this one reserved there (without pytest-xdist).
        env={**os.environ, "PYTHONUNBUFFERED": "1", "JAX_PLATFORMS": "cpu"},
    )
    try:
        for line in proc.stdout:
            if line.startswith("epoch"):
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-3000:]
    found = re.fullmatch(
        r"recurrax train: interrupted: after step (\d+) of 22000; checkpoint saved to (\S+): "
        r"continue with --save (\S+) --resume\n",
        err,
    )
    assert found and found[2] == str(checkpoint_path(save)) and found[3] == str(save), err
    like = train(TINY, stop_after=1)
    ckpt = recurrax.load_checkpoint(save, model=like.model, opt_state=like.opt_state)
    assert ckpt.step == int(found[1]) >= 22
    assert len(ckpt.history["loss"]) == ckpt.step


def test_cli_without_orbax_refuses_save_before_any_work(tmp_path, capsys, no_work, monkeypatch):
    """Checkpoints need the orbax-checkpoint extra: without it, --save is refused up front
    (not at the end of the first epoch)."""
    monkeypatch.setitem(sys.modules, "orbax.checkpoint", None)  # import fails
    assert main([*TINY_ARGV, "--save", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, "recurrax train: error: training checkpoints need orbax-checkpoint")
    assert not (tmp_path / "run").exists()
