"""Metrics, traces and JSON logs of the real pipeline: Kafka → sensor → run on a real DagsterInstance → stores.

Each test sends events to private topics and runs the sensor and the requested runs in this process, with an
SDK tracer provider exporting to memory and a stand-in Pushgateway (a local HTTP server recording pushes).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from dagster import DagsterInstance, Definitions, RunsFilter, SkipReason, build_sensor_context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import generate_latest

from amem_dagster.definitions import build_definitions
from amem_dagster.observability import metrics, tracing
from amem_dagster.settings import Settings
from resources import pg_memory
from resources.dead_letters import ERROR_HEADER, SOURCE_HEADER, header
from resources.embedder import EmbedderResource
from resources.kafka import KafkaRecord, KafkaResource, read_from
from resources.milvus import MilvusResource
from resources.postgres import PostgresResource
from sensors.batching import BatchPolicy
from tests.kafka_topics import private_kafka

pytestmark = pytest.mark.integration


# --- a small harness shared with the isolation and placement tests ------------------------------------------

@dataclass
class Pipeline:
    """Private topics (and optionally a private Milvus collection prefix) wired into the real definitions."""

    kafka: KafkaResource
    defs: Definitions
    instance: DagsterInstance
    milvus: MilvusResource
    postgres: PostgresResource
    offsets: dict[int, int] = field(default_factory=dict)

    @classmethod
    def create(cls, service_env: dict[str, str], instance: DagsterInstance, *, prefix: str = "obs",
               milvus_prefix: str | None = None) -> Pipeline:
        kafka = private_kafka(service_env, prefix, events_partitions=3)
        milvus = MilvusResource(uri=service_env["AMEM_MILVUS_URI"],
                                **({"collection_prefix": milvus_prefix} if milvus_prefix else {}))
        defs = build_definitions(Settings.from_env(service_env), resources={"kafka": kafka, "milvus": milvus},
                                 events_policy=BatchPolicy(min_events=1, max_wait_seconds=0))
        return cls(kafka=kafka, defs=defs, instance=instance, milvus=milvus,
                   postgres=PostgresResource(dsn=service_env["AMEM_PG_DSN"]))

    def produce(self, messages) -> list[tuple[int, int]]:
        """Produce (key, value[, headers]) in order; returns each message's (partition, offset)."""
        producer = self.kafka.producer()
        placed: list = [None] * len(messages)

        def report(i):
            def on_delivery(err, msg):
                assert err is None, err
                placed[i] = (msg.partition(), msg.offset())
            return on_delivery

        for i, (key, value, *headers) in enumerate(messages):
            producer.produce(self.kafka.events_topic, key=key, value=value,
                             headers=headers[0] if headers else None, on_delivery=report(i))
        assert producer.flush(10) == 0
        return placed

    def tick(self, cursor: str | None = None, sensor: str = "memory_events_sensor"):
        with build_sensor_context(instance=self.instance, cursor=cursor, definitions=self.defs,
                                  resources=self.defs.resources) as context:
            result = self.defs.resolve_sensor_def(sensor)(context)
        assert not isinstance(result, SkipReason), result
        for request in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        return result

    def run_all(self, result, job: str = "memory_ingest_job") -> list:
        runs = []
        for request in result.run_requests:
            run = self.defs.resolve_job_def(job).execute_in_process(
                run_config=request.run_config, tags=request.tags, instance=self.instance)
            assert run.success
            runs.append(run)
        return runs

    def read(self, topic: str) -> list[KafkaRecord]:
        _, partitions = self.kafka.describe(topic)
        consumer = self.kafka.consumer()
        try:
            records, _ = read_from(consumer, topic, {p: 0 for p in partitions}, max_messages=100_000,
                                   deadline=time.monotonic() + 15)
        finally:
            consumer.close()
        return records

    def dead_letters(self) -> dict[str, str]:
        """amem-source (topic/partition/offset) → amem-error code of every dead letter."""
        return {header(r, SOURCE_HEADER): header(r, ERROR_HEADER) for r in self.read(self.kafka.dlq_topic)}

    def source(self, placed: tuple[int, int]) -> str:
        return f"{self.kafka.events_topic}/{placed[0]}/{placed[1]}"


def event(tenant: str, text: str = "remember the blue umbrella", **extra) -> bytes:
    body = {"event_id": str(uuid.uuid4()), "tenant_id": tenant, "agent_name": "planner",
            "event_type": "Observation", "text": text, **extra}
    return json.dumps(body).encode()


def tenants(n: int, prefix: str = "obs") -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"{prefix}-{run}-{i}" for i in range(n)]


def traceparent(trace_id: str | None = None, span_id: str | None = None) -> bytes:
    return f"00-{trace_id or uuid.uuid4().hex}-{span_id or uuid.uuid4().hex[:16]}-01".encode()


