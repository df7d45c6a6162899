"""Several processes for ``recurrax train``: start them on this machine, or join a run that spans
machines.

A run of ``N`` processes is data parallel over the devices of all of them (the ``"data"`` mesh
axis of :mod:`recurrax.apps.train`): the processes join through ``jax.distributed`` (process 0
hosts the coordinator, the others connect to it), each feeds its own ``1/N`` slice of every
global batch, and the gradients are averaged across processes (through gloo on CPU). Two forms:

- **On one machine**: ``recurrax train ... --num-processes N`` (no ``--process-id``) is a
  launcher. :func:`run_local` picks a free local port, starts ``N`` child processes of the same
  command with ``--process-id i --coordinator 127.0.0.1:PORT`` added, each on the CPU platform
  with one CPU device, and waits for them. Process 0 prints the progress and the results (its
  output is the launcher's); the others print nothing. When a child fails, the launcher stops
  the others and ends with one line naming the process and its error.
- **Across machines**: each machine runs ``recurrax train ... --num-processes N --process-id i
  --coordinator HOST:PORT`` (``HOST``: process 0's machine; no children are started) and
  :func:`join` connects it to the others before JAX touches a device.

Joining is bounded: :func:`join` gives up after ``--coordinator-timeout`` seconds (a coordinator
that does not answer, or processes that never come) with one line ``recurrax train: error:
...`` and exit status 2. (JAX itself would abort the process with a native stack trace, so a
watchdog thread ends it first.)
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .options import CommandError, Interrupted, UsageError

__all__ = [
    "LOCAL_HOST",
    "plan",
    "free_port",
    "child_environment",
    "run_local",
    "join",
    "joined",
]

LOCAL_HOST = "127.0.0.1"
_POLL_S = 0.05  # how often the launcher looks at its children
_RELAY_JOIN_S = 5.0  # after the children ended, the last lines of process 0 are copied
_DEFER_S = 1.0  # after a failure elsewhere, how long process 0 gets to report it itself
_INTERRUPT_GRACE_S = 60.0  # after Ctrl-C: time for the children to save and stop
_AFTER_LEAD_S = 60.0  # once process 0 is done, the others end within this or are stopped
_NATIVE_FATAL = re.compile(r"F\d{4} [\d:.]+ +\d+ \S+:\d+\] (.*)")  # a native abort's reason
_JAX_MARGIN_S = 30  # JAX's own joining deadline lies this far behind the watchdog's
_FORCED_DEVICES = "--xla_force_host_platform_device_count"
_LAUNCHER_ENV = "RECURRAX_LAUNCHER_PID"  # set in a child of run_local: who to die with


def plan(
    num_processes: int, process_id: int | None, coordinator: str | None, batch_size: int
) -> str:
    """What a ``recurrax train`` command with these settings does: ``"single"`` (one process,
    no ``jax.distributed``), ``"launch"`` (start ``num_processes`` children here: see
    :func:`run_local`) or ``"join"`` (be process ``process_id`` of a run: see :func:`join`).

    **Raises** :class:`~recurrax.apps.options.UsageError` (before any work) for a
    ``num_processes`` below 1, a ``process_id`` out of range or without ``coordinator`` (or the
    reverse), and a ``batch_size`` that the processes do not divide.
    """
    if num_processes < 1:
        raise UsageError(f"--num-processes must be a positive integer; got {num_processes}.")
    if process_id is not None and coordinator is None:
        raise UsageError(
            "--process-id needs --coordinator HOST:PORT (where process 0 listens); without "
            "both, --num-processes N starts all N processes on this machine."
        )
    if coordinator is not None and process_id is None:
        raise UsageError(
            f"--coordinator needs --process-id: which of the {num_processes} processes this "
            f"one is, from 0 to {num_processes - 1}."
        )
    if process_id is not None and not 0 <= process_id < num_processes:
        raise UsageError(
            f"--process-id {process_id} is out of range for --num-processes {num_processes}: "
            f"it must be from 0 to {num_processes - 1}."
        )
    if batch_size % num_processes:
        raise UsageError(
            f"--batch-size {batch_size} must be divisible by --num-processes {num_processes}: "
            f"each process feeds an equal slice of the global batch; pick a multiple of "
            f"{num_processes}."
        )
    if coordinator is not None:
        return "join"
    return "launch" if num_processes > 1 else "single"


def free_port(host: str = LOCAL_HOST) -> int:
    """A TCP port on ``host`` that nothing listens on now (the system's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def child_environment(environ=None) -> dict[str, str]:
    """The environment of a child of :func:`run_local`: ``environ`` (default ``os.environ``) on
    the CPU platform (``JAX_PLATFORMS=cpu``) with one CPU device (any
    ``--xla_force_host_platform_device_count`` dropped from ``XLA_FLAGS``), importing this same
    ``recurrax`` (its source directory first on ``PYTHONPATH``), unbuffered."""
    env = dict(os.environ if environ is None else environ)
    env["JAX_PLATFORMS"] = "cpu"
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(_FORCED_DEVICES)]
    if flags:
        env["XLA_FLAGS"] = " ".join(flags)
    else:
        env.pop("XLA_FLAGS", None)
    source = str(Path(__file__).resolve().parents[2])  # the directory holding recurrax/
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"  # process 0's lines reach the launcher as they are printed
    return env


