"""`amem metrics serve | show`: consumer lag, embedding backlog and store sizes as Prometheus gauges.

Runs and sensors push their counters and histograms to a Pushgateway (amem_dagster.observability.metrics); what
no run sees — how far the sensors are behind Kafka, how much is stored — is computed here, periodically, from
the sensors' cursors in the Dagster instance, the brokers' end offsets, Postgres and Milvus.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import typer

from amem_dagster.cli import clients
from amem_dagster.cli.output import console, err_console
from amem_dagster.errors import ServiceUnavailable
from amem_dagster.observability.metrics import ExporterMetrics
from amem_dagster.settings import Settings

app = typer.Typer(help="Prometheus metrics: lag, backlog and store gauges (`serve` for scraping, `show` once).",
                  no_args_is_help=True)

# Sensor → the KafkaResource attribute naming the topic it reads.
SENSOR_TOPICS = {"memory_events_sensor": "events_topic", "memory_embeddings_sensor": "embeddings_topic"}
PROBE_SECONDS = 5.0
DEFAULT_PORT = 9464


def sensor_cursor(instance, name: str) -> str | None:
    """The cursor of sensor `name` in the Dagster instance (the most recently ticked one if several)."""
    from dagster._core.definitions.run_request import InstigatorType

    found = [state for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
             if state.instigator_name == name and state.instigator_data is not None
             and getattr(state.instigator_data, "cursor", None)]
    if not found:
        return None
    latest = max(found, key=lambda s: s.instigator_data.last_tick_timestamp or 0.0)
    return latest.instigator_data.cursor


def dagster_instance(config: Settings):
    """DAGSTER_HOME's instance, or the one `amem dev` writes under $AMEM_HOME/dagster; None when neither exists."""
    from dagster import DagsterInstance

    if os.environ.get("DAGSTER_HOME"):
        return DagsterInstance.get()
    home = config.home / "dagster"
    if (home / "dagster.yaml").is_file():
        return DagsterInstance.from_config(str(home))
    return None