# --- fixtures ------------------------------------------------------------------------------------------------

@pytest.fixture
def spans():
    """Record spans in memory for the test; afterwards tracing is unconfigured again (no-op)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_provider(None)


@pytest.fixture
def pipeline(service_env, dagster_instance) -> Pipeline:
    return Pipeline.create(service_env, dagster_instance)


class _Recorder(BaseHTTPRequestHandler):
    """Records (method, path, body) of every PUT/POST: a stand-in Pushgateway or OTLP/HTTP collector."""

    def do_PUT(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.pushes.append((self.command, self.path, body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()

    do_POST = do_PUT

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def recorder():
    """A local HTTP server recording what is sent to it; yields (url, list of (method, path, body))."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.pushes = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", server.pushes  # type: ignore[attr-defined]
    finally:
        server.shutdown()


@pytest.fixture
def pushgateway(recorder, monkeypatch):
    """The recorder as a Prometheus Pushgateway: AMEM_PUSHGATEWAY_URL points at it."""
    url, pushes = recorder
    monkeypatch.setenv(metrics.PUSHGATEWAY_VARIABLE, url)
    monkeypatch.setenv(metrics.INSTANCE_VARIABLE, "test-host")
    return pushes


def _named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def _hex(value: int, width: int = 32) -> str:
    return format(value, f"0{width}x")


# --- tracing -------------------------------------------------------------------------------------------------

def test_one_request_trace_is_the_parent_of_every_span_that_processes_it(pipeline, spans, service_env):
    """Three events of one user request (one traceparent): the sensor's parse span, the run's steps, the store
    writes and the announcement all join that trace; the trace id is on the rows and in the run's tags."""
    (tenant,) = tenants(1)
    trace_id, parent_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    headers = [("traceparent", traceparent(trace_id, parent_span))]
    pipeline.produce([(tenant.encode(), event(tenant, f"note {i}"), headers) for i in range(3)])
    result = pipeline.tick()
    [parse] = _named(spans.get_finished_spans(), "memory_events_sensor parse")
    assert _hex(parse.context.trace_id) == trace_id and _hex(parse.parent.span_id, 16) == parent_span
    assert parse.attributes["amem.traced_events"] == 1 and parse.attributes["amem.accepted"] == 3
    [request] = result.run_requests
    assert request.tags[tracing.RUN_TRACEPARENT_TAG] == f"00-{trace_id}-{_hex(parse.context.span_id, 16)}-01"

    spans.clear()
    [run] = pipeline.run_all(result)
    finished = spans.get_finished_spans()
    [events_span] = _named(finished, "memory_events")
    [embed_span] = _named(finished, "memory_embeddings")
    assert _hex(events_span.parent.span_id, 16) == parent_span  # the request itself is the parent ...
    assert [link.context.span_id for link in events_span.links] == [parse.context.span_id]  # ... the sensor a link
    assert embed_span.parent.span_id == events_span.context.span_id
    for name in ("store events", "embed", "milvus upsert", "pgvector upsert", "publish", "memory_events",
                 "memory_embeddings"):
        assert {_hex(s.context.trace_id) for s in _named(finished, name)} == {trace_id}, name
    assert events_span.attributes["dagster.run_id"] == run.run_id

    # The announcements carry the publish span's context onward.
    [publish] = _named(finished, "publish")
    announced = pipeline.read(pipeline.kafka.embeddings_topic)
    assert len(announced) == 3
    assert {header(r, "traceparent") for r in announced} == {
        f"00-{trace_id}-{_hex(publish.context.span_id, 16)}-01"}

    # Trace id → run (tags, one exact key per id) and → rows.
    tags = pipeline.instance.get_run_by_id(run.run_id).tags
    assert tags["amem/trace_ids"] == trace_id and tags["amem/traced_events"] == "3"
    assert tags[f"amem/trace/{trace_id}"] == "1"
    assert [r.run_id for r in pipeline.instance.get_runs(RunsFilter(tags={f"amem/trace/{trace_id}": "1"}))] == [
        run.run_id]
    with pipeline.postgres.maintenance_transaction() as conn:
        rows = conn.execute("SELECT tenant_id, trace_id FROM amem_eu.memory_events WHERE trace_id = %s",
                            (trace_id,)).fetchall()
    assert rows == [(tenant, trace_id)] * 3

    # Downstream, the embeddings sensor links its batch span to the announcements' context.
    spans.clear()
    deadline = time.monotonic() + 20
    while not _named(spans.get_finished_spans(), "memory_embeddings_sensor tick") and time.monotonic() < deadline:
        pipeline.tick(sensor="memory_embeddings_sensor")
    [downstream] = _named(spans.get_finished_spans(), "memory_embeddings_sensor tick")
    assert _hex(downstream.context.trace_id) == trace_id
    assert downstream.parent.span_id == publish.context.span_id


