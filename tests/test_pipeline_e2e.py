"""End to end on real services: Kafka → sensor → runs on a real DagsterInstance → Postgres, pgvector, Milvus."""

import json
import time
import uuid

import pytest
from dagster import build_sensor_context

from amem_dagster.definitions import build_definitions
from amem_dagster.settings import Settings
from resources import pg_memory
from resources.dead_letters import ERROR_HEADER, header
from resources.embedder import EmbedderResource
from resources.kafka import read_from
from resources.milvus import MilvusResource
from resources.postgres import PostgresResource
from sensors.batching import BatchPolicy
from tests.kafka_topics import private_kafka

TOPICS = {
    "astro": ["The telescope captured a new image of the Andromeda galaxy",
              "Saturn's rings are made mostly of ice particles",
              "A supernova was observed in a distant spiral galaxy"],
    "cook": ["Knead the bread dough for ten minutes before letting it rise",
             "Simmer the tomato sauce with garlic and basil",
             "Whisk eggs and sugar until the batter is fluffy"],
    "bank": ["The customer disputed a duplicate credit card charge",
             "Wire transfer to the savings account was delayed",
             "Quarterly interest was credited to the deposit account"],
}


def _good(tenant: str, text: str, region: str = "eu", subject: str | None = None) -> dict:
    body = {"event_id": str(uuid.uuid4()), "tenant_id": tenant, "agent_name": "planner",
            "event_type": "Observation", "text": text, "region": region}
    if subject:
        body["subject_id"] = subject
    return body


@pytest.fixture(scope="module")
def pipeline(service_env, dagster_instance):
    kafka = private_kafka(service_env, "e2e", events_partitions=3)
    suffix = kafka.events_topic.split(".")[1]
    settings = Settings.from_env(service_env)
    defs = build_definitions(settings, resources={"kafka": kafka},
                             events_policy=BatchPolicy(min_events=1, max_wait_seconds=0))
    tenants = {name: f"{name}-{suffix}" for name in TOPICS}
    producer = kafka.producer()
    good = 0
    for name, texts in TOPICS.items():
        for i, text in enumerate(texts * 4):
            body = _good(tenants[name], f"{text} (note {i})", region="us" if i % 3 == 0 else "eu")
            producer.produce(kafka.events_topic, key=tenants[name].encode(), value=json.dumps(body).encode())
            good += 1
    bad = [
        (b"astro", b"{not json"),
        (tenants["cook"].encode(), json.dumps({"tenant_id": tenants["cook"], "text": "x"}).encode()),
        (b"Bad Tenant", json.dumps(_good("Bad Tenant", "hello")).encode()),
        (tenants["bank"].encode(), json.dumps(_good(tenants["bank"], "x" * 40_000)).encode()),
        (tenants["bank"].encode(), json.dumps({**_good(tenants["bank"], "t"), "agent_name": 7}).encode()),
        (tenants["bank"].encode(), json.dumps(_good(tenants["bank"], "mars", region="mars")).encode()),
        (tenants["astro"].encode(), json.dumps(_good(tenants["cook"], "wrong key")).encode()),
    ]
    # Valid, but 200 days old in eu (90-day window): expired on arrival, so never stored.
    stale = {**_good(tenants["astro"], "an ancient observation"), "created_at": "2020-01-01T00:00:00Z"}
    producer.produce(kafka.events_topic, key=tenants["astro"].encode(), value=json.dumps(stale).encode())
    for key, value in bad:
        producer.produce(kafka.events_topic, key=key, value=value, headers=[("traceparent", b"junk")])
    producer.flush(10)
    return {"defs": defs, "kafka": kafka, "tenants": tenants, "good": good, "bad": len(bad),
            "instance": dagster_instance}


