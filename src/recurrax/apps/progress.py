"""Progress on the terminal, the same for every subcommand and benchmark.

One bar (rich, on stderr) in two uses: :class:`TaskBar`, a known number of tasks (``recurrax
demo``'s measurements, ``recurrax bench``'s builds and timings), and the training run's
reporter (:func:`make_reporter`: steps, loss, metric, steps/s). Every caller takes a mode from
:data:`MODES` and :func:`resolve` turns it into what is shown:

- ``"rich"``: the live bar on stderr (``"plain"`` when rich is not installed);
- ``"plain"``: lines (a task bar: one per task on stderr; training: one per epoch, through the
  caller's ``echo``);
- ``"none"``: nothing;
- ``"auto"``: ``"rich"`` when stderr is a terminal, else ``"plain"``.
"""

from __future__ import annotations

import sys
import time

import numpy as np

__all__ = ["MODES", "resolve", "TaskBar", "make_reporter"]

MODES = ("auto", "rich", "plain", "none")


def resolve(mode: str, stream=None) -> str:
    """``"rich"``, ``"plain"`` or ``"none"`` for ``mode`` in :data:`MODES`.

    ``stream`` (default ``sys.stderr``) decides ``"auto"``: the bar on a terminal, else lines.
    ``"rich"`` without rich installed falls back to ``"plain"``.
    """
    if mode not in MODES:
        raise ValueError(f"progress must be 'auto', 'rich', 'plain' or 'none'; got {mode!r}.")
    if mode == "auto":
        mode = "rich" if (stream or sys.stderr).isatty() else "plain"
    if mode == "rich":
        try:
            import rich  # noqa: F401
        except ImportError:
            return "plain"
    return mode


def _bar(*columns, transient: bool = True):
    """The bar: description, bar, done/total, then ``columns`` (rich ``ProgressColumn``s), on
    stderr. ``transient``: it disappears when its ``with`` block ends."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *columns,
        console=Console(stderr=True),
        transient=transient,
    )


class TaskBar:
    """Progress through ``total`` tasks on stderr; a context manager.

    ``mode`` as in :func:`resolve`. With ``"rich"`` the bar shows the current task and the time
    elapsed; with ``"plain"`` each task is a line ``[k/total] what ... 1.23 s``.
    :meth:`start` begins a task (ending the one before, if any); :meth:`finish` ends it.

    Example::

        with TaskBar(2, "plain") as bar:
            for what in ("build", "time"):
                bar.start(what)
                ...
                bar.finish()
    """

    def __init__(self, total: int, mode: str = "auto"):
        self.total, self.done = total, 0
        self.mode = resolve(mode)
        self._t0: float | None = None  # the start of the task in progress
        self.bar = None
        if self.mode == "rich":
            from rich.progress import TimeElapsedColumn

            self.bar = _bar(TimeElapsedColumn())
            self._task = self.bar.add_task("starting", total=total)

    def __enter__(self):
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self._t0 is not None and exc[0] is None:
            self.finish()
        return False if self.bar is None else self.bar.__exit__(*exc)

    def start(self, what: str) -> None:
        """Begin the next task, described by ``what``."""
        if self._t0 is not None:
            self.finish()
        self._t0 = time.perf_counter()
        if self.mode == "rich":
            self.bar.update(self._task, description=what)
        elif self.mode == "plain":
            print(f"[{self.done + 1}/{self.total}] {what} ...", end="", file=sys.stderr, flush=True)

    def finish(self, note: str | None = None) -> None:
        """End the current task; a plain line ends with ``note`` (default: its seconds)."""
        seconds = time.perf_counter() - (self._t0 or time.perf_counter())
        self._t0 = None
        self.done += 1
        if self.mode == "rich":
            self.bar.update(self._task, completed=self.done)
        elif self.mode == "plain":
            print(f" {f'{seconds:.2f} s' if note is None else note}", file=sys.stderr, flush=True)


_REFRESH_STEPS = 10  # read the latest loss back from the device this often (it syncs)


class _Reporter:
    """Training progress as plain lines: one per epoch. Also the base of the rich one."""

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
    """The bar, with the loss, the metric, the last test metric, steps/s and time left."""

    def __init__(self, total: int, start: int, metric_name: str, echo):
        from rich.progress import TextColumn, TimeRemainingColumn

        super().__init__(total, start, metric_name, echo)
        self.bar = _bar(
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn(metric_name + " {task.fields[metric]:.4f}"),
            TextColumn("test {task.fields[test]}"),
            TextColumn("{task.fields[rate]:.0f} steps/s"),
            TimeRemainingColumn(),
            transient=False,
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


def make_reporter(mode: str, total: int, start: int, metric_name: str, echo):
    """The progress of a training run, for ``mode`` in :data:`MODES` (see :func:`resolve`).

    **Arguments:** ``total`` steps of the run, ``start`` step (after a resume), ``metric_name``
    for the labels, ``echo`` (the printer of the plain lines).

    **Returns:** a context manager with ``advance(step, (loss, metric))`` after every step and
    ``epoch(epoch, epochs, history)`` after every epoch.
    """
    mode = resolve(mode)
    if mode == "rich":
        return _RichReporter(total, start, metric_name, echo)
    return _Reporter(total, start, metric_name, echo if mode == "plain" else lambda *_: None)
