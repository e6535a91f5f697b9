"""Run a long-lived child (here `dagster dev`) in its own session and stop it cleanly on Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True)
class Outcome:
    """How the child ended: its exit code and whether we asked it to stop."""

    returncode: int
    stopped_by_signal: bool


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Make SIGTERM raise KeyboardInterrupt like Ctrl-C, so setup steps clean up the same way."""

    def handler(_signum, _frame) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], grace: float = 60.0) -> Outcome:
    """Run `argv` until it exits. The first SIGINT/SIGTERM we get is passed on once as SIGINT (the child is
    in its own session, so a terminal Ctrl-C reaches it only through us); a third one, or `grace` seconds
    without an exit, kills its whole process group."""
    child = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), start_new_session=True,
                             preexec_fn=_default_interrupts)
    requests: list[float] = []

    def forward(_signum, _frame) -> None:
        requests.append(time.monotonic())
        if len(requests) == 1:
            _signal_group(child.pid, signal.SIGINT)
        elif len(requests) >= 3:
            _signal_group(child.pid, signal.SIGKILL)

    previous = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    try:
        while True:
            try:
                code = child.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if requests and time.monotonic() - requests[0] > grace:
                    _signal_group(child.pid, signal.SIGKILL)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    # Whatever the child left behind in its group (webserver, daemon, code servers) goes with it.
    _signal_group(child.pid, signal.SIGTERM)
    return Outcome(returncode=code, stopped_by_signal=bool(requests))


def _default_interrupts() -> None:
    # Started in the background by a non-interactive shell we inherit SIGINT ignored, and an ignored SIGINT
    # survives exec: the child (Python) would then never raise KeyboardInterrupt and never shut down.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
