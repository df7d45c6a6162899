"""recurrax train in several processes: equal to one process, resumable, bad input refused.

The runs go through the command (``python -m recurrax.apps.cli train``) in subprocesses on the
CPU platform, as a user would start them; a 2-process run is a launcher and two children that
join through ``jax.distributed`` on a free local port and reduce their gradients through gloo.
"""

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import recurrax
from recurrax.apps import launch
from recurrax.apps.cli import main
from recurrax.apps.options import CommandError
from recurrax.apps.train import TrainConfig, prepare

SOURCE = str(Path(recurrax.__file__).resolve().parents[1])
# One process runs this file's tests: the runs of the module fixture are started once.
pytestmark = pytest.mark.xdist_group("distributed")

# 2048 sine series in batches of 512: 4 steps an epoch, 8 in all; dropout draws from the PRNG.
CONFIG = TrainConfig(task="sine", cell="lstm", num_units=8, batch_size=512, epochs=2, keep_prob=0.8)
ARGV = ["train", "--task", "sine", "--cell", "lstm", "--num-units", "8", "--batch-size", "512"]
ARGV += ["--epochs", "2", "--keep-prob", "0.8", "--progress", "plain"]
TWO = ["--num-processes", "2"]
LIMIT_S = 300  # far beyond any run here, even on a loaded machine: a hang fails, not blocks


def _environment() -> dict[str, str]:
    """CPU, one device per process, this recurrax importable: also on a machine with a GPU
    (the launcher's own children get the same; other XLA flags pass through)."""
    return launch.child_environment()


def _start(argv) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "recurrax.apps.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(),
    )


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=LIMIT_S)
    finally:
        proc.kill()
    return proc.returncode, out, err


def _run(argv) -> tuple[int, str, str]:
    return _finish(_start(argv))


