"""The applications stand apart from the library, and the ``recurrax`` command fails one way."""

import subprocess
import sys

import pytest

from recurrax.apps.cli import build_parser, main

APP_DEPENDENCIES = {"optax", "sklearn", "matplotlib", "rich", "torch", "flax", "orbax"}


def _python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip()


def test_import_recurrax_imports_no_application_dependency():
    code = (
        "import recurrax, sys; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(APP_DEPENDENCIES)}))"
    )
    assert _python(code) == "[]"


def test_import_recurrax_imports_no_application():
    code = "import recurrax, sys; print(sorted(m for m in sys.modules if 'recurrax.apps' in m))"
    assert _python(code) == "[]"


def test_the_command_line_imports_no_optional_extra():
    """``recurrax --help`` and argument errors stay fast: the extras load where they are used."""
    code = (
        "import sys; from recurrax.apps.cli import build_parser; build_parser(); "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(APP_DEPENDENCIES)}))"
    )
    assert _python(code) == "[]"


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "recurrax: error: the following arguments are required: {demo,train,bench}"),
        (["fly"], "recurrax: error: argument {demo,train,bench}: invalid choice: 'fly'"),
        (["demo", "--lengths", "3,2"], "recurrax demo: error: argument --lengths: --lengths must"),
        (["demo", "--seed", "x"], "recurrax demo: error: argument --seed: --seed must be an"),
        (["demo", "--seed", "-1"], "recurrax demo: error: argument --seed: --seed must be an"),
        (["train", "--seed", "-1"], "recurrax train: error: argument --seed: --seed must be"),
        (["train", "--seed", str(2**32)], "recurrax train: error: argument --seed: --seed must"),
        (["train", "--learning-rate", "inf"], "recurrax train: error: learning_rate must be a"),
        (["train", "--learning-rate", "nan"], "recurrax train: error: learning_rate must be a"),
        (["train", "--cell", "gru2"], "recurrax train: error: argument --cell: invalid choice"),
        (["train", "--batch-size", "0"], "recurrax train: error: batch_size must be a positive"),
        (["train", "--resume"], "recurrax train: error: resume=True needs save_dir"),
        (["bench", "--repeats", "0"], "recurrax bench: error: argument --repeats: --repeats must"),
        (["bench", "--repeats", "-2"], "recurrax bench: error: argument --repeats: --repeats must"),
        (["bench", "--skip", "recurrax"], "recurrax bench: error: recurrax and torch cannot be"),
        (["bench", "--json", "/no/such/dir/x.json"], "recurrax bench: error: --json /no/such/dir"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(message), captured.err
    assert captured.err.count("\n") == 1 and captured.out == ""


@pytest.mark.parametrize(
    "argv, prog",
    [
        (["demo", "--budget", "-1"], "recurrax demo"),
        (["train", "--keep-prob", "2"], "recurrax train"),
        (["bench", "--shape", "1,2,3"], "recurrax bench"),
    ],
)
def test_every_subcommand_fails_without_a_traceback(argv, prog):
    """As a process: exit status 2, one line on stderr, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "recurrax.apps.cli", *argv], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"{prog}: error: ") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_shared_options_read_one_way():
    """--progress and --seed: one definition, one meaning, in every subcommand that takes them."""
    parser = build_parser()
    for command in ("demo", "train", "bench"):
        args = parser.parse_args([command, "--progress", "plain"])
        assert args.progress == "plain"
    assert parser.parse_args(["demo"]).seed == 42  # the article's seed
    assert parser.parse_args(["train"]).seed == 0
    assert parser.parse_args(["train", "--seed", "3"]).seed == 3
    assert parser.parse_args(["train", "--seed", str(2**32 - 1)]).seed == 2**32 - 1
    assert parser.parse_args(["demo", "--seed", "0"]).seed == 0
    assert parser.parse_args(["train", "--cell", "rnn"]).cell == "rnn"


def test_help_exits_0(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    assert "--cell {rnn,gru,lstm}" in capsys.readouterr().out


def test_seed_range_is_what_numpy_and_jax_both_take():
    """0 .. 2**32 - 1: numpy refuses negative seeds, jax.random.key overflows above int64."""
    import jax
    import numpy as np

    from recurrax.apps.options import SEED_MAX
    from recurrax.apps.train import TrainConfig

    assert SEED_MAX == 2**32 - 1
    for seed in (0, SEED_MAX):
        jax.random.key(seed)
        np.random.default_rng([seed, 1])
        assert TrainConfig(seed=seed).seed == seed
    with pytest.raises(ValueError, match="expected non-negative integer"):
        np.random.default_rng([-1, 1])
    for seed in (-1, SEED_MAX + 1):
        with pytest.raises(ValueError, match=r"seed must be from 0 to 4294967295 \(2\*\*32 - 1\)"):
            TrainConfig(seed=seed)


def test_an_interrupt_is_one_line_and_exit_130(monkeypatch, capsys):
    """Ctrl-C in any subcommand: one line, exit status 130, no traceback."""
    import recurrax.apps.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_demo_cli", interrupted)
    assert main(["demo"]) == 130
    captured = capsys.readouterr()
    assert captured.err == "recurrax demo: interrupted: stopped by Ctrl-C.\n"
