"""Settings and the resources a command talks through, built from the running (or external) services."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from amem_dagster.embedded import services
from amem_dagster.errors import ServiceUnavailable
from amem_dagster.settings import Settings

if TYPE_CHECKING:
    from resources.embedder import EmbedderResource
    from resources.kafka import KafkaResource
    from resources.milvus import MilvusResource
    from resources.postgres import PostgresResource


def settings() -> Settings:
    """AMEM_* settings of this process; a bad value raises SettingsError (one line, exit 2)."""
    return Settings.from_env()


def addresses(config: Settings) -> dict[str, str]:
    """AMEM_PG_DSN / AMEM_KAFKA_BOOTSTRAP / AMEM_MILVUS_URI; raises ServiceUnavailable when one is not up."""
    return services.connection_env(config)


def kafka(config: Settings, env: dict[str, str]) -> KafkaResource:
    from resources.kafka import KafkaResource

    # librdkafka would log every failed reconnect (20 lines a second); the CLI reports failures in one line.
    return KafkaResource(bootstrap_servers=env["AMEM_KAFKA_BOOTSTRAP"], client_id="amem-cli",
                         events_partitions=config.events_partitions, extra_config={"log_level": "2"})


def require_kafka(resource: KafkaResource, timeout: float = 5.0) -> None:
    """Raise ServiceUnavailable in one line when the brokers do not answer a metadata request in time."""
    from confluent_kafka import KafkaException

    try:
        resource.admin().list_topics(timeout=timeout)
    except KafkaException as exc:
        raise ServiceUnavailable(
            f"Kafka at {resource.bootstrap_servers} did not answer within {timeout:.0f}s: {exc.args[0].str()}"
        ) from None


def postgres(config: Settings, env: dict[str, str]) -> PostgresResource:
    from resources.postgres import PostgresResource

    return PostgresResource(dsn=env["AMEM_PG_DSN"], regions=",".join(config.regions))


def milvus(env: dict[str, str]) -> MilvusResource:
    from resources.milvus import MilvusResource

    return MilvusResource(uri=env["AMEM_MILVUS_URI"])


def embedder() -> EmbedderResource:
    from resources.embedder import EmbedderResource

    config = settings()
    return EmbedderResource(model=config.embed_model or "", backend=config.embed_backend)


@contextmanager
def closing_pools() -> Iterator[None]:
    """Close the process's Postgres pools when a command ends, so the CLI exits promptly."""
    try:
        yield
    finally:
        from resources.postgres import close_pools

        close_pools()