def _arrays(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


@pytest.fixture(scope="module")
def like():
    """A model and optimizer state of CONFIG, as loading a checkpoint wants them."""
    run = prepare(CONFIG)
    return run.model, run.opt_state


def _load(directory, like):
    """The latest checkpoint in ``directory``, through the public API."""
    model, opt_state = like
    return recurrax.load_checkpoint(directory, model=model, opt_state=opt_state)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """CONFIG in one process and in two, each to its end, and in two stopped after 3 steps; all
    with --save, started together so that their start-ups overlap."""
    root = tmp_path_factory.mktemp("runs")
    one = _start([*ARGV, "--save", str(root / "one")])
    two = _start([*ARGV, *TWO, "--save", str(root / "two")])
    stopped = _start([*ARGV, *TWO, "--save", str(root / "stopped"), "--stop-after", "3"])
    return root, _finish(one), _finish(two), _finish(stopped)


@pytest.mark.slow
def test_two_processes_train_as_one(runs, like):
    root, one, two, _ = runs
    assert one[0] == 0, one[2][-3000:]
    assert two[0] == 0, two[2][-3000:]
    lines = two[1].splitlines()
    # Only process 0 prints, and gloo's connection notice is not passed on.
    assert lines[0].endswith("global batch 512 over 2 cpu device(s) in 2 processes"), lines
    assert len(lines) == len(one[1].splitlines()) == 5, lines  # header, 2 epochs, 2 results
    assert not any("Gloo" in line for line in lines)
    a, b = _load(root / "one", like), _load(root / "two", like)
    assert a.step == b.step == 8
    # The global batch is the same, only split: the batch mean is summed in another order
    # (two halves, then gloo's all-reduce), so float32 rounding differs. Adam divides by the
    # gradients' running RMS, which can amplify such a difference; measured after these 8 steps:
    # at most 3e-8 (absolute) in any weight or optimizer moment, well within atol=1e-6. The
    # weights moved from their initial values by up to 0.045 (checked below): not vacuous.
    for x, y in zip(_arrays(b.model), _arrays(a.model)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    for x, y in zip(_arrays(b.opt_state), _arrays(a.opt_state)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.history["loss"], a.history["loss"], rtol=1e-5)
    moved = max(float(np.max(np.abs(x - y))) for x, y in zip(_arrays(a.model), _arrays(like[0])))
    assert moved > 1e-3


@pytest.mark.slow
def test_two_processes_stop_and_resume_to_the_same_bits(runs, like):
    root, _, two, (code, out, err) = runs
    assert two[0] == 0, two[2][-3000:]
    assert code == 0, err[-3000:]
    save = root / "stopped"
    assert f"stopped early at step 3 of 8: continue with --save {save} --resume" in out
    assert _load(save, like).step == 3
    code, out, err = _run([*ARGV, *TWO, "--save", str(save), "--resume"])
    assert code == 0, err[-3000:]
    resumed, straight = _load(save, like), _load(root / "two", like)
    assert resumed.step == straight.step == 8
    # Bit for bit: the same steps in the same order, and an all-reduce of two addends does not
    # depend on their order.
    for x, y in zip(_arrays(resumed.model), _arrays(straight.model)):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(_arrays(resumed.opt_state), _arrays(straight.opt_state)):
        np.testing.assert_array_equal(x, y)
    assert resumed.history == straight.history


# ------------------------------------------------------------------------- bad input --


def _one_line(capsys, expected: str) -> None:
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"{expected}\n"


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["--num-processes", "0"],
            "argument --num-processes: --num-processes must be a positive integer; got '0'.",
        ),
        (
            ["--num-processes", "2", "--process-id", "2", "--coordinator", "127.0.0.1:8476"],
            "--process-id 2 is out of range for --num-processes 2: it must be from 0 to 1.",
        ),
        (
            ["--num-processes", "2", "--process-id", "-1", "--coordinator", "127.0.0.1:8476"],
            "--process-id -1 is out of range for --num-processes 2: it must be from 0 to 1.",
        ),
        (
            ["--num-processes", "3"],  # the default global batch: 32
            "--batch-size 32 must be divisible by --num-processes 3: each process feeds an equal "
            "slice of the global batch; pick a multiple of 3.",
        ),
        (
            ["--num-processes", "2", "--process-id", "1"],
            "--process-id needs --coordinator HOST:PORT (where process 0 listens); without both, "
            "--num-processes N starts all N processes on this machine.",
        ),
        (
            ["--num-processes", "2", "--coordinator", "127.0.0.1:8476"],
            "--coordinator needs --process-id: which of the 2 processes this one is, from 0 to 1.",
        ),
        (
            ["--coordinator", "localhost", "--process-id", "0"],
            "argument --coordinator: --coordinator must be HOST:PORT, e.g. 10.0.0.1:8476 or "
            "[::1]:8476, with a port from 1 to 65535; got 'localhost'.",
        ),
        (
            ["--coordinator", "::1:8476", "--process-id", "0"],
            "argument --coordinator: --coordinator must be HOST:PORT, e.g. 10.0.0.1:8476 or "
            "[::1]:8476, with a port from 1 to 65535; got '::1:8476'.",
        ),
        (
            ["--coordinator-timeout", "0"],
            "argument --coordinator-timeout: --coordinator-timeout must be a finite number of "
            "seconds > 0; got '0'.",
        ),
        (["--distributed"], "unrecognized arguments: --distributed"),
    ],
)
def test_bad_process_settings_are_refused_before_any_work(argv, expected, capsys):
    assert main(["train", *argv]) == 2
    prog = "recurrax" if argv == ["--distributed"] else "recurrax train"  # the top parser's
    _one_line(capsys, f"{prog}: error: {expected}")
    assert not launch.joined()


def test_the_coordinator_address_takes_host_names_and_bracketed_ipv6():
    from recurrax.apps.options import address

    parse = address("--coordinator")
    for text in ("10.0.0.1:8476", "node-0.cluster:1", "[::1]:65535", "[fe80::1]:8476"):
        assert parse(text) == text
    for text in ("10.0.0.1:0", "10.0.0.1:65536", ":8476", "10.0.0.1:", "host:port"):
        with pytest.raises(Exception, match="must be HOST:PORT"):
            parse(text)


def test_a_coordinator_nobody_answers_fails_in_bounded_time_with_one_line():
    """Process 1 finds nothing at the address; process 0 waits for a process that never comes.
    Both give up after --coordinator-timeout with one line and exit 2, not JAX's abort."""
    first_port, second_port = launch.free_port(), launch.free_port()
    timeout = ["--num-processes", "2", "--coordinator-timeout", "2"]
    start = time.monotonic()
    first = _start([*ARGV, *timeout, "--process-id", "0", "--coordinator", f"[::1]:{first_port}"])
    second = _start(
        [*ARGV, *timeout, "--process-id", "1", "--coordinator", f"127.0.0.1:{second_port}"]
    )
    first, second_result = _finish(first), _finish(second)
    assert time.monotonic() - start < 120  # about 2 s + the import of JAX; no hang
    assert second_result == (
        2,
        "",
        f"recurrax train: error: nothing answered at --coordinator 127.0.0.1:{second_port} within "
        "2 s. "
        "Start process 0 first (it listens there), or check the host and port (or raise "
        "--coordinator-timeout).\n",
    )
    assert first == (
        2,
        "",
        f"recurrax train: error: --coordinator [::1]:{first_port}: not all 2 processes joined "
        "within 2 s. Start the others with the same --coordinator and --num-processes 2, each "
        "with its own --process-id, and HOST must be this machine (or raise "
        "--coordinator-timeout).\n",
    )


