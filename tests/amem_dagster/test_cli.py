"""The `amem` CLI against the session's real embedded services: reports, produce, search, stats, errors."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import uuid
from datetime import UTC, datetime

import numpy as np
import pytest
from typer.testing import CliRunner

from amem_dagster import demo
from amem_dagster.cli import dev, supervise
from amem_dagster.cli.app import app
from amem_dagster.errors import EventRejected
from amem_dagster.events import MemoryEvent, parse_event
from amem_dagster.settings import DLQ_TOPIC, EVENTS_TOPIC, Settings
from resources import pg_memory
from resources.dead_letters import dead_letter
from resources.kafka import KafkaRecord, KafkaResource, deliver_all, read_from
from resources.milvus import MilvusResource
from resources.postgres import PostgresResource
from resources.records import VectorRow

runner = CliRunner()


def amem(env: dict[str, str], *args: str):
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


@pytest.fixture(scope="module")
def env(service_env) -> dict[str, str]:
    """The session services' addresses; `amem up` once so the topics and schema exist."""
    result = amem(service_env, "up")
    assert result.exit_code == 0, result.output
    return service_env


@pytest.fixture(scope="module")
def kafka(env) -> KafkaResource:
    return KafkaResource(bootstrap_servers=env["AMEM_KAFKA_BOOTSTRAP"])


@pytest.fixture(scope="module")
def pg(env) -> PostgresResource:
    return PostgresResource(dsn=env["AMEM_PG_DSN"], regions="eu,us")


def _prefix() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}"


def _read_all(kafka: KafkaResource, topic: str) -> list[KafkaRecord]:
    _, partitions = kafka.describe(topic)
    consumer = kafka.consumer()
    try:
        records, _ = read_from(consumer, topic, {p: 0 for p in partitions}, max_messages=10**7,
                               deadline=time.monotonic() + 30)
    finally:
        consumer.close()
    return records


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("up", "down", "status", "dev", "produce", "search", "stats"):
        assert command in result.stdout


def test_second_up_reports_what_already_runs_and_status_agrees(env):
    embedded = {"AMEM_HOME": env["AMEM_HOME"], "AMEM_PG_DSN": None, "AMEM_KAFKA_BOOTSTRAP": None,
                "AMEM_MILVUS_URI": None}
    up = amem(embedded, "up")
    assert up.exit_code == 0, up.output
    assert up.stdout.count("already running") == 3
    assert f"{EVENTS_TOPIC} exists" in up.stdout and "started" not in up.stdout
    status = amem(embedded, "status")
    assert status.exit_code == 0
    assert status.stdout.count("running") == 3 and env["AMEM_KAFKA_BOOTSTRAP"] in status.stdout


def test_external_services_are_used_not_started(env):
    result = amem(env, "up")  # the session exports every address as AMEM_*: all count as external
    assert result.exit_code == 0, result.output
    assert result.stdout.count("external") == 3 and "started" not in result.stdout


def test_produce_sends_exactly_the_demo_batch(env, kafka):
    prefix = _prefix()
    args = dict(tenants=2, events=80, bad_share=0.25, skew=1.0, seed=21)
    result = amem(env, "produce", "--tenants", "2", "--events", "80", "--bad-share", "0.25", "--skew", "1.0",
                  "--seed", "21", "--tenant-prefix", prefix)
    assert result.exit_code == 0, result.output
    assert "sent 80 messages" in result.stdout and "60 good, 20 bad" in result.stdout

    expected = demo.generate(**args, tenant_prefix=prefix)
    expected_ids = {json.loads(v)["event_id"] for (_, v, _), kind in zip(expected.messages, expected.kinds)
                    if kind == demo.GOOD}
    mine = [r for r in _read_all(kafka, EVENTS_TOPIC) if r.key and r.key.startswith(prefix.encode())]
    assert len(mine) == sum(1 for key, _, _ in expected.messages if key.startswith(prefix.encode()))
    parsed, codes = [], []
    for record in mine:
        try:
            parsed.append(parse_event(record.value, key=record.key, timestamp_ms=record.timestamp_ms,
                                      headers=record.headers, regions=("eu", "us"), default_region="eu"))
        except EventRejected as exc:
            codes.append(exc.code)
    assert {e.event_id for e in parsed} == expected_ids
    assert {e.tenant_id for e in parsed} == {f"{prefix}-001", f"{prefix}-002"}
    assert codes and set(codes) <= set(demo.BAD_KINDS.values())


