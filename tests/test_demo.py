"""``recurrax demo``: the article's example, the static/dynamic trade-off table, the options;
and the progress bar every subcommand shares."""

import sys

import numpy as np
import pytest

from recurrax.apps.cli import main
from recurrax.apps.demo import _predict_seconds, format_tradeoff, measure_tradeoff
from recurrax.apps.plots import plot_tradeoff

# One process runs this file's tests: the table of the module fixture is measured once.
pytestmark = pytest.mark.xdist_group("demo")


def test_demo_prints_equal_results(capsys):
    assert main(["demo", "--lengths", "2,3", "--progress", "plain"]) == 0
    out, err = capsys.readouterr()
    assert "static_rnn and dynamic_rnn agree: yes" in out
    assert "dynamic_rnn outputs (4, 2, 5)" in out
    assert "static_rnn final state (4, 5)" in out
    assert "static_rnn vs dynamic_rnn as T grows" in out
    table = [line.split() for line in out.splitlines() if line.split()[:1] in (["2"], ["3"])]
    assert [(row[0], row[1]) for row in table] == [
        ("2", "static_rnn"),
        ("2", "dynamic_rnn"),
        ("3", "static_rnn"),
        ("3", "dynamic_rnn"),
    ]
    assert "from T=2 to T=3: static_rnn's program grew" in out
    # Progress goes to stderr, one plain line per measurement.
    err = err.splitlines()
    assert len(err) == 8
    assert err[0].startswith("[1/8] T=2 static_rnn forward ... ")
    assert err[7].startswith("[8/8] T=3 dynamic_rnn gradient ... ")


def test_demo_without_table(capsys):
    assert main(["demo", "--no-table"]) == 0
    out = capsys.readouterr().out
    assert "static_rnn and dynamic_rnn agree: yes" in out
    assert "as T grows" not in out