def test_a_failing_child_stops_the_others_and_the_launcher(tmp_path, capsys):
    """Process 1 dies at once; process 0 (real, waiting for it to join) is stopped, and the
    launcher ends with one line naming process 1 and its error: no hang, no orphan."""
    pids = tmp_path / "pids"
    python = tmp_path / "python"
    python.write_text(
        "#!/bin/sh\n"
        f'echo $$ >> "{pids}"\n'
        'case "$*" in *"--process-id 1"*) echo "boom: no GPU here" >&2; exit 3;; esac\n'
        f'exec "{sys.executable}" "$@"\n'
    )
    python.chmod(0o755)
    start = time.monotonic()
    with pytest.raises(CommandError) as failed:
        launch.run_local([*ARGV, *TWO], 2, executable=str(python))
    assert time.monotonic() - start < 60  # the 1 s process 0 gets to report it, then a kill
    assert str(failed.value) == (
        "process 1 of 2 failed (exit status 3): boom: no GPU here; the other processes were "
        "stopped."
    )
    assert failed.value.status == 1
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 2
    for pid in started:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # gone, and reaped


@pytest.mark.slow
def test_across_machines_a_process_that_dies_ends_the_other_with_one_line():
    """The form without a launcher: process 1 is killed while training; process 0 notices at
    its next exchange of gradients and ends with exit status 1 and one line."""
    joined = [*ARGV, "--epochs", "1000", "--num-processes", "2"]
    joined += ["--coordinator", f"127.0.0.1:{launch.free_port()}", "--process-id"]
    first, second = _start([*joined, "0"]), _start([*joined, "1"])
    try:
        for _ in range(2):  # the header, then the first epoch's line: gloo is connected
            ready, _, _ = select.select([first.stdout], [], [], LIMIT_S)
            assert ready and first.stdout.readline()
    finally:
        second.kill()
        _finish(second)
    start = time.monotonic()
    code, out, err = _finish(first)
    assert time.monotonic() - start < 60  # at once, in fact
    assert code == 1 and out == ""
    assert err.startswith("recurrax train: error: process 0 of 2 lost the others ("), err
    assert err.endswith("another process of the run failed or was stopped; see its output.\n")
    assert err.count("\n") == 1


def _state(pid: int) -> str | None:
    """``pid``'s state letter from /proc (``"Z"``: exited, not yet reaped), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the children follow via prctl")
def test_the_children_die_with_a_killed_launcher():
    """SIGKILL leaves the launcher no time to stop its children: they end by themselves, at
    once, although they have nothing to print for a long time (which would fail on the closed
    pipe)."""
    argv = [*ARGV[:-2], "--progress", "none", "--epochs", "1000", *TWO]
    launcher, children = _start(argv), []
    try:
        ready, _, _ = select.select([launcher.stdout], [], [], LIMIT_S)
        assert ready and "in 2 processes" in launcher.stdout.readline()  # joined, training
        children = _children_of(launcher.pid)
        assert len(children) == 2
        launcher.kill()
        launcher.wait()
        deadline = time.monotonic() + 30
        while any(_state(pid) not in (None, "Z") for pid in children):
            assert time.monotonic() < deadline, [_state(pid) for pid in children]
            time.sleep(0.1)
    finally:
        launcher.kill()
        for pid in children:  # should the test fail: no process of it is left behind
            if _state(pid) not in (None, "Z"):
                os.kill(pid, signal.SIGKILL)
        launcher.communicate(timeout=LIMIT_S)


def test_child_environment_pins_the_cpu_with_one_device():
    env = launch.child_environment(
        {"XLA_FLAGS": "--xla_force_host_platform_device_count=4 --xla_dump_to=/tmp/x", "A": "1"}
    )
    assert env["JAX_PLATFORMS"] == "cpu" and env["A"] == "1"
    assert env["XLA_FLAGS"] == "--xla_dump_to=/tmp/x"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == SOURCE
    assert "XLA_FLAGS" not in launch.child_environment(
        {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    )