def _follow_launcher() -> None:
    """In a child of :func:`run_local` (Linux): be killed when the launcher dies, even by
    SIGKILL, so that no child outlives it; end at once if it is gone already."""
    launcher = os.environ.get(_LAUNCHER_ENV)
    if launcher is None or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(launcher):  # it died before the line above
        os._exit(1)


def _last_line(stream) -> str:
    """The message a failed child left on its stderr: its ``recurrax train: ...`` line, else
    the last line (a traceback's exception, a native abort's reason)."""
    stream.seek(0)
    lines = [ln.strip() for ln in stream.read().decode(errors="replace").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("@")]
    for line in reversed(lines):
        for label in ("error: ", "interrupted: "):
            head = f"recurrax train: {label}"
            if line.startswith(head):
                return line[len(head) :]
    fatal = [m[1] for m in map(_NATIVE_FATAL.match, lines) if m]
    if fatal:
        return fatal[-1]
    return lines[-1] if lines else "(it printed nothing)"


def _status(code: int) -> str:
    return f"exit status {code}" if code >= 0 else f"killed by signal {-code}"


def _stop(children) -> None:
    """Kill every child still running, and reap them all. SIGKILL, as a joined process takes
    SIGTERM for a notice of preemption and goes on; checkpoints are written atomically, so a
    kill during a save leaves the earlier ones whole."""
    for child in children:
        if child.poll() is None:
            child.kill()
    for child in children:
        child.wait()


def run_local(argv: list[str], num_processes: int, *, executable: str | None = None) -> int:
    """Run ``recurrax train`` as ``num_processes`` local processes joined through
    ``jax.distributed``; return the exit status of the run.

    **Arguments:**

    - ``argv``: the command's arguments after ``recurrax`` (``["train", ..., "--num-processes",
      "2"]``) without ``--process-id`` and ``--coordinator``; child ``i`` runs them with
      ``--process-id i --coordinator 127.0.0.1:PORT`` added, ``PORT`` a free local port.
    - ``num_processes``: how many children, at least 2.
    - ``executable``: the Python that runs them (default ``sys.executable``).

    Child 0's stdout (progress lines, results) is copied to this process's, its stderr (the live
    bar, its own error line) is this process's; the others' output is kept and shown only when
    one fails. Each child runs in its own process group and dies with the launcher.

    **Returns** 0 when every child succeeded. When one fails, the others are killed, and the
    status is that of process 0 if it failed the same way (its one line is printed already);
    otherwise a :class:`~recurrax.apps.options.CommandError` is raised naming the process and
    its last error line (status: the child's 1, 2 or 130, else 1), as it is when the others
    have not ended 60 s after process 0 succeeded. Ctrl-C is passed on to every child once;
    they save (with ``--save``) and stop within 60 s or are killed.
    """
    address = f"{LOCAL_HOST}:{free_port()}"
    env = {**child_environment(), _LAUNCHER_ENV: str(os.getpid())}
    python = executable or sys.executable
    children, logs, relay = [], [], None
    with contextlib.ExitStack() as files:
        try:
            for i in range(num_processes):
                log = None if i == 0 else files.enter_context(tempfile.TemporaryFile())
                command = [python, "-m", "recurrax.apps.cli", *argv]
                command += ["--process-id", str(i), "--coordinator", address]
                children.append(
                    subprocess.Popen(
                        command,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE if i == 0 else subprocess.DEVNULL,
                        stderr=log,
                        start_new_session=True,  # Ctrl-C reaches the launcher, which passes it
                    )
                )
                logs.append(log)
                if i == 0:
                    relay = threading.Thread(target=_relay, args=(children[0].stdout,))
                    relay.start()
            return _supervise(children, logs)
        finally:
            _stop(children)
            if relay is not None:
                relay.join(_RELAY_JOIN_S)


def _relay(stream) -> None:
    """Copy process 0's stdout to this process's, line by line, without the notice gloo prints
    there when it connects (``[Gloo] Rank 0 is connected to ...``)."""
    with stream:
        for line in stream:
            if not line.startswith(b"[Gloo] "):
                sys.stdout.write(line.decode(errors="replace"))
                sys.stdout.flush()


