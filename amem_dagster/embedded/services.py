"""Bring the embedded services up or down as one unit, honouring external services named in the settings."""

from __future__ import annotations

from dataclasses import dataclass

from amem_dagster.embedded import broker, milvus, postgres
from amem_dagster.errors import ServiceUnavailable
from amem_dagster.settings import Settings


@dataclass(frozen=True)
class ServiceStatus:
    """One service as `amem up/down/status` reports it."""

    name: str
    state: str  # started | running | stopped | external | down
    address: str | None = None


def up(settings: Settings) -> list[ServiceStatus]:
    """Start every embedded service that is not configured externally; idempotent."""
    home = settings.home
    home.mkdir(parents=True, exist_ok=True)
    result = []
    if settings.pg_dsn:
        result.append(ServiceStatus("postgres", "external", _redact(settings.pg_dsn)))
    else:
        was = postgres.running_socket_dir(home)
        socket_dir = postgres.start(home)
        result.append(ServiceStatus("postgres", "running" if was else "started", postgres.dsn(socket_dir)))
    if settings.kafka_bootstrap:
        result.append(ServiceStatus("kafka", "external", settings.kafka_bootstrap))
    else:
        was = broker.running_address(home)
        result.append(ServiceStatus("kafka", "running" if was else "started", broker.start(home)))
    if settings.milvus_uri:
        result.append(ServiceStatus("milvus", "external", settings.milvus_uri))
    else:
        was = milvus.running_uri(home)
        uri = milvus.start(home, home / "milvus.db")
        result.append(ServiceStatus("milvus", "running" if was else "started", uri))
    return result


def down(settings: Settings) -> list[ServiceStatus]:
    """Stop what `up` started; data in Postgres and Milvus stays (the broker keeps messages in memory only)."""
    home = settings.home
    result = []
    for name, configured, stopper in (
        ("postgres", settings.pg_dsn, postgres.stop),
        ("kafka", settings.kafka_bootstrap, broker.stop),
        ("milvus", settings.milvus_uri, milvus.stop),
    ):
        if configured:
            result.append(ServiceStatus(name, "external"))
        else:
            result.append(ServiceStatus(name, "stopped" if stopper(home) else "down"))
    return result


def status(settings: Settings) -> list[ServiceStatus]:
    """What runs now, without starting anything."""
    home = settings.home
    socket_dir = postgres.running_socket_dir(home)
    kafka = broker.running_address(home)
    milvus_uri = milvus.running_uri(home)
    return [
        ServiceStatus("postgres", "external", _redact(settings.pg_dsn)) if settings.pg_dsn
        else ServiceStatus("postgres", "running" if socket_dir else "down", socket_dir and postgres.dsn(socket_dir)),
        ServiceStatus("kafka", "external", settings.kafka_bootstrap) if settings.kafka_bootstrap
        else ServiceStatus("kafka", "running" if kafka else "down", kafka),
        ServiceStatus("milvus", "external", settings.milvus_uri) if settings.milvus_uri
        else ServiceStatus("milvus", "running" if milvus_uri else "down", milvus_uri),
    ]


def connection_env(settings: Settings) -> dict[str, str]:
    """AMEM_* addresses of every service, external or embedded; raises when an embedded one is not up."""
    home = settings.home
    env = {}
    if settings.pg_dsn:
        env["AMEM_PG_DSN"] = settings.pg_dsn
    elif socket_dir := postgres.running_socket_dir(home):
        env["AMEM_PG_DSN"] = postgres.dsn(socket_dir)
    if settings.kafka_bootstrap:
        env["AMEM_KAFKA_BOOTSTRAP"] = settings.kafka_bootstrap
    elif address := broker.running_address(home):
        env["AMEM_KAFKA_BOOTSTRAP"] = address
    if settings.milvus_uri:
        env["AMEM_MILVUS_URI"] = settings.milvus_uri
    elif uri := milvus.running_uri(home):
        env["AMEM_MILVUS_URI"] = uri
    missing = {"AMEM_PG_DSN": "postgres", "AMEM_KAFKA_BOOTSTRAP": "kafka", "AMEM_MILVUS_URI": "milvus"}.keys() - env
    if missing:
        raise ServiceUnavailable(
            f"not running: {', '.join(sorted(missing))} — start the embedded services with `amem up` "
            "or point these variables at external services"
        )
    return env


def _redact(dsn: str) -> str:
    """Hide a password in a DSN before it is printed."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return dsn
