"""Detached local server processes (broker, Milvus Lite) recorded in the state file, found again by pid and port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from amem_dagster.embedded import state


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, port), timeout=0.3).close()
        return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); its state letter tells.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def running(home: Path, name: str) -> dict | None:
    """The state entry of service `name` when its process is alive and its port answers."""
    info = state.read(home).get(name)
    if info and pid_alive(info["pid"]) and port_open(info["port"]):
        return info
    return None


def start(
    home: Path,
    name: str,
    argv: Callable[[int], Sequence[str]],
    *,
    timeout: float = 30.0,
    extra: dict | None = None,
) -> dict:
    """Start `argv(port)` detached (it survives this process and Ctrl-C) unless it already runs."""
    info = running(home, name)
    if info:
        return info
    home.mkdir(parents=True, exist_ok=True)
    previous = state.read(home).get(name) or {}
    # Reuse the last port so addresses stay stable across restarts, unless something else took it.
    port = previous.get("port") if previous.get("port") and not port_open(previous["port"]) else free_port()
    log_path = home / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv(port)), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"embedded {name} did not start; see {log_path}")
        time.sleep(0.05)
    info = {"pid": proc.pid, "port": port, **(extra or {})}
    state.update(home, **{name: info})
    return info


def stop(home: Path, name: str) -> bool:
    """Stop service `name` if it runs; True when something was stopped."""
    info = state.read(home).get(name)
    if not info or not pid_alive(info["pid"]):
        return False
    os.kill(info["pid"], signal.SIGTERM)
    deadline = time.monotonic() + 15
    while pid_alive(info["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(info["pid"]):
        os.kill(info["pid"], signal.SIGKILL)
    return True
