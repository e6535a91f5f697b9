"""The embedded Milvus: a Milvus Lite gRPC server over AMEM_HOME/milvus.db, so many processes can share it."""

from __future__ import annotations

import sys
from pathlib import Path

from amem_dagster.embedded import process

NAME = "milvus"


def running_uri(home: Path) -> str | None:
    info = process.running(home, NAME)
    return f"http://127.0.0.1:{info['port']}" if info else None


def start(home: Path, data_dir: Path) -> str:
    """Serve `data_dir` unless already served; return the URI. (A Lite file opened directly allows one process.)"""

    def argv(port: int) -> list[str]:
        return [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data_dir),
                "--host", "127.0.0.1", "--port", str(port)]

    info = process.start(home, NAME, argv, timeout=60)
    return f"http://127.0.0.1:{info['port']}"


def stop(home: Path) -> bool:
    return process.stop(home, NAME)