def _supervise(children, logs) -> int:
    n, lead_done = len(children), None
    try:
        while True:
            codes = [c.poll() for c in children]
            failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
            if not failed:
                if all(code == 0 for code in codes):
                    return 0
                if codes[0] == 0 and lead_done is None:
                    lead_done = time.monotonic()
                if lead_done is not None and time.monotonic() - lead_done > _AFTER_LEAD_S:
                    late = [i for i, code in enumerate(codes) if code is None]
                    _stop(children)
                    raise CommandError(
                        f"process {late[0]} of {n} had not ended {_AFTER_LEAD_S:.0f} s after "
                        "process 0 finished; the processes still running were stopped."
                    )
                time.sleep(_POLL_S)
                continue
            first = failed[0]
            if first != 0:  # process 0 may be reporting the same mistake: let it
                with contextlib.suppress(subprocess.TimeoutExpired):
                    children[0].wait(_DEFER_S)
            code, lead = children[first].returncode, children[0].returncode
            if lead == code and code in (1, 2, 130):
                return lead  # process 0 failed the same way, and its one line is printed
            detail = "see its output above" if first == 0 else _last_line(logs[first])
            error = CommandError(
                f"process {first} of {n} failed ({_status(code)}): {detail}; the other "
                "processes were stopped."
            )
            error.status = code if code in (1, 2, 130) else 1
            _stop(children)
            raise error
    except KeyboardInterrupt:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        deadline = time.monotonic() + _INTERRUPT_GRACE_S
        for child in children:
            try:
                child.wait(max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                _stop(children)
                raise Interrupted(
                    f"stopped by Ctrl-C; the processes did not all stop within "
                    f"{_INTERRUPT_GRACE_S:.0f} s and were killed."
                ) from None
        if children[0].returncode == 130:
            return 130  # process 0 said where it stopped and what it saved
        raise Interrupted("stopped by Ctrl-C.") from None


def _reachable(address: str, timeout: float = 1.0) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def join(
    coordinator: str,
    num_processes: int,
    process_id: int,
    timeout: float,
    *,
    prog: str = "recurrax train",
) -> None:
    """Join process ``process_id`` of ``num_processes`` to the run coordinated at
    ``coordinator`` (``jax.distributed.initialize``), with CPU collectives through gloo.

    Call it before anything touches a JAX device. Process 0 listens on ``coordinator``'s port
    (on every address of its machine); the others connect to it. It returns once all
    ``num_processes`` have joined; after that ``jax.devices()`` lists every process's devices.

    **Arguments:** ``coordinator`` (``"HOST:PORT"``), ``num_processes``, ``process_id``,
    ``timeout`` (seconds to wait for all of them to join), ``prog`` (the name in the error
    line).

    **Raises** :class:`~recurrax.apps.options.UsageError` when process 0 cannot listen on the
    port. When the processes have not all joined within ``timeout`` seconds, it prints one line
    ``<prog>: error: ...`` on stderr (naming the address, and whether anything answered there)
    and ends the process with exit status 2: JAX would abort it some seconds later, with a
    native stack trace, and no Python code can catch that.
    """
    _follow_launcher()
    import jax

    # gloo is JAX's default CPU collectives since 0.4.36; older versions had none across
    # processes.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    start = time.monotonic()

    def give_up():
        elapsed = time.monotonic() - start
        if process_id != 0 and not _reachable(coordinator):
            why = (
                f"nothing answered at --coordinator {coordinator} within {elapsed:.0f} s. "
                "Start process 0 first (it listens there), or check the host and port"
            )
        else:
            others = "the others" if process_id == 0 else "all of them"
            here = ", and HOST must be this machine" if process_id == 0 else ""
            why = (
                f"--coordinator {coordinator}: not all {num_processes} processes joined within "
                f"{elapsed:.0f} s. Start {others} with the same --coordinator and "
                f"--num-processes {num_processes}, each with its own --process-id{here}"
            )
        print(f"{prog}: error: {why} (or raise --coordinator-timeout).", file=sys.stderr)
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(UsageError.status)

    watchdog = threading.Timer(timeout, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(
            coordinator,
            num_processes,
            process_id,
            initialization_timeout=math.ceil(timeout) + _JAX_MARGIN_S,
        )
    except RuntimeError as e:  # JaxRuntimeError: process 0 could not listen there
        raise UsageError(
            f"--coordinator {coordinator}: process {process_id} could not join ({e}); is the "
            "port in use, or the address not this machine's?"
        ) from None
    finally:
        watchdog.cancel()


def joined() -> bool:
    """Whether this process has joined a run through ``jax.distributed`` (without importing
    JAX when nothing has)."""
    jax = sys.modules.get("jax")
    return jax is not None and jax.distributed.is_initialized()
