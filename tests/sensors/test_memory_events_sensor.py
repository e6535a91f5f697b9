"""memory_events_sensor against the real embedded broker and a real DagsterInstance, on private topics per test."""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid

import pytest
from dagster import SkipReason, build_sensor_context

from amem_dagster.definitions import build_definitions
from amem_dagster.settings import Settings
from resources.dead_letters import DETAIL_HEADER, ERROR_HEADER, SOURCE_HEADER
from resources.kafka import KafkaResource, read_from
from sensors.batching import BatchPolicy, RunPlan
from sensors.cursor import EventsCursor

pytestmark = pytest.mark.integration
NOW_POLICY = BatchPolicy(min_events=200, max_wait_seconds=0)  # everything pending is due at once


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def kafka(service_env) -> KafkaResource:
    suffix = uuid.uuid4().hex[:8]
    resource = KafkaResource(bootstrap_servers=service_env["AMEM_KAFKA_BOOTSTRAP"], events_partitions=3,
                             events_topic=f"sens.{suffix}.events", embeddings_topic=f"sens.{suffix}.embeddings",
                             dlq_topic=f"sens.{suffix}.dlq")
    resource.provision_topics()
    return resource


@pytest.fixture
def env(service_env, dagster_instance, kafka):
    settings = Settings.from_env(service_env)

    def defs(policy: BatchPolicy | None = None, kafka_resource: KafkaResource = kafka):
        return build_definitions(settings, resources={"kafka": kafka_resource}, events_policy=policy)

    return {"defs": defs, "instance": dagster_instance, "kafka": kafka}


def _tenants(n: int) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"s-{run}-{i}" for i in range(n)]


def _event(tenant: str, text: str = "remember this") -> bytes:
    return json.dumps({"event_id": str(uuid.uuid4()), "tenant_id": tenant, "agent_name": "planner",
                       "event_type": "Observation", "text": text}).encode()


def _produce(kafka: KafkaResource, messages) -> list[tuple[int, int]]:
    """Produce (key, value[, headers]) messages in order; returns each one's (partition, offset)."""
    producer = kafka.producer()
    placed: list[tuple[int, int] | None] = [None] * len(messages)

    def report(i):
        def on_delivery(err, msg):
            assert err is None, err
            placed[i] = (msg.partition(), msg.offset())
        return on_delivery

    for i, (key, value, *headers) in enumerate(messages):
        producer.produce(kafka.events_topic, key=key, value=value, headers=headers[0] if headers else None,
                         on_delivery=report(i))
    assert producer.flush(10) == 0
    return placed  # type: ignore[return-value]


def _tick(env, cursor: str | None = None, policy: BatchPolicy | None = None, *, apply: bool = True,
          defs=None, log: _Records | None = None):
    defs = defs or env["defs"](policy)
    instance = env["instance"]
    with build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=defs.resources) as ctx:
        if log is not None:
            ctx.log.addHandler(log)
        result = defs.resolve_sensor_def("memory_events_sensor")(ctx)
    if apply and not isinstance(result, SkipReason):
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def _offsets(request) -> list[dict]:
    return request.run_config["ops"]["memory_events"]["config"]["offsets"]


def _expected(tenant_of_placement: dict[tuple[int, int], str]) -> list[dict]:
    spans: dict[tuple[str, int], list[int]] = {}
    for (partition, offset), tenant in tenant_of_placement.items():
        span = spans.setdefault((tenant, partition), [offset, offset])
        span[0], span[1] = min(span[0], offset), max(span[1], offset)
    return [{"tenant_id": t, "partition": p, "first": lo, "last": hi} for (t, p), (lo, hi) in sorted(spans.items())]


def test_default_policy_holds_a_few_events_then_a_due_tick_requests_exactly_their_offsets(env):
    a, b = _tenants(2)
    placed = _produce(env["kafka"], [(t.encode(), _event(t)) for t in (a, b, a)])
    first = _tick(env)  # default BatchPolicy: 200 events or 10 s
    assert not first.run_requests
    assert [sorted(r.partition_keys) for r in first.dynamic_partitions_requests] == [[a, b]]
    cursor = EventsCursor.from_json(first.cursor)
    assert set(cursor.pending) == {a, b} and cursor.pending[a].count == 2
    assert sum(cursor.offsets.values()) == 3 and set(cursor.offsets) == {0, 1, 2}
    assert cursor.cluster_id

    second = _tick(env, first.cursor, NOW_POLICY)
    assert not second.dynamic_partitions_requests  # registered by the first tick
    assert len(second.run_requests) == 1
    request = second.run_requests[0]
    assert _offsets(request) == _expected(dict(zip(placed, (a, b, a), strict=True)))
    assert request.tags["dagster/asset_partition_range_start"] == a
    assert request.tags["dagster/asset_partition_range_end"] == b
    after = EventsCursor.from_json(second.cursor)
    assert after.pending == {} and after.offsets == cursor.offsets


