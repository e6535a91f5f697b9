"""memory_embeddings_sensor against the real embedded broker and a real DagsterInstance, on private topics."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from dagster import Definitions, build_sensor_context

from amem_dagster.definitions import build_definitions, memory_stats_job
from amem_dagster.settings import Settings
from assets.memory_stats import memory_stats
from resources.kafka import KafkaResource
from sensors.batching import BatchPolicy
from sensors.cursor import EventsCursor
from sensors.memory_embeddings_sensor import build_memory_embeddings_sensor
from tests.kafka_topics import private_kafka

pytestmark = pytest.mark.integration


@pytest.fixture
def setup(service_env, dagster_instance):
    kafka = private_kafka(service_env, "emb", events_partitions=3)
    suffix = kafka.events_topic.split(".")[1]
    defs = build_definitions(Settings.from_env(service_env), resources={"kafka": kafka})
    eager = Definitions(assets=[memory_stats], jobs=[memory_stats_job], resources=defs.resources, sensors=[
        build_memory_embeddings_sensor(memory_stats_job, policy=BatchPolicy(min_events=1_000, max_wait_seconds=0))])
    tenants = [f"e-{suffix}-{i}" for i in range(3)]
    dagster_instance.add_dynamic_partitions("tenants", tenants[:2])  # the third one is unknown to Dagster
    return {"kafka": kafka, "defs": defs, "eager": eager, "instance": dagster_instance, "tenants": tenants}


def _announce(kafka: KafkaResource, values: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = kafka.producer()
    for key, value in values:
        producer.produce(kafka.embeddings_topic, key=key, value=value)
    assert producer.flush(10) == 0


def _embedded(tenant: str) -> tuple[bytes, bytes]:
    return tenant.encode(), json.dumps({"event_id": str(uuid.uuid4()), "tenant_id": tenant, "model": "m", "dim": 384,
                                        "created_at": datetime.now(UTC).isoformat()}).encode()


def _tick(setup, defs, cursor=None):
    with build_sensor_context(instance=setup["instance"], cursor=cursor, definitions=defs,
                              resources=defs.resources) as context:
        return defs.resolve_sensor_def("memory_embeddings_sensor")(context)


def test_new_embeddings_of_known_tenants_request_one_stats_run(setup):
    known_a, known_b, unknown = setup["tenants"]
    _announce(setup["kafka"], [_embedded(known_a), _embedded(unknown), _embedded(known_b), _embedded(known_a),
                               (b"x", b"{not json"), (b"x", b"[1]"), (None, None),
                               (b"x", json.dumps({"tenant_id": 'a" or 1=1'}).encode())])
    first = _tick(setup, setup["defs"])  # default STATS_POLICY waits a few seconds for more
    assert not first.run_requests
    cursor = EventsCursor.from_json(first.cursor)
    assert set(cursor.pending) == {known_a, known_b}  # the unknown tenant and the junk are ignored
    assert cursor.pending[known_a].count == 2 and sum(cursor.offsets.values()) == 8

    due = _tick(setup, setup["eager"], first.cursor)
    assert len(due.run_requests) == 1
    request = due.run_requests[0]
    assert request.job_name in (None, memory_stats_job.name)
    assert setup["eager"].resolve_sensor_def("memory_embeddings_sensor").job_name == "memory_stats_job"
    assert request.tags["dagster/asset_partition_range_start"] == known_a
    assert request.tags["dagster/asset_partition_range_end"] == known_b
    assert request.tags["amem/tenants"] == "2" and request.run_key.startswith(f"stats-{known_a}..{known_b}-")
    after = EventsCursor.from_json(due.cursor)
    assert after.pending == {} and after.offsets == cursor.offsets

    again = _tick(setup, setup["eager"], due.cursor)
    assert not again.run_requests  # nothing new


def test_only_unknown_tenants_request_nothing(setup):
    _announce(setup["kafka"], [_embedded(setup["tenants"][2])])
    result = _tick(setup, setup["eager"])
    assert not result.run_requests and EventsCursor.from_json(result.cursor).pending == {}


def test_deeply_nested_message_is_ignored(setup):
    known = setup["tenants"][0]
    _announce(setup["kafka"], [(b"x", b"[" * 100_000), _embedded(known)])
    error = result = None
    try:
        result = _tick(setup, setup["eager"])
    except Exception as exc:  # keep no traceback: its frames would hold the sensor's Kafka consumer open
        error = f"the tick raised {type(exc).__name__}"
    assert error is None, error
    assert [r.tags["dagster/asset_partition_range_start"] for r in result.run_requests] == [known]
