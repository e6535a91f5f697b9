"""Prometheus metrics in one registry of this project's own; runs and sensors push it to a Pushgateway.

Labels stay bounded: a store name, a rejection code, a topic and partition, a region. Never a tenant or event id.
`amem metrics serve` exposes a separate registry (ExporterMetrics) of gauges it computes from the stores.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, push_to_gateway

from amem_dagster.observability.logs import fields

PUSHGATEWAY_VARIABLE = "AMEM_PUSHGATEWAY_URL"
INSTANCE_VARIABLE = "AMEM_METRICS_INSTANCE"
PUSH_TIMEOUT_SECONDS = 5.0
# `store` label values: event rows in Postgres, vectors in pgvector, vectors in Milvus.
POSTGRES, PGVECTOR, MILVUS = "postgres", "pgvector", "milvus"
_REASON_RE = re.compile(r"^[a-z][a-z0-9_]{1,30}$")

log = logging.getLogger("amem.metrics")

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_INGESTED = Counter(
    "amem_events_ingested", "Valid memory events read from memory.events by memory_events_sensor.",
    registry=REGISTRY)
EVENTS_DEAD_LETTERED = Counter(
    "amem_events_dead_lettered", "Messages sent to memory.events.dlq, by reason (the amem-error code).",
    ["reason"], registry=REGISTRY)
STORE_WRITES = Counter(
    "amem_store_writes", "Rows written (inserted or upserted) per store.", ["store"], registry=REGISTRY)
STORE_READS = Counter(
    "amem_store_reads", "Read operations (searches, counts, backlog queries) per store.", ["store"],
    registry=REGISTRY)
EMBEDDING_BATCH_SECONDS = Histogram(
    "amem_embedding_batch_seconds", "Time to encode one batch (chunk) of texts with the embedding model.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160), registry=REGISTRY)
EMBEDDING_BATCH_SIZE = Histogram(
    "amem_embedding_batch_size", "Texts per encoded batch.",
    buckets=(1, 8, 32, 128, 256, 512, 1024, 2048), registry=REGISTRY)
STORE_WRITE_SECONDS = Histogram(
    "amem_store_write_seconds", "Latency of one write call (a batch of rows) per store.", ["store"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=REGISTRY)
SEARCH_SECONDS = Histogram(
    "amem_search_seconds", "Latency of one nearest-neighbour search per store.", ["store"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=REGISTRY)
SENSOR_PENDING_EVENTS = Gauge(
    "amem_sensor_pending_events", "Valid events memory_events_sensor has read but not yet put in a run.",
    registry=REGISTRY)
LAST_PUSH = Gauge(
    "amem_last_push_timestamp_seconds", "When this process last pushed its metrics (Unix time).",
    registry=REGISTRY)


@contextmanager
def timed(histogram: Histogram, store: str | None = None) -> Iterator[None]:
    """Observe the duration of the block (also when it raises) in `histogram`, labelled by `store` if given."""
    started = time.perf_counter()
    try:
        yield
    finally:
        (histogram.labels(store) if store else histogram).observe(time.perf_counter() - started)


def wrote(store: str, rows: int) -> None:
    if rows > 0:
        STORE_WRITES.labels(store).inc(rows)


def read(store: str, operations: int = 1) -> None:
    STORE_READS.labels(store).inc(operations)


def dead_lettered(reason: str, messages: int = 1) -> None:
    # Codes are literals of amem_dagster.events; anything else would be a label-cardinality bug.
    EVENTS_DEAD_LETTERED.labels(reason if _REASON_RE.match(reason) else "other").inc(messages)


def instance_name(environ: dict[str, str] | None = None) -> str:
    """The Pushgateway `instance` grouping label: AMEM_METRICS_INSTANCE or the host (the pod on Kubernetes)."""
    env = os.environ if environ is None else environ
    return env.get(INSTANCE_VARIABLE) or socket.gethostname()


def push(job: str, *, environ: dict[str, str] | None = None) -> bool:
    """Push REGISTRY to the Pushgateway at AMEM_PUSHGATEWAY_URL under {job, instance}; False when unset or failed.

    A push replaces the group's previous values, so each process pushes everything it counted so far. A failed
    push is logged and never fails the run or tick that pushes.
    """
    env = os.environ if environ is None else environ
    url = env.get(PUSHGATEWAY_VARIABLE)
    if not url:
        return False
    LAST_PUSH.set_to_current_time()
    try:
        push_to_gateway(url, job=job, grouping_key={"instance": instance_name(env)}, registry=REGISTRY,
                        timeout=PUSH_TIMEOUT_SECONDS)
    except Exception as exc:  # noqa: BLE001 - metrics must never break the pipeline
        log.warning("metrics push failed", extra=fields(job=job, error=type(exc).__name__))
        return False
    return True


class ExporterMetrics:
    """The gauges `amem metrics serve` computes periodically, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.consumer_lag = Gauge(
            "amem_consumer_lag",
            "Messages of a topic partition beyond its sensor's cursor: end offset minus cursor offset. On the "
            "embedded Tansu broker the end offset is probed by reading; if the probe runs out of budget the "
            "figure is a lower bound.", ["topic", "partition"], registry=self.registry)
        self.consumer_lag_exact = Gauge(
            "amem_consumer_lag_exact", "1 when the topic's end offsets were confirmed by reading to the end, "
            "0 when the lag is a lower bound.", ["topic"], registry=self.registry)
        self.cursor_pending = Gauge(
            "amem_cursor_pending_events", "Valid events a sensor has read but not yet put in a run (its cursor).",
            ["sensor"], registry=self.registry)
        self.pending_events = Gauge(
            "amem_pending_events", "Events stored in Postgres with no vector yet (the embedding backlog), per region.",
            ["region"], registry=self.registry)
        self.store_rows = Gauge(
            "amem_store_rows", "Rows per store and region (Milvus: collection statistics, which count deleted "
            "rows until compaction).", ["store", "region"], registry=self.registry)
        self.tenants = Gauge("amem_tenants", "Tenants registered in amem.tenants.", registry=self.registry)
        self.last_success = Gauge(
            "amem_exporter_last_success_timestamp_seconds", "When each source was last read successfully.",
            ["source"], registry=self.registry)
        self.errors = Counter(
            "amem_exporter_errors", "Failed collections per source (kafka, dagster, postgres, milvus).", ["source"],
            registry=self.registry)
