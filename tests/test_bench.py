"""The benchmark's code path on a tiny layer, its report's arithmetic and its results file
(no timings checked), and ``recurrax bench``'s command line."""

import json
import math
import os

import pytest

from recurrax.apps.bench import Case, build, measure_case, measure_static, round_robin
from recurrax.apps.bench_report import (
    environment,
    markdown,
    read_results,
    summarize,
    write_results,
)
from recurrax.apps.cli import build_parser, main, run_bench_cli
from recurrax.apps.plots import plot_ratios

TINY = Case("lstm", 2, 3, 2, 4)


@pytest.mark.parametrize("impls", [("recurrax", "floor"), ("flax",)])
def test_every_jax_implementation_runs(impls):
    if "flax" in impls:
        pytest.importorskip("flax")  # a benchmark peer, in the [bench] extra
    result = measure_case(TINY, impls=impls, repeats=2)
    assert set(result["times"]) == set(impls)
    for modes in result["times"].values():
        assert set(modes) == {"fwd", "fwd+bwd"}
        assert all(len(ts) == 2 and all(t > 0 for t in ts) for ts in modes.values())


def test_torch_peers_run():
    pytest.importorskip("torch")
    for impl in ("torch", "torch_1t", "torch_cells"):
        for cell in ("rnn", "gru", "lstm"):
            fns = build(impl, Case(cell, 2, 3, 2, 4))
            fns["fwd"]()
            fns["fwd+bwd"]()


def test_static_child_compiles_or_is_stopped():
    done = measure_static(TINY, repeats=1, cap_s=120)
    assert done["skipped"] is None and set(done["compile"]) == {"fwd", "fwd+bwd"}
    assert set(done["times"]) == {"fwd", "fwd+bwd"}
    stopped = measure_static(TINY, repeats=1, cap_s=0.001)
    assert stopped["skipped"] == "fwd did not compile in 0 s" and stopped["times"] == {}


