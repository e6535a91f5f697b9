"""Resource sets per deployment (AMEM_DEPLOYMENT=local|prod): service addresses always come from EnvVars."""

from __future__ import annotations

import os

from dagster import ConfigurableResource, EnvVar

from amem_dagster.settings import Settings
from resources.embedder import EmbedderResource
from resources.kafka import KafkaResource
from resources.milvus import MilvusResource
from resources.placement import PlacementResource
from resources.postgres import PostgresResource


def resource_set(settings: Settings) -> dict[str, ConfigurableResource]:
    """The resources of the code location for `settings.deployment`."""
    prod = settings.deployment == "prod"
    regions = ",".join(settings.regions)
    milvus_token = EnvVar("AMEM_MILVUS_TOKEN") if os.environ.get("AMEM_MILVUS_TOKEN") else ""
    return {
        "kafka": KafkaResource(
            bootstrap_servers=EnvVar("AMEM_KAFKA_BOOTSTRAP"),
            events_partitions=settings.events_partitions,
            replication_factor=3 if prod else 1,
        ),
        "postgres": PostgresResource(dsn=EnvVar("AMEM_PG_DSN"), regions=regions, pool_max_size=8 if prod else 4),
        "milvus": MilvusResource(uri=EnvVar("AMEM_MILVUS_URI"), token=milvus_token),
        "embedder": EmbedderResource(model=settings.embed_model or "", backend=settings.embed_backend,
                                     batch_size=128 if prod else 64),
        "placement": PlacementResource(regions=regions, default_region=settings.default_region,
                                       retention=",".join(f"{r}={d}d" for r, d in settings.retention_days)),
    }