def test_a_batch_of_many_traces_gets_one_span_with_a_link_per_trace(pipeline, spans):
    """Twelve requests in one batch: one parse span and one span per step, each linked to every request's
    context instead of one span per event; the run names five trace ids and counts all twelve."""
    a, b = tenants(2)
    contexts = [(uuid.uuid4().hex, uuid.uuid4().hex[:16]) for _ in range(12)]
    messages = [(t.encode(), event(t), [("traceparent", traceparent(*ctx))])
                for i, ctx in enumerate(contexts) for t in [(a, b)[i % 2]]]
    messages.append((a.encode(), event(a, "untraced")))
    pipeline.produce(messages)
    result = pipeline.tick()
    [parse] = _named(spans.get_finished_spans(), "memory_events_sensor parse")
    assert parse.parent is None
    assert {(_hex(link.context.trace_id), _hex(link.context.span_id, 16)) for link in parse.links} == set(contexts)

    spans.clear()
    runs = pipeline.run_all(result)
    finished = spans.get_finished_spans()
    assert len(_named(finished, "memory_events")) == len(runs) == 1
    [events_span] = _named(finished, "memory_events")
    # Parent: the sensor's span (a pipeline trace); links: the twelve request contexts.
    assert events_span.parent.span_id == parse.context.span_id
    assert {(_hex(link.context.trace_id), _hex(link.context.span_id, 16)) for link in events_span.links} == set(
        contexts)
    assert len(_named(finished, "store events")) == 1
    tags = pipeline.instance.get_run_by_id(runs[0].run_id).tags
    assert tags["amem/traced_events"] == "12"
    named = tags["amem/trace_ids"].split(",")
    assert len(named) == 5 and set(named) <= {t for t, _ in contexts}
    assert sum(1 for key in tags if key.startswith("amem/trace/")) == 5


def test_without_an_exporter_nothing_is_traced_but_trace_ids_still_reach_tags_and_rows(pipeline):
    """No OTLP endpoint, no provider: no span context flows (no traceparent tags or headers), the pipeline
    behaves as before, and the events' own trace ids are still stored and named in the run's tags."""
    assert not tracing.recording()
    (tenant,) = tenants(1)
    trace_id = uuid.uuid4().hex
    pipeline.produce([(tenant.encode(), event(tenant), [("traceparent", traceparent(trace_id))])])
    result = pipeline.tick()
    [request] = result.run_requests
    assert tracing.RUN_TRACEPARENT_TAG not in request.tags
    [run] = pipeline.run_all(result)
    tags = pipeline.instance.get_run_by_id(run.run_id).tags
    assert tags["amem/trace_ids"] == trace_id and tracing.EVENTS_TRACEPARENT_TAG not in tags
    assert all(not r.headers for r in pipeline.read(pipeline.kafka.embeddings_topic))
    with pipeline.postgres.tenant_transaction(tenant) as conn:
        assert conn.execute("SELECT trace_id FROM amem_eu.memory_events WHERE tenant_id = %s",
                            (tenant,)).fetchall() == [(trace_id,)]