def _tick(pipeline, cursor=None):
    defs, instance = pipeline["defs"], pipeline["instance"]
    sensor_def = defs.resolve_sensor_def("memory_events_sensor")
    with build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=defs.resources) as context:
        result = sensor_def(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def _execute(pipeline, request):
    job = pipeline["defs"].resolve_job_def("memory_ingest_job")
    result = job.execute_in_process(run_config=request.run_config, tags=request.tags,
                                    instance=pipeline["instance"])
    assert result.success
    return result


def _counts(service_env, tenant):
    pg = PostgresResource(dsn=service_env["AMEM_PG_DSN"])
    milvus = MilvusResource(uri=service_env["AMEM_MILVUS_URI"])
    events = vectors = mv = 0
    with pg.tenant_transaction(tenant) as conn:
        for region in ("eu", "us"):
            e, v = pg_memory.count_tenant(conn, tenant, region)
            events, vectors, mv = events + e, vectors + v, mv + milvus.count(tenant, region)
    return events, vectors, mv


def test_sensor_to_stores_end_to_end(pipeline, service_env):
    result = _tick(pipeline)
    tenants = pipeline["tenants"]
    assert sorted(result.dynamic_partitions_requests[0].partition_keys) == sorted(tenants.values())
    assert result.run_requests, "every tenant is due under the test policy"
    covered = set()
    for request in result.run_requests:
        covered |= {item["tenant_id"] for item in request.run_config["ops"]["memory_events"]["config"]["offsets"]}
        run = _execute(pipeline, request)
        stored = [m for m in run.get_asset_materialization_events()
                  if m.asset_key.to_user_string() == "memory_events"]
        assert stored[0].materialization.metadata["expired_on_arrival"].value == 1
        # A bounded table of the run's busiest tenants, whatever the number of tenants per run.
        busiest = stored[0].materialization.metadata["busiest_tenants"].value.records
        assert 0 < len(busiest) <= 10 and all(r.data["new"] == 12 for r in busiest)
        checks = run.get_asset_check_evaluations()
        assert checks and all(c.passed for c in checks), [c.description for c in checks]
    assert covered == set(tenants.values())

    for name, tenant in tenants.items():
        assert _counts(service_env, tenant) == (12, 12, 12), name

    # Semantic search per tenant: the best hit is that tenant's matching memory, never another tenant's.
    embedder = EmbedderResource()
    pg = PostgresResource(dsn=service_env["AMEM_PG_DSN"])
    milvus = MilvusResource(uri=service_env["AMEM_MILVUS_URI"])
    for name, query in (("astro", "photos of galaxies"), ("cook", "baking bread"), ("bank", "credit card fees")):
        tenant = tenants[name]
        vector = embedder.encode([query])[0]
        with pg.tenant_transaction(tenant) as conn:
            hits = [h for region in ("eu", "us") for h in pg_memory.search(conn, tenant, region, vector, k=3)]
            own = {str(r[0]) for r in conn.execute(
                "SELECT event_id FROM amem_eu.memory_events WHERE tenant_id = %s UNION ALL "
                "SELECT event_id FROM amem_us.memory_events WHERE tenant_id = %s", (tenant, tenant))}
        best = max(hits, key=lambda h: h.score)
        assert best.event_id in own
        assert any(word in best.text.lower() for word in {"astro": ["galaxy", "telescope", "supernova"],
                                                          "cook": ["bread", "dough"],
                                                          "bank": ["credit", "charge"]}[name])
        milvus_hits = [h for region in ("eu", "us") for h in milvus.search(tenant, region, vector, k=3)]
        assert {h.event_id for h in milvus_hits} <= own

    # The DLQ holds every bad message, each with its reason.
    kafka = pipeline["kafka"]
    consumer = kafka.consumer()
    dead, _ = read_from(consumer, kafka.dlq_topic, {0: 0}, max_messages=1000, deadline=time.monotonic() + 10)
    consumer.close()
    codes = sorted(header(r, ERROR_HEADER) for r in dead)
    assert codes == sorted(["not_json", "missing_field", "bad_tenant_id", "too_large", "wrong_type",
                            "unknown_region", "key_mismatch"])

    # Executing the same runs again changes no counts; a second tick finds nothing new.
    for request in result.run_requests:
        _execute(pipeline, request)
    for tenant in tenants.values():
        assert _counts(service_env, tenant) == (12, 12, 12)
    again = _tick(pipeline, cursor=result.cursor)
    assert not again.run_requests and not again.dynamic_partitions_requests


def test_new_embeddings_refresh_tenant_stats(pipeline, service_env):
    """Agent C: the embeddings sensor sees `memory.embeddings` traffic and memory_stats materialises per tenant."""
    defs, instance = pipeline["defs"], pipeline["instance"]
    if not instance.get_dynamic_partitions("tenants"):
        pytest.skip("needs the end-to-end test's tenants")
    sensor_def = defs.resolve_sensor_def("memory_embeddings_sensor")
    deadline = time.monotonic() + 30
    cursor, requests = None, []
    while not requests and time.monotonic() < deadline:
        with build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                  resources=defs.resources) as context:
            result = sensor_def(context)
        cursor, requests = result.cursor, result.run_requests
        if not requests:
            time.sleep(1)
    assert requests, "the embeddings sensor requested no stats run"
    job = defs.resolve_job_def("memory_stats_job")
    for request in requests:
        assert job.execute_in_process(tags=request.tags, instance=instance).success
    pg = PostgresResource(dsn=service_env["AMEM_PG_DSN"])
    for tenant in pipeline["tenants"].values():
        with pg.tenant_transaction(tenant) as conn:
            row = conn.execute("SELECT events, pg_vectors, milvus_vectors FROM amem.tenant_stats WHERE tenant_id = %s",
                               (tenant,)).fetchone()
        assert row == (12, 12, 12)