def test_article_example_matches_basic_rnn_formula():
    import jax
    import jax.numpy as jnp

    import recurrax
    from recurrax.apps.demo import ARTICLE_BATCH as x

    cell = recurrax.BasicRNNCell(num_units=5, input_size=3, key=jax.random.key(42))
    # Full float32 dots also on a GPU (whose default, TF32, is about 1e-3 relative).
    with jax.default_matmul_precision("highest"):
        outputs, states = recurrax.dynamic_rnn(cell, x, dtype=jnp.float32)
    k, b = np.asarray(cell.kernel, np.float64), np.asarray(cell.bias, np.float64)
    h = np.zeros((4, 5))
    for t in range(2):
        h = np.tanh(np.concatenate([x[:, t], h], -1) @ k + b)
        np.testing.assert_allclose(outputs[:, t], h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(states, h, rtol=1e-5, atol=1e-6)


# On a GPU the fused loop runs 8 steps per loop iteration: from T = 16 on, dynamic_rnn's
# StableHLO is the same at lengths that agree modulo 8 (on a CPU, at every length).
LENGTHS = (16, 24, 32)


@pytest.fixture(scope="module")
def rows():
    rows, stopped = measure_tradeoff(LENGTHS, budget_s=600.0, progress="none")
    assert stopped is None
    return rows


def test_tradeoff_table_numbers(rows):
    static = {r.time: r for r in rows if r.runner == "static_rnn"}
    dynamic = {r.time: r for r in rows if r.runner == "dynamic_rnn"}
    a, b, c = LENGTHS
    assert sorted(static) == sorted(dynamic) == [a, b, c]
    # static_rnn: the same number of equations and ops added per step; dynamic_rnn: none.
    for get in (lambda r: r.forward.jaxpr_eqns, lambda r: r.forward.hlo_ops):
        step = get(static[b]) - get(static[a])
        assert step > 0 and get(static[c]) - get(static[b]) == step
        assert get(dynamic[a]) == get(dynamic[b]) == get(dynamic[c])
    for get in (lambda r: r.gradient.hlo_ops, lambda r: r.gradient.temp_bytes):
        assert get(static[a]) < get(static[b]) < get(static[c])
    assert all(r.gradient.mode == "gradient" and r.forward.mode == "forward" for r in rows)
    text = format_tradeoff(rows).splitlines()
    assert text[0].split()[:4] == ["T", "runner", "jaxpr", "eqns"]
    fields = text[1].split()
    assert fields[:4] == [
        str(a),
        "static_rnn",
        str(static[a].forward.jaxpr_eqns),
        str(static[a].forward.hlo_ops),
    ]
    assert fields[-1] == f"{static[a].gradient.temp_bytes / 1024:.1f}"


def test_budget_stops_the_table_after_the_first_length():
    rows, stopped = measure_tradeoff((2, 3), budget_s=0.0, progress="none")
    assert [(r.time, r.runner) for r in rows] == [(2, "static_rnn"), (2, "dynamic_rnn")]
    assert stopped.startswith("stopped before T=3:")
    assert "of the 0 s budget spent" in stopped


def test_predict_seconds():
    assert _predict_seconds([(10, 1.0)], 30) == pytest.approx(3.0)  # one point: linear
    assert _predict_seconds([(10, 1.0), (20, 4.0)], 40) == pytest.approx(16.0)  # quadratic
    assert _predict_seconds([(10, 1.0), (20, 1.0)], 40) == pytest.approx(2.0)  # at least linear
    assert _predict_seconds([(10, 1.0), (20, 100.0)], 40) == pytest.approx(800.0)  # at most cubic


def test_plot_writes_a_png(rows, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "tradeoff.png"
    plot_tradeoff(rows, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["demo", "--plot", str(tmp_path / "x.png")]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        "recurrax demo: error: --plot needs matplotlib: pip install 'recurrax[plot]'.\n"
    )
    assert captured.out == ""  # checked before any work
    with pytest.raises(ImportError, match="--plot needs matplotlib"):
        plot_tradeoff([], tmp_path / "y.png")


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--lengths", "10,2"], "--lengths must be increasing positive integers"),
        (["--lengths", "0,2"], "--lengths must be increasing positive integers"),
        (["--lengths", "a"], "--lengths must be increasing positive integers"),
        (["--budget", "-1"], "--budget must be seconds >= 0; got '-1'"),
        (["--cell", "basic_lstm"], "invalid choice: 'basic_lstm'"),
        (["--progress", "bars"], "invalid choice: 'bars'"),
    ],
)
def test_bad_demo_options(argv, match, capsys):
    assert main(["demo", *argv]) == 2
    err = capsys.readouterr().err
    assert match in err
    assert err.startswith("recurrax demo: error: argument ") and err.count("\n") == 1


def test_measure_tradeoff_errors():
    with pytest.raises(
        ValueError, match=r"lengths must be increasing positive integers; got \[3, 2\]"
    ):
        measure_tradeoff((3, 2))
    with pytest.raises(ValueError, match="budget_s must be a number of seconds >= 0; got -1"):
        measure_tradeoff((2,), budget_s=-1)
    with pytest.raises(ValueError, match=r"cell must be one of \['gru', 'lstm', 'rnn'\]"):
        measure_tradeoff((2,), cell="basic_rnn")
    with pytest.raises(ValueError, match="progress must be 'auto', 'rich', 'plain' or 'none'"):
        measure_tradeoff((2,), progress="bar")


def test_task_bar_modes(monkeypatch, capsys):
    """The shared progress bar of demo and bench: a rich bar when asked for, none otherwise."""
    import io

    from rich.progress import Progress

    from recurrax.apps.progress import TaskBar, resolve

    assert resolve("rich") == "rich" and isinstance(TaskBar(2, "rich").bar, Progress)
    assert TaskBar(2, "plain").bar is None and TaskBar(2, "none").bar is None
    with TaskBar(2, "plain") as bar:
        bar.start("one")
        bar.start("two")  # ends "one"
    assert [line.split(" ...")[0] for line in capsys.readouterr().err.splitlines()] == [
        "[1/2] one",
        "[2/2] two",
    ]
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal: "auto" means no bar
    assert resolve("auto") == "plain" and TaskBar(2, "auto").bar is None
    monkeypatch.setitem(sys.modules, "rich", None)  # rich not installed: lines instead
    assert resolve("rich") == "plain"
    with pytest.raises(ValueError, match="progress must be 'auto', 'rich', 'plain' or 'none'"):
        TaskBar(2, "bars")