def test_broker_down_is_a_quick_skip(env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = KafkaResource(bootstrap_servers=f"127.0.0.1:{port}", events_topic="sens.none.events")
    started = time.monotonic()
    result = _tick(env, defs=env["defs"](NOW_POLICY, dead))
    assert isinstance(result, SkipReason) and "Kafka" in result.skip_message
    assert time.monotonic() - started < 20


def test_another_cluster_id_resets_the_cursor_with_a_warning(env):
    (tenant,) = _tenants(1)
    placed = _produce(env["kafka"], [(tenant.encode(), _event(tenant)) for _ in range(2)])
    stale = EventsCursor(cluster_id="amem-gone", offsets={0: 500, 1: 500, 2: 500})
    stale.add_event("ghost-tenant", 1, 400, now=time.time())
    log = _Records()
    result = _tick(env, stale.to_json(), log=log)
    cursor = EventsCursor.from_json(result.cursor)
    assert cursor.cluster_id not in ("", "amem-gone")
    assert sum(cursor.offsets.values()) == 2  # read again from offset 0
    assert set(cursor.pending) == {tenant} and cursor.pending[tenant].ranges == {
        placed[0][0]: [placed[0][1], placed[1][1]]}
    warnings = [r.getMessage() for r in log.records if r.levelno == logging.WARNING]
    assert any("amem-gone" in m and "restart at 0" in m for m in warnings), warnings


def test_run_keys_differ_across_clusters(env):
    """After the in-memory broker restarts, offsets restart at 0: a run key without the cluster id would equal one
    Dagster already launched, and Dagster skips a run request whose run key it has seen."""
    (tenant,) = _tenants(1)
    placed = _produce(env["kafka"], [(tenant.encode(), _event(tenant)) for _ in range(2)])
    partition = placed[0][0]
    # The old cluster's sensor requested this exact plan before the broker restarted.
    plan = RunPlan(tenant, tenant, {tenant: {partition: (0, 1)}})
    old_keys = {plan.run_key(), plan.run_key("events", "amem-gone")}
    stale = EventsCursor(cluster_id="amem-gone", offsets={0: 2, 1: 2, 2: 2})
    result = _tick(env, stale.to_json(), NOW_POLICY)
    assert [_offsets(r) for r in result.run_requests] == [
        [{"tenant_id": tenant, "partition": partition, "first": 0, "last": 1}]]
    assert result.run_requests[0].run_key not in old_keys


def _covered(valid: dict[tuple[int, int], str], cursor: EventsCursor, requests) -> None:
    """Every valid event below the cursor's offsets is pending for its tenant or in a requested run's offsets."""
    in_runs = {(item["tenant_id"], item["partition"], o) for r in requests for item in _offsets(r)
               for o in range(item["first"], item["last"] + 1)}
    for (partition, offset), tenant in valid.items():
        if offset >= cursor.offsets.get(partition, 0):
            continue
        span = cursor.pending.get(tenant, None)
        pending = span is not None and partition in span.ranges and (
            span.ranges[partition][0] <= offset <= span.ranges[partition][1])
        assert pending or (tenant, partition, offset) in in_runs, (tenant, partition, offset)


def test_cursor_never_moves_past_an_uncovered_range(env, monkeypatch):
    import sensors.memory_events_sensor as module

    monkeypatch.setattr(module, "MAX_MESSAGES_PER_TICK", 7)  # several partial reads
    tenants = _tenants(5)
    policy = BatchPolicy(min_events=4, max_wait_seconds=60, max_tenants_per_run=2)
    valid: dict[tuple[int, int], str] = {}
    cursor, requests, ticks, produced = None, [], 0, 0
    for round_ in range(2):
        messages = [(t.encode(), _event(t)) for i, t in enumerate(tenants) for _ in range(1 + (i + round_) % 3)]
        messages.insert(3, (tenants[0].encode(), b"{broken"))
        placed = _produce(env["kafka"], messages)
        produced += len(messages)
        valid.update({pl: key.decode() for pl, (key, value) in zip(placed, messages, strict=True)
                      if value != b"{broken"})
        for _ in range(10):
            result = _tick(env, cursor, policy)
            cursor, state = result.cursor, EventsCursor.from_json(result.cursor)
            requests += result.run_requests
            ticks += 1
            _covered(valid, state, requests)
            if sum(state.offsets.values()) == produced:
                break
    assert sum(EventsCursor.from_json(cursor).offsets.values()) == produced
    assert ticks >= 4 and len(requests) >= 2  # partial reads happened, thresholds were met, runs were split


def test_run_keys_are_stable_per_plan_and_differ_per_range(env):
    (tenant,) = _tenants(1)
    _produce(env["kafka"], [(tenant.encode(), _event(tenant)) for _ in range(3)])
    first = _tick(env, None, NOW_POLICY)
    replay = _tick(env, None, NOW_POLICY)  # the same tick again from the same cursor, tenant now registered
    assert [r.run_key for r in first.run_requests] == [r.run_key for r in replay.run_requests]
    assert [_offsets(r) for r in first.run_requests] == [_offsets(r) for r in replay.run_requests]
    _produce(env["kafka"], [(tenant.encode(), _event(tenant))])
    later = _tick(env, first.cursor, NOW_POLICY)
    assert len(later.run_requests) == 1 and later.run_requests[0].run_key != first.run_requests[0].run_key
    other = _tick(env, first.cursor, BatchPolicy(min_events=1, max_wait_seconds=0))
    assert [r.run_key for r in other.run_requests] == [r.run_key for r in later.run_requests]  # same plan


def test_dead_letters_keep_the_original_and_do_not_block(env):
    kafka = env["kafka"]
    tenant, = _tenants(1)
    headers = [("traceparent", b"junk"), ("x-origin", b"agent-7")]
    bad = [(tenant.encode(), b"{not json", headers),
           (tenant.encode(), json.dumps({"tenant_id": tenant, "text": "x"}).encode(), headers),
           (b"Other-Key", _event(tenant), headers)]
    good = [(tenant.encode(), _event(tenant, f"fine {i}")) for i in range(3)]
    placed = _produce(kafka, bad + good)
    result = _tick(env, None, NOW_POLICY)
    assert [_offsets(r) for r in result.run_requests] == [_expected(dict.fromkeys(placed[3:], tenant))]

    consumer = kafka.consumer()
    try:
        dead, _ = read_from(consumer, kafka.dlq_topic, {0: 0}, max_messages=100, deadline=time.monotonic() + 10)
    finally:
        consumer.close()
    # The DLQ has one partition: records from several source partitions arrive in delivery order.
    by_source = {f"{kafka.events_topic}/{p}/{o}": message for (p, o), message in zip(placed, bad, strict=False)}
    codes = {}
    for record in dead:
        extra = dict(record.headers[2:])
        assert set(extra) == {ERROR_HEADER, DETAIL_HEADER, SOURCE_HEADER} and extra[DETAIL_HEADER]
        key, value, original_headers = by_source.pop(extra[SOURCE_HEADER].decode())
        assert (record.key, record.value, list(record.headers[:2])) == (key, value, original_headers)
        codes[value] = extra[ERROR_HEADER].decode()
    assert not by_source and len(dead) == len(bad)
    assert [codes[v] for _, v, _ in bad] == ["not_json", "missing_field", "key_mismatch"]


def test_one_unparseable_number_does_not_block_the_topic(env):
    """A JSON integer over 4300 digits used to make parse_event raise ValueError: the tick failed, forever."""
    (tenant,) = _tenants(1)
    poison = _event(tenant)[:-1] + b', "metadata": {"n": ' + b"1" * 5000 + b"}}"
    placed = _produce(env["kafka"], [(tenant.encode(), poison), (tenant.encode(), _event(tenant))])
    error = result = None
    try:
        result = _tick(env, None, NOW_POLICY)
    except Exception as exc:  # keep no traceback: its frames would hold the sensor's Kafka clients open
        error = f"the tick raised {type(exc).__name__}: {str(exc)[:120]}"
    assert error is None, error
    assert [_offsets(r) for r in result.run_requests] == [_expected({placed[1]: tenant})]
    consumer = env["kafka"].consumer()
    try:
        dead, _ = read_from(consumer, env["kafka"].dlq_topic, {0: 0}, max_messages=10, deadline=time.monotonic() + 10)
    finally:
        consumer.close()
    assert [(r.value, dict(r.headers)[ERROR_HEADER]) for r in dead] == [(poison, b"not_json")]
