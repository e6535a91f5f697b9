"""`amem metrics serve | show`: lag from the sensor cursor stored in the Dagster instance, store gauges, /metrics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime

import numpy as np
import pytest
from confluent_kafka import TopicPartition
from typer.testing import CliRunner

from amem_dagster.cli.app import app
from amem_dagster.cli.metrics import Collector, sensor_cursor
from amem_dagster.events import MemoryEvent
from amem_dagster.observability.metrics import ExporterMetrics
from amem_dagster.settings import Settings
from assets.memory_writes import store_events
from resources.kafka import KafkaResource, end_offsets
from resources.milvus import MilvusResource
from resources.postgres import PostgresResource
from resources.records import VectorRow
from sensors.cursor import EventsCursor
from tests.kafka_topics import private_kafka

pytestmark = pytest.mark.integration
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def kafka(service_env) -> KafkaResource:
    return private_kafka(service_env, "lag", events_partitions=2)


def _produce_batches(kafka: KafkaResource, partition: int, batches: int, size: int) -> None:
    producer = kafka.producer()
    for _ in range(batches):
        for i in range(size):
            producer.produce(kafka.events_topic, key=b"t", value=b"v%d" % i, partition=partition)
        assert producer.flush(10) == 0


def test_end_offsets_are_exact_even_where_the_broker_reports_the_last_batch_base(kafka):
    """The embedded broker reports a high watermark of (last batch's base offset + 1); reading on from there
    finds the real end, so the lag is exact (on Kafka the watermark is already right and nothing is read)."""
    _produce_batches(kafka, 0, batches=3, size=100)
    consumer = kafka.consumer()
    try:
        _, reported = consumer.get_watermark_offsets(TopicPartition(kafka.events_topic, 0), timeout=5)
        ends, exact = end_offsets(consumer, kafka.events_topic, {0: 0, 1: 0}, deadline=time.monotonic() + 10)
        assert reported <= 300  # 201 on Tansu 0.x: a lower bound
        assert ends == {0: 300, 1: 0} and exact
        # Out of budget: the figures stay lower bounds, and say so.
        short, exact = end_offsets(consumer, kafka.events_topic, {0: 0, 1: 0}, deadline=time.monotonic() + 10,
                                   max_messages=1)
        assert exact is (reported == 300) and short[0] <= 300
        # A cursor past the reported watermark is a known offset: the probe starts there.
        ends, exact = end_offsets(consumer, kafka.events_topic, {0: 300, 1: 0}, deadline=time.monotonic() + 10)
        assert ends[0] == 300 and exact
    finally:
        consumer.close()


def _store_sensor_cursor(instance, name: str, cursor: str) -> None:
    """Save a sensor's state as the daemon does after a tick (under a location of its own)."""
    from dagster._core.definitions.run_request import InstigatorType
    from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteInstigatorOrigin, RemoteRepositoryOrigin
    from dagster._core.scheduler.instigation import InstigatorState, InstigatorStatus, SensorInstigatorData

    origin = RemoteInstigatorOrigin(
        RemoteRepositoryOrigin(RegisteredCodeLocationOrigin(f"lag-test-{uuid.uuid4().hex[:6]}"), "__repository__"),
        name)
    instance.add_instigator_state(InstigatorState(
        origin, InstigatorType.SENSOR, InstigatorStatus.RUNNING,
        SensorInstigatorData(cursor=cursor, last_tick_timestamp=time.time() + 3600,
                             sensor_type=None)))


def test_lag_is_end_offset_minus_the_cursor_read_from_the_dagster_instance(kafka, service_env, dagster_instance):
    _produce_batches(kafka, 0, batches=2, size=50)
    _produce_batches(kafka, 1, batches=1, size=30)
    cluster_id, _ = kafka.describe(kafka.events_topic)
    cursor = EventsCursor(cluster_id=cluster_id, offsets={0: 40, 1: 30})
    cursor.add_event("acme", 0, 39, now=time.time())
    cursor.add_event("acme", 0, 38, now=time.time())
    _store_sensor_cursor(dagster_instance, "memory_events_sensor", cursor.to_json())
    assert sensor_cursor(dagster_instance, "memory_events_sensor") == cursor.to_json()

    gauges = ExporterMetrics()
    collector = Collector(Settings.from_env(service_env), service_env, gauges, kafka=kafka,
                          cursor_of=lambda name: sensor_cursor(dagster_instance, name))
    assert collector.collect() == {}
    lag = {(s.labels["topic"], s.labels["partition"]): s.value
           for s in gauges.registry.collect() for s in s.samples if s.name == "amem_consumer_lag"}
    assert lag[(kafka.events_topic, "0")] == 60 and lag[(kafka.events_topic, "1")] == 0
    assert gauges.registry.get_sample_value("amem_consumer_lag_exact", {"topic": kafka.events_topic}) == 1
    assert gauges.registry.get_sample_value("amem_cursor_pending_events", {"sensor": "memory_events_sensor"}) == 2

    # A cursor of another cluster (the in-memory broker restarted) counts for nothing: all of it is lag.
    stale = EventsCursor(cluster_id="gone", offsets={0: 100, 1: 30})
    collector = Collector(Settings.from_env(service_env), service_env, gauges, kafka=kafka,
                          cursor_of=lambda name: stale.to_json() if name == "memory_events_sensor" else None)
    assert collector.collect() == {}
    assert gauges.registry.get_sample_value(
        "amem_consumer_lag", {"topic": kafka.events_topic, "partition": "0"}) == 100


def _vector(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=384).astype(np.float32)
    return v / np.linalg.norm(v)


def test_store_gauges_and_the_embedding_backlog_per_region(service_env):
    settings = Settings.from_env(service_env)
    gauges = ExporterMetrics()
    collector = Collector(settings, service_env, gauges)

    def value(name, **labels):
        return gauges.registry.get_sample_value(name, labels)

    assert collector.collect() == {}
    before = {(s, r): value("amem_store_rows", store=s, region=r) for s in ("postgres", "pgvector", "milvus")
              for r in ("eu", "us")}
    backlog = {r: value("amem_pending_events", region=r) for r in ("eu", "us")}

    tenant = f"gauge-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    events = [MemoryEvent(event_id=str(uuid.uuid4()), tenant_id=tenant, agent_name="a", event_type="Obs",
                          text=f"t{i}", region="us" if i == 0 else "eu", created_at=now) for i in range(3)]
    pg = PostgresResource(dsn=service_env["AMEM_PG_DSN"])
    store_events(pg, {tenant: [(e, 0, i) for i, e in enumerate(events)]})
    collector.collect()
    assert value("amem_store_rows", store="postgres", region="eu") == before[("postgres", "eu")] + 2
    assert value("amem_store_rows", store="postgres", region="us") == before[("postgres", "us")] + 1
    assert value("amem_pending_events", region="eu") == backlog["eu"] + 2

    rows = [VectorRow(tenant, e.event_id, e.region, e.created_at, None, "m", _vector(i)) for i, e in enumerate(events)]
    MilvusResource(uri=service_env["AMEM_MILVUS_URI"]).upsert(rows)
    from resources import pg_memory
    with pg.tenant_transaction(tenant) as conn:
        pg_memory.upsert_vectors(conn, rows)
    assert collector.collect() == {}
    assert value("amem_pending_events", region="eu") == backlog["eu"]
    assert value("amem_store_rows", store="pgvector", region="eu") == before[("pgvector", "eu")] + 2
    assert value("amem_store_rows", store="milvus", region="eu") == before[("milvus", "eu")] + 2
    assert value("amem_store_rows", store="milvus", region="us") == before[("milvus", "us")] + 1
    assert value("amem_tenants") >= 1
    assert value("amem_exporter_last_success_timestamp_seconds", source="postgres") > 0