def test_otlp_exporter_only_when_an_endpoint_is_configured(recorder, monkeypatch):
    """No endpoint: nothing configured. An endpoint: spans are sent there as OTLP/HTTP protobuf on flush."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    url, posts = recorder
    monkeypatch.setattr(tracing, "_provider", None)
    assert tracing.configure({}) is False and not tracing.recording()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    try:
        assert tracing.configure() is True and tracing.recording()
        with tracing.batch_span("memory_events", [tracing.context_from_headers([("traceparent", traceparent())])]):
            pass
        tracing.flush()
    finally:
        tracing._provider.shutdown()
        monkeypatch.setattr(tracing, "_provider", None)
    [(method, path, body)] = posts
    assert (method, path) == ("POST", "/v1/traces")
    request = ExportTraceServiceRequest.FromString(body)
    resource = request.resource_spans[0]
    assert {a.key: a.value.string_value for a in resource.resource.attributes}["service.name"] == "amem-dagster"
    assert [s.name for s in resource.scope_spans[0].spans] == ["memory_events"]


def test_console_exporter_for_a_look_without_a_collector(monkeypatch, capsys):
    monkeypatch.setattr(tracing, "_provider", None)
    assert tracing.exporters({"OTEL_TRACES_EXPORTER": "console"}) == ["console"]
    assert tracing.exporters({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}) == []
    assert tracing.exporters({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}) == ["otlp"]
    try:
        assert tracing.configure({"OTEL_TRACES_EXPORTER": "console"}) is True
        with tracing.batch_span("memory_events"):
            pass
        tracing.flush()
    finally:
        tracing._provider.shutdown()
        monkeypatch.setattr(tracing, "_provider", None)
    assert '"name": "memory_events"' in capsys.readouterr().err


def test_malformed_traceparents_are_ignored():
    assert tracing.context_from_headers([("traceparent", b"junk")]) is None
    assert tracing.context_from_headers([("traceparent", b"00-" + b"0" * 32 + b"-" + b"1" * 16 + b"-01")]) is None
    assert tracing.context_from_headers([("traceparent", None), ("x", b"y")]) is None
    good = traceparent("a" * 32, "b" * 16)
    found = tracing.context_from_headers([("traceparent", b"junk"), ("TraceParent", good)])
    assert found is not None and _hex(found.trace_id) == "a" * 32 and found.is_remote


# --- metrics -------------------------------------------------------------------------------------------------

def _value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels or None) or 0.0


def test_counters_and_histograms_follow_the_pipeline_and_are_pushed(pipeline, pushgateway, service_env):
    a, b = tenants(2)
    before = {
        "ingested": _value("amem_events_ingested_total"),
        "not_json": _value("amem_events_dead_lettered_total", reason="not_json"),
        "bad_tenant_id": _value("amem_events_dead_lettered_total", reason="bad_tenant_id"),
        **{s: _value("amem_store_writes_total", store=s) for s in ("postgres", "pgvector", "milvus")},
        "encode": _value("amem_embedding_batch_seconds_count"),
        "milvus_write": _value("amem_store_write_seconds_count", store="milvus"),
        "search_pg": _value("amem_search_seconds_count", store="pgvector"),
        "search_milvus": _value("amem_search_seconds_count", store="milvus"),
        "reads_milvus": _value("amem_store_reads_total", store="milvus"),
    }
    pipeline.produce([*[(t.encode(), event(t, f"fact {i}")) for t in (a, b) for i in range(4)],
                      (a.encode(), b"{not json"), (b"Bad Tenant", event("Bad Tenant"))])
    result = pipeline.tick()
    assert _value("amem_events_ingested_total") - before["ingested"] == 8
    assert _value("amem_events_dead_lettered_total", reason="not_json") - before["not_json"] == 1
    assert _value("amem_events_dead_lettered_total", reason="bad_tenant_id") - before["bad_tenant_id"] == 1
    pipeline.run_all(result)
    for store in ("postgres", "pgvector", "milvus"):
        assert _value("amem_store_writes_total", store=store) - before[store] == 8, store
    assert _value("amem_embedding_batch_seconds_count") > before["encode"]
    assert _value("amem_store_write_seconds_count", store="milvus") > before["milvus_write"]

    vector = EmbedderResource().encode(["fact"])[0]
    with pipeline.postgres.tenant_transaction(a) as conn:
        pg_memory.search(conn, a, "eu", vector, k=3)
    pipeline.milvus.search(a, "eu", vector, k=3)
    assert _value("amem_search_seconds_count", store="pgvector") == before["search_pg"] + 1
    assert _value("amem_search_seconds_count", store="milvus") == before["search_milvus"] + 1
    assert _value("amem_store_reads_total", store="milvus") > before["reads_milvus"]

    # Pushed at the end of the tick and of each step, grouped by job name and instance.
    paths = {path for _, path, _ in pushgateway}
    assert "/metrics/job/memory_events_sensor/instance/test-host" in paths
    assert "/metrics/job/memory_ingest_job/instance/test-host" in paths
    assert all(method == "PUT" for method, _, _ in pushgateway)
    body = next(body for _, path, body in reversed(pushgateway) if "memory_ingest_job" in path).decode()
    for name in ("amem_events_ingested_total", "amem_store_writes_total", "amem_embedding_batch_seconds_bucket",
                 "amem_store_write_seconds_bucket"):
        assert name in body, name


def test_labels_stay_bounded():
    """No tenant id, event id or text in any label: only fixed store names, rejection codes and job names."""
    exposition = generate_latest(metrics.REGISTRY).decode()
    labels = {}
    for family in metrics.REGISTRY.collect():
        for sample in family.samples:
            for key, value in sample.labels.items():
                labels.setdefault(key, set()).add(value)
    assert set(labels) <= {"store", "reason", "le"}
    assert labels.get("store", set()) <= {"postgres", "pgvector", "milvus"}
    assert all(len(code) <= 31 and code.replace("_", "").isalnum() for code in labels.get("reason", ()))
    assert "obs-" not in exposition


def test_a_failing_pushgateway_never_fails_the_caller(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    unreachable = {metrics.PUSHGATEWAY_VARIABLE: f"http://127.0.0.1:{port}"}
    assert metrics.push("memory_ingest_job", environ=unreachable) is False
    assert metrics.push("memory_ingest_job", environ={}) is False
    metrics.dead_lettered("Not A Code; DROP")
    assert metrics.REGISTRY.get_sample_value("amem_events_dead_lettered_total", {"reason": "other"}) >= 1
