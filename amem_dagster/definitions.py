"""The composition root: assets, checks, jobs, sensors, resources and executor of the amem_dagster code location."""

from __future__ import annotations

import os
import warnings

from dagster import (
    AssetSelection,
    BetaWarning,
    Definitions,
    ExecutorDefinition,
    PreviewWarning,
    define_asset_job,
    in_process_executor,
)

from amem_dagster.observability import logs, tracing
from amem_dagster.settings import Settings

# Chosen on purpose: single-run backfill policies (beta) and tenant-partitioned asset checks (preview).
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)
# Dagster stores a run's events one INSERT at a time unless this is set, and a run over 200 tenant partitions
# writes hundreds of materializations: about 12 s of a 70 s run (bench/pipeline.py). Dagster reads it per call,
# so setting it where the code location loads (the webserver, the daemon and every run worker) is enough; an
# operator's own value wins.
os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", "1000")
from assets.checks import memory_stores_agree
from assets.forget_subject import forget_subject_job
from assets.memory_embeddings import memory_embeddings
from assets.memory_events import memory_events
from assets.memory_stats import memory_stats
from assets.partitions import TENANTS
from assets.retention_purge import build_retention_purge_asset
from resources.sets import resource_set
from sensors.batching import BatchPolicy
from sensors.gdpr_purge_schedule import build_gdpr_purge_schedule
from sensors.memory_embeddings_sensor import build_memory_embeddings_sensor
from sensors.memory_events_sensor import build_memory_events_sensor

memory_ingest_job = define_asset_job(
    "memory_ingest_job",
    selection=AssetSelection.assets(memory_events, memory_embeddings),
    partitions_def=TENANTS,
    # Counted by the run coordinator's GPU cap in deployments/dagster.yaml.
    tags={"amem/gpu": "true"},
    description="Store a batch of tenants' new events and embed them (launched by memory_events_sensor).",
)
memory_stats_job = define_asset_job(
    "memory_stats_job",
    selection=AssetSelection.assets(memory_stats),
    partitions_def=TENANTS,
    description="Refresh per-tenant statistics (launched by memory_embeddings_sensor).",
)


def _executor(settings: Settings) -> ExecutorDefinition:
    if settings.deployment == "prod":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    # One process per run: the model loads once per run and steps skip the per-step process start.
    return in_process_executor


def build_definitions(settings: Settings | None = None, *, resources: dict | None = None,
                      events_policy: BatchPolicy | None = None,
                      events_sensor_interval: int | None = None) -> Definitions:
    """The code location; tests and benchmarks pass their own resources (e.g. private topics), batching policy and
    events sensor interval (seconds between ticks)."""
    settings = settings or Settings.from_env()
    # Every Dagster process imports this module: JSON-line logs always, traces when OTLP is configured.
    logs.configure()
    tracing.configure()
    sensor_options = {"policy": events_policy} if events_policy else {}
    if events_sensor_interval is not None:
        sensor_options["minimum_interval_seconds"] = events_sensor_interval
    events_sensor = build_memory_events_sensor(memory_ingest_job, **sensor_options)
    purge_asset = build_retention_purge_asset(settings.regions, {r: settings.retention_for(r) for r in settings.regions})
    gdpr_purge_job = define_asset_job("gdpr_purge_job", selection=AssetSelection.assets(purge_asset),
                                      partitions_def=purge_asset.partitions_def,
                                      description="Retention purge of one region (partition) in every store.")
    return Definitions(
        assets=[memory_events, memory_embeddings, memory_stats, purge_asset],
        asset_checks=[memory_stores_agree],
        jobs=[memory_ingest_job, memory_stats_job, gdpr_purge_job, forget_subject_job],
        sensors=[events_sensor, build_memory_embeddings_sensor(memory_stats_job)],
        schedules=[build_gdpr_purge_schedule(gdpr_purge_job, settings.regions,
                                             enabled=settings.deployment == "prod")],
        resources={**resource_set(settings), **(resources or {})},
        executor=_executor(settings),
    )


defs = build_definitions()