@pytest.mark.parametrize("args", [
    ["produce", "--events", "-1"],
    ["produce", "--bad-share", "1.5"],
    ["produce", "--tenants", "0"],
    ["produce", "--regions", "mars"],
    ["produce", "--tenant-prefix", "Bad Prefix"],
    ["search", "Not A Tenant", "hello"],
    ["search", "tenant-001", "hello", "--store", "faiss"],
    ["search", "tenant-001", "hello", "--region", "mars"],
    ["search", "tenant-001", "hello", "-k", "0"],
    ["stats", "--verbose"],
    ["no-such-command"],
])
def test_bad_input_is_one_line_and_exit_2(env, args):
    result = amem(env, *args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and result.stdout == ""


def test_services_that_are_not_running_are_one_line_and_exit_1(tmp_path):
    env = {"AMEM_HOME": str(tmp_path), "AMEM_PG_DSN": None, "AMEM_KAFKA_BOOTSTRAP": None, "AMEM_MILVUS_URI": None}
    result = amem(env, "stats")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "amem up" in result.stderr


def test_unreachable_postgres_is_one_line_and_exit_1(env, tmp_path):
    broken = {**env, "AMEM_PG_DSN": f"postgresql://postgres@/amem?host={tmp_path}"}
    result = amem(broken, "stats", "--json")
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "Postgres" in result.stderr


def test_unreachable_kafka_is_one_line_and_exit_1(env):
    result = amem({**env, "AMEM_KAFKA_BOOTSTRAP": "127.0.0.1:1"}, "produce", "--events", "5")
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "Kafka at 127.0.0.1:1" in result.stderr


def test_bad_settings_are_one_line_and_exit_2(env):
    result = amem({**env, "AMEM_REGIONS": "EU"}, "status")
    assert result.exit_code == 2 and "AMEM_REGIONS" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _store_tenant(pg: PostgresResource, tenant: str, texts: list[str], vectors: np.ndarray) -> list[MemoryEvent]:
    now = datetime.now(UTC)
    events = [MemoryEvent(event_id=str(uuid.uuid4()), tenant_id=tenant, agent_name="test", event_type="Observation",
                          text=text, region="eu", created_at=now) for text in texts]
    pg.ensure_partitions("eu", {now.date()})
    with pg.tenant_transaction(tenant) as conn:
        pg_memory.insert_events(conn, [(e, 0, i) for i, e in enumerate(events)])
        pg_memory.upsert_vectors(conn, _rows(events, vectors))
    return events


def _rows(events: list[MemoryEvent], vectors: np.ndarray) -> list[VectorRow]:
    return [VectorRow(tenant_id=e.tenant_id, event_id=e.event_id, region=e.region, created_at=e.created_at,
                      subject_id=None, model="test", embedding=v) for e, v in zip(events, vectors)]


def test_stats_json_counts_every_store_and_distinct_dead_letters(env, kafka, pg):
    tenant = f"{_prefix()}-001"
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3, 384)).astype(np.float32)
    events = _store_tenant(pg, tenant, ["one", "two", "three"], vectors)
    MilvusResource(uri=env["AMEM_MILVUS_URI"]).upsert(_rows(events[:2], vectors[:2]))
    producer = kafka.producer()
    for offset, code in ((1, "not_json"), (2, "missing_field"), (2, "missing_field")):  # the last is a re-delivery
        record = KafkaRecord(partition=5, offset=offset, key=tenant.encode(), value=b"{", headers=(),
                             timestamp_ms=None)
        # A source topic of its own: dead letters are counted once per amem-source header value.
        dead_letter(producer, DLQ_TOPIC, f"test.{tenant}", record, EventRejected(code, "test"))
    deliver_all(producer)

    result = amem(env, "stats", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"tenants", "dlq", "regions"} and data["regions"] == ["eu", "us"]
    row = next(t for t in data["tenants"] if t["tenant_id"] == tenant)
    assert row == {"tenant_id": tenant, "events": 3, "pg_vectors": 3, "milvus_vectors": 2, "dlq": 2}
    assert data["dlq"]["total"] >= 2 and data["dlq"]["by_error"]["missing_field"] >= 1
    assert all(set(t) == set(row) for t in data["tenants"])

    table = amem(env, "stats")
    assert table.exit_code == 0 and tenant in table.stdout and "dead letters" in table.stdout


