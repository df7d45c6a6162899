"""Progress on the terminal: the task bar of ``recurrax demo`` and ``recurrax bench``; the
training run's live bar (rich) or plain lines, and its loss/metric plot."""

from __future__ import annotations

import sys
import time

import numpy as np

__all__ = ["task_bar", "make_reporter", "plot_history"]


def task_bar(mode: str):
    """A rich bar on stderr (description, bar, done/total, time elapsed) or ``None``.

    ``mode``: ``"rich"`` (a bar if rich is installed), ``"auto"`` (a bar if rich is installed
    and stderr is a terminal), ``"plain"`` or ``"none"`` (no bar: the caller prints lines or
    nothing). The bar is transient: it disappears when its ``with`` block ends.
    """
    if mode not in ("auto", "rich", "plain", "none"):
        raise ValueError(f"progress must be 'auto', 'rich', 'plain' or 'none'; got {mode!r}.")
    if mode not in ("rich", "auto") or (mode == "auto" and not sys.stderr.isatty()):
        return None
    try:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )
    except ImportError:
        return None
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )


_REFRESH_STEPS = 10  # read the latest loss back from the device this often (it syncs)


class _Reporter:
    """Plain reporting: one line per epoch. Also the base of the rich bar."""

    def __init__(self, total: int, start: int, metric_name: str, echo):
        self.total, self.start, self.metric_name, self.echo = total, start, metric_name, echo
        self.t0 = time.perf_counter()

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        return False

    def rate(self, step: int) -> float:
        return (step - self.start) / max(time.perf_counter() - self.t0, 1e-9)

    def advance(self, step: int, latest) -> None:
        """Called after every step with that step's ``(loss, metric)`` device arrays."""

    def epoch(self, epoch: int, epochs: int, history: dict) -> None:
        """Called at the end of every epoch, after the test metric was appended."""
        per_epoch = self.total // epochs
        recent = slice(-per_epoch, None)
        self.echo(
            f"epoch {epoch:3d}/{epochs}  step {epoch * per_epoch:5d}  "
            f"loss {np.mean(history['loss'][recent]):.4f}  "
            f"train {self.metric_name} {np.mean(history['metric'][recent]):.4f}  "
            f"test {self.metric_name} {history['test_metric'][-1]:.4f}  "
            f"{self.rate(epoch * per_epoch):.0f} steps/s"
        )


class _RichReporter(_Reporter):
    """A live bar: steps done, loss, metric, steps/s and time left."""

    def __init__(self, total: int, start: int, metric_name: str, echo):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        super().__init__(total, start, metric_name, echo)
        self.bar = Progress(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn(metric_name + " {task.fields[metric]:.4f}"),
            TextColumn("test {task.fields[test]}"),
            TextColumn("{task.fields[rate]:.0f} steps/s"),
            TimeRemainingColumn(),
        )
        self.task = self.bar.add_task(
            "train",
            total=total,
            completed=start,
            loss=float("nan"),
            metric=float("nan"),
            test="-",
            rate=0.0,
        )

    def __enter__(self):
        super().__enter__()
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def advance(self, step: int, latest) -> None:
        fields = {"completed": step, "rate": self.rate(step)}
        if step % _REFRESH_STEPS == 0:
            loss, metric = (float(v) for v in latest)
            fields.update(loss=loss, metric=metric)
        self.bar.update(self.task, **fields)

    def epoch(self, epoch: int, epochs: int, history: dict) -> None:
        self.bar.update(self.task, test=f"{history['test_metric'][-1]:.4f}")


def make_reporter(kind: str, total: int, start: int, metric_name: str, echo):
    """A reporter: ``"rich"`` (falls back to ``"plain"`` without rich), ``"plain"`` or ``"none"``.

    **Arguments:** ``total`` steps of the run, ``start`` step (after a resume), ``metric_name``
    for the labels, ``echo`` (the line printer of ``"plain"``).
    """
    if kind not in ("rich", "plain", "none"):
        raise ValueError(f"progress must be 'rich', 'plain' or 'none'; got {kind!r}.")
    if kind == "rich":
        try:
            return _RichReporter(total, start, metric_name, echo)
        except ImportError:
            kind = "plain"
    if kind == "plain":
        return _Reporter(total, start, metric_name, echo)
    return _Reporter(total, start, metric_name, lambda *_: None)


def plot_history(history: dict, path, metric_name: str, baseline: float | None = None):
    """Draw the loss per step and the train/test metric per epoch to ``path`` (e.g. a PNG).

    **Arguments:** ``history`` from :func:`~recurrax._train.train` (``loss`` and ``metric`` per
    step, ``test_metric`` per epoch), ``path``, ``metric_name`` (axis label), ``baseline`` (a
    horizontal reference line on the metric panel, e.g. the last-value MSE).
    """
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("--plot needs matplotlib: pip install 'recurrax[plot]'.") from e
    matplotlib.use("Agg")  # files only: no display is needed
    import matplotlib.pyplot as plt

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