class Collector:
    """Refreshes ExporterMetrics from every source; one failing source never stops the others."""

    def __init__(self, config: Settings, env: dict[str, str], gauges: ExporterMetrics, *,
                 cursor_of: Callable[[str], str | None] | None = None, kafka=None, postgres=None,
                 milvus_uri: str | None = None) -> None:
        self.config = config
        self.gauges = gauges
        self.kafka = kafka or clients.kafka(config, env)
        self.postgres = postgres or clients.postgres(config, env)
        self.milvus_uri = milvus_uri or env["AMEM_MILVUS_URI"]
        self._cursor_of = cursor_of
        self._milvus_client = None

    def collect(self) -> dict[str, str]:
        """Refresh every gauge; returns source → error line for the sources that failed."""
        failed: dict[str, str] = {}
        cursors = self._step("dagster", failed, self.cursors)
        if cursors is not None:  # without the cursors a lag figure would be wrong, not just stale
            self._step("kafka", failed, lambda: self.lag(cursors))
        self._step("postgres", failed, self.postgres_rows)
        self._step("milvus", failed, self.milvus_rows)
        return failed

    def _step(self, source: str, failed: dict[str, str], step: Callable[[], object]) -> object:
        try:
            outcome = step()
        except Exception as exc:  # noqa: BLE001 - an exporter keeps serving what it has
            self.gauges.errors.labels(source).inc()
            failed[source] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
            return None
        self.gauges.last_success.labels(source).set_to_current_time()
        return outcome

    def cursors(self) -> dict[str, str | None]:
        """Sensor name → its cursor in the Dagster instance (None before its first tick)."""
        if self._cursor_of is None:
            instance = dagster_instance(self.config)
            self._cursor_of = (lambda name: sensor_cursor(instance, name)) if instance else (lambda name: None)
        return {sensor: self._cursor_of(sensor) for sensor in SENSOR_TOPICS}

    def lag(self, cursors: dict[str, str | None]) -> None:
        """Per topic partition: end offset minus the sensor cursor's offset (all of it without a cursor)."""
        from resources.kafka import end_offsets
        from sensors.cursor import EventsCursor

        for sensor, attribute in SENSOR_TOPICS.items():
            topic = getattr(self.kafka, attribute)
            cluster_id, partitions = self.kafka.describe(topic)
            cursor = EventsCursor.from_json(cursors.get(sensor))
            # Offsets of another cluster (the in-memory broker restarted) mean nothing here: the sensor restarts at 0.
            offsets = cursor.offsets if cursor.cluster_id == cluster_id else {}
            consumer = self.kafka.consumer()
            try:
                ends, exact = end_offsets(consumer, topic, {p: offsets.get(p, 0) for p in partitions},
                                          deadline=time.monotonic() + PROBE_SECONDS)
            finally:
                consumer.close()
            for partition in partitions:
                self.gauges.consumer_lag.labels(topic, str(partition)).set(
                    max(0, ends[partition] - offsets.get(partition, 0)))
            self.gauges.consumer_lag_exact.labels(topic).set(1 if exact else 0)
            self.gauges.cursor_pending.labels(sensor).set(sum(p.count for p in cursor.pending.values()))

    def postgres_rows(self) -> None:
        """Rows per region in memory_events and memory_vectors, and events without any vector (maintainer role)."""
        from psycopg import sql

        from resources.pg_schema import region_schema

        with self.postgres.maintenance_transaction() as conn:
            for region in self.config.regions:
                fmt = {"s": sql.Identifier(region_schema(region))}
                events, vectors, pending = conn.execute(sql.SQL(
                    "SELECT (SELECT count(*) FROM {s}.memory_events), (SELECT count(*) FROM {s}.memory_vectors),"
                    " (SELECT count(*) FROM {s}.memory_events e WHERE NOT EXISTS (SELECT 1 FROM {s}.memory_vectors v"
                    "  WHERE v.tenant_id = e.tenant_id AND v.event_id = e.event_id"
                    "  AND v.created_at = e.created_at))").format(**fmt)).fetchone()
                self.gauges.store_rows.labels("postgres", region).set(events)
                self.gauges.store_rows.labels("pgvector", region).set(vectors)
                self.gauges.pending_events.labels(region).set(pending)
            self.gauges.tenants.set(conn.execute("SELECT count(*) FROM amem.tenants").fetchone()[0])

    def milvus_rows(self) -> None:
        """Rows per region's collection from Milvus' collection statistics (no filter, no tenant data)."""
        from pymilvus import MilvusClient

        from resources.milvus import MilvusResource

        if self._milvus_client is None:
            self._milvus_client = MilvusClient(uri=self.milvus_uri)
        naming = MilvusResource(uri=self.milvus_uri)
        for region in self.config.regions:
            name = naming.collection_name(region)
            rows = (int(self._milvus_client.get_collection_stats(name)["row_count"])
                    if self._milvus_client.has_collection(name) else 0)
            self.gauges.store_rows.labels("milvus", region).set(rows)


def _collector(gauges: ExporterMetrics) -> Collector:
    config = clients.settings()
    return Collector(config, clients.addresses(config), gauges)


@app.command("serve")
def serve(
    port: int = typer.Option(DEFAULT_PORT, "--port", min=0, max=65535, help="Port of the /metrics endpoint."),
    address: str = typer.Option("0.0.0.0", "--address", help="Address to listen on."),
    interval: float = typer.Option(15.0, "--interval", min=1.0, help="Seconds between refreshes."),
) -> None:
    """Serve lag, backlog and store gauges on http://ADDRESS:PORT/metrics until Ctrl-C, refreshed every INTERVAL s."""
    from prometheus_client import start_http_server

    from amem_dagster.cli import supervise

    gauges = ExporterMetrics()
    collector = _collector(gauges)
    try:
        server, _ = start_http_server(port, addr=address, registry=gauges.registry)
    except OSError as exc:
        raise ServiceUnavailable(f"cannot listen on {address}:{port}: {exc.strerror or exc}") from None
    console.print(f"serving http://{address}:{server.server_port}/metrics, refreshed every {interval:g}s",
                  markup=False)
    try:
        with supervise.sigterm_as_interrupt(), clients.closing_pools():
            while True:
                for source, error in collector.collect().items():
                    err_console.print(f"{source}: {error}", style="yellow", markup=False, soft_wrap=True)
                time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()


@app.command("show")
def show() -> None:
    """Compute the gauges once and print them in the Prometheus text format."""
    from prometheus_client import generate_latest

    gauges = ExporterMetrics()
    with clients.closing_pools():
        failed = _collector(gauges).collect()
    typer.echo(generate_latest(gauges.registry).decode(), nl=False)
    for source, error in failed.items():
        err_console.print(f"{source}: {error}", style="yellow", markup=False, soft_wrap=True)