def test_search_finds_the_memory_closest_in_meaning_in_both_stores(env, pg):
    from resources.embedder import EmbedderResource

    tenant = f"{_prefix()}-001"
    texts = ["Book me a flight to Lisbon in June with a window seat.",
             "The orders database has replication lag during the nightly batch.",
             "My tomatoes on the balcony have yellow leaves."]
    embedder = EmbedderResource(model=os.environ.get("AMEM_EMBED_MODEL", ""))
    vectors = embedder.encode(texts)
    events = _store_tenant(pg, tenant, texts, vectors)
    MilvusResource(uri=env["AMEM_MILVUS_URI"]).upsert(_rows(events, vectors))

    for store in ("pg", "milvus"):
        result = amem(env, "search", tenant, "plane trip to Portugal", "-k", "2", "--store", store, "--json")
        assert result.exit_code == 0, result.output
        hits = json.loads(result.stdout)
        assert [set(h) for h in hits] == [{"event_id", "score", "text", "region"}] * 2
        assert hits[0]["text"] == texts[0] and hits[0]["event_id"] == events[0].event_id
        assert hits[0]["score"] >= hits[1]["score"] and hits[0]["region"] == "eu"
    other = amem(env, "search", f"{_prefix()}-001", "plane trip to Portugal", "--json")
    assert other.exit_code == 0 and json.loads(other.stdout) == []  # another tenant sees nothing


def test_dagster_yaml_loads_into_a_real_instance_on_the_embedded_postgres(env):
    from dagster import AssetKey, AssetMaterialization, DagsterInstance
    from dagster._core.run_coordinator import QueuedRunCoordinator

    from amem_dagster.cli import dagster_home

    config = Settings.from_env({"AMEM_HOME": env["AMEM_HOME"]})  # embedded: only the unix socket
    home, url = dagster_home.write(config)
    assert url.startswith("postgresql+psycopg2://postgres@/dagster?host=/")
    instance = DagsterInstance.from_config(str(home))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert instance.run_coordinator.get_run_queue_config().max_concurrent_runs == 2
        key = AssetKey(f"amem_cli_probe_{uuid.uuid4().hex[:8]}")
        instance.report_runless_asset_event(AssetMaterialization(key))  # stores an event (and its NOTIFY)
        assert instance.get_latest_materialization_event(key) is not None
    finally:
        instance.dispose()


def test_storage_url_for_external_postgres(tmp_path):
    from amem_dagster.cli.dagster_home import instance_config, sqlalchemy_url, storage_url
    from amem_dagster.errors import SettingsError

    assert sqlalchemy_url("host=/run/pg dbname=dagster user=me") == "postgresql+psycopg2://me@/dagster?host=/run/pg"
    assert sqlalchemy_url("host=db port=6432 dbname=d user=u password=p@ss") == \
        "postgresql+psycopg2://u:p%40ss@db:6432/d"
    assert sqlalchemy_url("postgres://u@db/d?sslmode=require") == "postgresql+psycopg2://u@db/d?sslmode=require"
    assert sqlalchemy_url("postgresql+psycopg://u@db/d") == "postgresql+psycopg2://u@db/d"
    with pytest.raises(SettingsError):
        sqlalchemy_url("mysql://u@db/d")
    external = Settings(home=tmp_path, pg_dsn="postgresql://app@db/amem")
    assert storage_url(external, {}) == "postgresql+psycopg2://app@db/amem"
    assert storage_url(external, {"AMEM_DAGSTER_PG_URL": "postgresql://app@db/dagster"}) == \
        "postgresql+psycopg2://app@db/dagster"
    assert instance_config("x", url_from_env=True)["storage"]["postgres"]["postgres_url"] == \
        {"env": "AMEM_DAGSTER_PG_URL"}


def test_topic_has_messages_reads_instead_of_trusting_watermarks(kafka):
    from confluent_kafka.admin import NewTopic

    topic = f"amem-test-{uuid.uuid4().hex[:8]}"
    admin = kafka.admin()  # kept referenced: the futures fail once the client is destroyed
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(10)
    assert not dev.topic_has_messages(kafka, topic, timeout=5)
    producer = kafka.producer()
    for n in range(5):  # one batch: Tansu then reports a high watermark of 1, not 5
        producer.produce(topic, key=b"k", value=str(n).encode())
    deliver_all(producer)
    assert dev.topic_has_messages(kafka, topic)


def test_supervised_child_stops_on_our_sigint_and_run_returns():
    script = ("import signal, sys, time\n"
              "signal.signal(signal.SIGINT, lambda *a: sys.exit(0))\n"
              "print('ready', flush=True)\n"
              "time.sleep(30)\nsys.exit(3)\n")
    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    outcome = supervise.run([sys.executable, "-c", script], cwd=os.getcwd(), env=os.environ, grace=10)
    timer.cancel()
    assert outcome == supervise.Outcome(returncode=0, stopped_by_signal=True)
    assert time.monotonic() - started < 10
