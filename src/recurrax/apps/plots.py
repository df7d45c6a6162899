"""The figures the commands draw: the demo's trade-off, the training curves, the speed ratios.

matplotlib is an optional extra (``pip install 'recurrax[plot]'``); :func:`pyplot` is the one
place it is imported, and says what to install when it is missing.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pyplot", "plot_tradeoff", "plot_history", "plot_ratios"]

_RUNNERS = ("static_rnn", "dynamic_rnn")


def pyplot():
    """``matplotlib.pyplot`` drawing to files only (the ``Agg`` backend: no display needed).

    Raises ``ImportError`` naming the extra to install when matplotlib is missing; the commands
    call it before any work when ``--plot`` is given.
    """
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("--plot needs matplotlib: pip install 'recurrax[plot]'.") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_tradeoff(rows, path) -> None:
    """Draw program size, compile time, run time and gradient temp memory against ``T``.

    **Arguments:** ``rows`` from :func:`recurrax.apps.demo.measure_tradeoff`; ``path`` of the
    image (e.g. a PNG).
    """
    plt = pyplot()
    panels = (
        ("program size (StableHLO ops)", lambda r: r.forward.hlo_ops),
        ("compile time (s)", lambda r: r.forward.build_s),
        ("run time (ms)", lambda r: r.forward.run_s * 1e3),
        ("gradient step temp memory (KiB)", lambda r: (r.gradient.temp_bytes or 0) / 1024),
    )
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (title, get) in zip(axes.flat, panels):
        for runner, style in zip(_RUNNERS, ("o-", "s-")):
            mine = [r for r in rows if r.runner == runner]
            ax.plot([r.time for r in mine], [get(r) for r in mine], style, label=runner)
        if "compile" in title:
            for runner, style in zip(_RUNNERS, ("o--", "s--")):
                mine = [r for r in rows if r.runner == runner]
                ax.plot(
                    [r.time for r in mine],
                    [r.gradient.build_s for r in mine],
                    style,
                    label=f"{runner} gradient",
                )
        ax.set(title=title, xlabel="time steps T", xscale="log", yscale="log")
        ax.legend(fontsize=8)
    fig.suptitle("static_rnn vs dynamic_rnn as T grows")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_history(history: dict, path, metric_name: str, baseline: float | None = None) -> None:
    """Draw the loss per step and the train/test metric per epoch to ``path`` (e.g. a PNG).

    **Arguments:** ``history`` from :func:`recurrax.apps.train.train` (``loss`` and ``metric``
    per step, ``test_metric`` per epoch), ``path``, ``metric_name`` (axis label), ``baseline``
    (a horizontal reference line on the metric panel, e.g. the last-value MSE).
    """
    plt = pyplot()
    loss, metric = np.asarray(history["loss"]), np.asarray(history["metric"])
    test = np.asarray(history["test_metric"])
    per_epoch = len(loss) // max(len(test), 1)
    epochs = np.arange(1, len(test) + 1)
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(np.arange(1, len(loss) + 1), loss, lw=0.6, alpha=0.5, label="per step")
    if per_epoch:
        means = loss[: len(test) * per_epoch].reshape(len(test), per_epoch).mean(1)
        ax_loss.plot(epochs * per_epoch, means, lw=1.8, label="epoch mean")
    ax_loss.set(xlabel="step", ylabel="training loss", yscale="log", title="loss")
    ax_loss.legend()
    if per_epoch:
        train = metric[: len(test) * per_epoch].reshape(len(test), per_epoch).mean(1)
        ax_metric.plot(epochs, train, marker=".", label=f"train {metric_name}")
    ax_metric.plot(epochs, test, marker=".", label=f"test {metric_name}")
    if baseline is not None:
        ax_metric.axhline(baseline, color="grey", ls="--", label="last-value baseline")
    ax_metric.set(xlabel="epoch", ylabel=metric_name, title=metric_name)
    if metric_name == "mse":
        ax_metric.set_yscale("log")
    ax_metric.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_ratios(rows: list[dict], path) -> None:
    """Bars of each peer's time as a ratio to PyTorch ``nn.*``, per configuration (log scale).

    **Arguments:** ``rows`` from :func:`recurrax.apps.bench_report.summarize`; ``path``.
    """
    plt = pyplot()
    modes = ("fwd", "fwd+bwd")
    shown = ("recurrax", "static", "torch_1t", "torch_cells", "flax")
    fig, axes = plt.subplots(len(modes), 1, figsize=(12, 4.5 * len(modes)), squeeze=False)
    for ax, mode in zip(axes[:, 0], modes):
        sub = [r for r in rows if r["mode"] == mode]
        xs = np.arange(len(sub))
        width = 0.8 / len(shown)
        for k, impl in enumerate(shown):
            vals = [r["ratio"].get(impl) or np.nan for r in sub]
            ax.bar(xs + (k - len(shown) / 2 + 0.5) * width, vals, width, label=impl)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        labels = [f"{r['cell']}\n" + ",".join(map(str, r["shape"])) for r in sub]
        ax.set_xticks(xs, labels, fontsize=7)
        ax.set_xlabel("cell, (B, T, I, H)", fontsize=8)
        ax.set_ylabel("time / PyTorch nn.* time")
        ax.set_title(f"{mode}: below 1 is faster than PyTorch nn.*")
        ax.legend(fontsize=8, ncol=len(shown))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