def test_round_robin_budget():
    calls = []
    times = round_robin({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 4)
    assert calls == ["a", "b"] + ["a", "b"] * 4  # warm-up, then rounds in turn
    assert [len(v) for v in times.values()] == [4, 4]


def _results():
    """Two cases with made-up times: every ratio and efficiency below is known."""
    lstm, rnn = Case("lstm", 32, 1000, 64, 128), Case("rnn", 4, 1000, 3, 5)

    def t(torch, mine, cells, floor):
        return {
            "torch": {"fwd": [torch / 2] * 3, "fwd+bwd": [torch, torch, 99.0]},
            "recurrax": {"fwd": [mine / 2] * 3, "fwd+bwd": [mine] * 3},
            "torch_cells": {"fwd+bwd": [cells]},
            "floor": {"fwd": [floor / 2], "fwd+bwd": [floor]},
        }

    return [
        {"case": lstm, "times": t(2.0, 2.8, 20.0, 2.0), "static": {"skipped": "fwd did not"}},
        {"case": rnn, "times": t(1.0, 0.5, 10.0, 0.25), "static": None},
    ]


def test_summary_and_targets():
    rows = summarize(_results())
    fb = {r["cell"]: r for r in rows if r["mode"] == "fwd+bwd"}
    assert fb["lstm"]["seconds"]["torch"] == 2.0  # the median of [2, 2, 99]
    assert fb["lstm"]["ratio"]["recurrax"] == pytest.approx(1.4)
    assert fb["lstm"]["ratio"]["torch_cells"] == pytest.approx(10.0)
    assert fb["lstm"]["efficiency"] == pytest.approx(2.0 / 2.8)
    assert fb["rnn"]["ratio"]["recurrax"] == pytest.approx(0.5)
    assert fb["lstm"]["ratio"]["flax"] is None and fb["lstm"]["static_skipped"]
    meta = dict(command="recurrax bench", date="d", machine="m", cores=2, versions="v")
    text = markdown(rows, dict(meta, load_start=1.0, load_end=2.0, torch_threads=2))
    assert "| lstm | (32, 1000, 64, 128) | 2000.0 | 2800.0 | 1.40 | (fwd did not) |" in text
    assert "over the grid: **0.95** (target <= 1.0: met)" in text  # median of 1.4 and 0.5
    assert "largest ratio: **1.40** at lstm (32, 1000, 64, 128) (target <= 1.3: missed)" in text
    assert "least **7.1x** (target >= 5x: met)" in text  # 10 / 1.4
    assert "least **0.71** at lstm (32, 1000, 64, 128) (target >= 0.8: missed)" in text


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "speed.png"
    plot_ratios(summarize(_results()), str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_results_file(tmp_path):
    """One format for every benchmark: {"format": 1, "meta", "records"}, read back as written."""
    meta = environment("python benchmarks/x.py --quick")
    assert meta["command"] == "python benchmarks/x.py --quick"
    assert {"date", "machine", "cores", "versions", "backend", "device", "load_start"} <= set(meta)
    rows = summarize(_results())
    path = write_results(tmp_path / "speed.json", rows, meta)
    assert json.loads(path.read_text())["format"] == 1
    records, meta_back = read_results(path)
    assert meta_back == json.loads(json.dumps(meta))
    assert len(records) == 4 and records[1]["shape"] == [32, 1000, 64, 128]
    assert records[1]["times"]["torch"] == [2.0, 2.0, 99.0]  # the raw times ride along
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    (tmp_path / "other.json").write_text('{"rows": []}')
    with pytest.raises(ValueError, match="is not a results file of format 1"):
        read_results(tmp_path / "other.json")


def test_cli_arguments(capsys):
    args = build_parser().parse_args(["bench", "--quick", "--skip", "static", "--plot", "x.png"])
    assert (args.quick, args.skip, args.plot, args.static_cap) == (True, ("static",), "x.png", 60.0)
    assert main(["bench", "--cells", "lstm,mlp"]) == 2
    assert "--cells must name some of ('rnn', 'gru', 'lstm')" in capsys.readouterr().err
    assert main(["bench", "--skip", "torch"]) == 2
    assert "recurrax and torch cannot be skipped" in capsys.readouterr().err


def test_cli_shape(capsys, tmp_path):
    """--shape replaces the grid with the sizes given; bad sizes name the argument."""
    for bad in ("4,10,3", "4,10,3,x", "4,0,3,5", "4,10,3,5,6"):
        assert main(["bench", "--shape", bad]) == 2
        err = capsys.readouterr().err
        assert "recurrax bench: error: argument --shape: --shape must be four positive" in err
    assert main(["bench", "--quick", "--shape", "2,3,2,4"]) == 2
    assert "argument --shape: not allowed with argument --quick" in capsys.readouterr().err

    seen = {}

    def fake_run_bench(grid, cells, impls, repeats, static_cap, progress):
        seen.update(grid=grid, cells=cells, repeats=repeats, progress=progress)
        return _results()

    argv = ["bench", "--shape", "2,3,2,4", "--shape", "1,5,1,2", "--cells", "gru"]
    argv += ["--progress", "none", "--json", str(tmp_path / "r.json")]
    assert run_bench_cli(build_parser().parse_args(argv), run=fake_run_bench) == 0
    assert seen == {
        "grid": ((2, 3, 2, 4), (1, 5, 1, 2)),
        "cells": ("gru",),
        "repeats": 5,
        "progress": "none",
    }
    assert capsys.readouterr().out.startswith("## Speed")  # the report, on stdout
    records, meta = read_results(tmp_path / "r.json")
    assert len(records) == 4 and meta["load_end"] >= 0


def test_gpu_check_dry_run_on_cpu(tmp_path):
    """benchmarks/gpu_check.py --smoke runs the GPU script's code on CPU: the fused and generic
    paths agree, and every cell gets a forward and a forward+backward row of positive ratios."""
    pytest.importorskip("torch")
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    out = tmp_path / "table.md"
    proc = subprocess.run(
        [sys.executable, str(script), "--smoke", "--repeats", "3", "--out", str(out)]
        + ["--json", str(tmp_path / "table.json")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},  # a dry run on the CPU, also beside a GPU
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert float(re.search(r"max \|diff\| = (\S+)", text).group(1)) < 1e-5
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| ")][1:]
    assert [(r[0].strip(), r[2].strip()) for r in rows] == [
        (c, m) for c in ("rnn", "gru", "lstm") for m in ("fwd", "fwd+bwd")
    ]
    for r in rows:  # rounded to 0.01: a fast GPU may print 0.00
        assert all(math.isfinite(float(v)) and float(v) >= 0 for v in r[3:7]), r
    records, meta = read_results(tmp_path / "table.json")
    assert meta["smoke"] is True and len(records) == 6
    for rec in records:  # unrounded seconds
        assert rec["seconds"]["torch_cudnn"] > 0 and rec["seconds"]["recurrax"] > 0