def test_a_failing_source_is_counted_and_the_others_still_refresh(service_env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gauges = ExporterMetrics()
    dead = KafkaResource(bootstrap_servers=f"127.0.0.1:{port}", extra_config={"log_level": "0"})
    failed = Collector(Settings.from_env(service_env), service_env, gauges, kafka=dead,
                       cursor_of=lambda name: None).collect()
    assert set(failed) == {"kafka"}
    assert gauges.registry.get_sample_value("amem_exporter_errors_total", {"source": "kafka"}) == 1
    assert gauges.registry.get_sample_value("amem_exporter_last_success_timestamp_seconds",
                                            {"source": "postgres"}) > 0

    def broken(name):
        raise RuntimeError("instance storage unreachable")

    failed = Collector(Settings.from_env(service_env), service_env, gauges, cursor_of=broken).collect()
    assert set(failed) == {"dagster"}  # no lag figures from missing cursors
    assert gauges.registry.get_sample_value("amem_exporter_errors_total", {"source": "dagster"}) == 1


def test_show_prints_the_gauges_once(service_env):
    result = CliRunner().invoke(app, ["metrics", "show"], env=service_env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for name in ("amem_consumer_lag{", "amem_store_rows{", "amem_pending_events{", "amem_tenants "):
        assert name in result.stdout, name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_exposes_metrics_until_terminated(service_env, amem_home):
    port = _free_port()
    env = {**os.environ, **service_env, "DAGSTER_HOME": str(amem_home / "dagster-test")}
    proc = subprocess.Popen([sys.executable, "-m", "amem_dagster.cli.app", "metrics", "serve", "--port", str(port),
                             "--address", "127.0.0.1", "--interval", "1"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        body, deadline = "", time.monotonic() + 90
        while "amem_store_rows{" not in body and time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    body = response.read().decode()
            except OSError:
                assert proc.poll() is None, proc.communicate()
        for name in ("amem_consumer_lag{", "amem_consumer_lag_exact{", "amem_pending_events{",
                     "amem_store_rows{", 'amem_exporter_last_success_timestamp_seconds{source="kafka"}'):
            assert name in body, name
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"serving http://127.0.0.1:{port}/metrics" in out


def test_serve_reports_a_busy_port_in_one_line(service_env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = CliRunner().invoke(app, ["metrics", "serve", "--port", str(port), "--address", "127.0.0.1"],
                                    env=service_env)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot listen on 127.0.0.1:") and result.stderr.count("\n") == 1
