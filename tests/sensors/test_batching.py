"""due_tenants and plan_runs: when pending tenants become runs, and how they are grouped."""

from __future__ import annotations

import pytest

from sensors.batching import BatchPolicy, RunPlan, due_tenants, plan_runs
from resources.kafka import KafkaRecord
from sensors.cursor import PendingTenant
from sensors.memory_events_sensor import _produced_at

POLICY = BatchPolicy(min_events=3, max_wait_seconds=10.0, max_tenants_per_run=500)
ORDER = [f"t{i:02d}" for i in range(10)]


def _pending(count: int = 1, first_seen: float = 100.0, partition: int = 0, offset: int = 0) -> PendingTenant:
    p = PendingTenant(first_seen=first_seen)
    for i in range(count):
        p.add(partition, offset + i)
    return p


def test_due_by_count_and_by_age():
    pending = {"full": _pending(3), "old": _pending(1, first_seen=90.0), "young": _pending(2, first_seen=99.0)}
    assert due_tenants(pending, now=100.0, policy=POLICY) == {"full", "old"}
    assert due_tenants(pending, now=109.0, policy=POLICY) == {"full", "old", "young"}
    assert due_tenants({}, now=0.0, policy=POLICY) == set()
    assert due_tenants(pending, now=100.0, policy=BatchPolicy(min_events=1, max_wait_seconds=0)) == set(pending)


def test_a_tenant_is_due_at_the_last_tick_before_its_wait_would_be_exceeded():
    pending = {"old": _pending(1, first_seen=94.0), "young": _pending(1, first_seen=99.0)}
    # max_wait 10 s, ticks every 5 s: "old" (6 s) would have waited 11 s at the next tick, "young" only 6 s.
    assert due_tenants(pending, now=100.0, policy=POLICY, next_tick_in=5.0) == {"old"}
    assert due_tenants(pending, now=100.0, policy=POLICY, next_tick_in=0.0) == set()
    assert due_tenants(pending, now=100.0, policy=POLICY, next_tick_in=-3.0) == set()


def test_nothing_due_plans_nothing():
    assert plan_runs({"t01": _pending()}, set(), ORDER, POLICY) == []


def test_one_contiguous_range_in_partition_order_with_ride_alongs():
    pending = {"t02": _pending(partition=1, offset=4), "t05": _pending(2, partition=0, offset=7),
               "t07": _pending(partition=2), "t09": _pending()}
    plans = plan_runs(pending, {"t07"}, ORDER, POLICY)
    # Once one tenant is due every pending tenant rides along (sensors/batching.py since 63154fb); the range
    # also spans partitions with nothing pending (t03, t04, t06, t08), which the run reads no offsets for.
    assert plans == [RunPlan(first_tenant="t02", last_tenant="t09",
                             ranges={"t02": {1: (4, 4)}, "t05": {0: (7, 8)}, "t07": {2: (0, 0)}, "t09": {0: (0, 0)}})]


def test_order_is_the_partition_order_not_alphabetical():
    order = ["zeta", "alpha", "mid", "beta"]
    plans = plan_runs({"zeta": _pending(), "mid": _pending()}, {"mid"}, order, POLICY)
    assert [(p.first_tenant, p.last_tenant, sorted(p.ranges)) for p in plans] == [("zeta", "mid", ["mid", "zeta"])]


def test_max_tenants_per_run_splits():
    pending = {t: _pending(offset=i) for i, t in enumerate(ORDER)}
    plans = plan_runs(pending, {"t05"}, ORDER, BatchPolicy(max_tenants_per_run=4))
    assert [(p.first_tenant, p.last_tenant) for p in plans] == [("t00", "t03"), ("t04", "t07"), ("t08", "t09")]
    assert sorted(t for p in plans for t in p.ranges) == ORDER  # every tenant in exactly one run
    single = plan_runs({"t01": _pending(), "t02": _pending()}, {"t02"}, ORDER, BatchPolicy(max_tenants_per_run=1))
    assert [(p.first_tenant, p.last_tenant) for p in single] == [("t01", "t01"), ("t02", "t02")]


def test_split_starts_a_new_range_at_the_next_pending_tenant():
    pending = {"t00": _pending(), "t04": _pending(), "t08": _pending()}
    plans = plan_runs(pending, {"t00"}, ORDER, BatchPolicy(max_tenants_per_run=5))
    assert [(p.first_tenant, p.last_tenant, sorted(p.ranges)) for p in plans] == [
        ("t00", "t04", ["t00", "t04"]), ("t08", "t08", ["t08"])]  # no range spans t05..t07: nothing pending there


def test_ranges_respect_the_limit_and_cover_every_pending_tenant_once():
    order = [f"k{i:03d}" for i in range(200)]
    pending = {order[i]: _pending() for i in range(0, 200, 7)}
    for limit in (1, 3, 10, 64, 500):
        plans = plan_runs(pending, {order[7]}, order, BatchPolicy(max_tenants_per_run=limit))
        for plan in plans:
            assert order.index(plan.last_tenant) - order.index(plan.first_tenant) < limit
        assert sorted(t for plan in plans for t in plan.ranges) == sorted(pending)


def test_unknown_tenant_raises():
    with pytest.raises(ValueError, match="tenants without a partition"):
        plan_runs({"nobody": _pending()}, {"nobody"}, ORDER, POLICY)
    with pytest.raises(ValueError, match="nobody"):  # a pending tenant is planned too, due or not
        plan_runs({"t01": _pending(), "nobody": _pending()}, {"t01"}, ORDER, POLICY)


def test_run_key_is_stable_and_specific():
    def key(ranges, first="t01", last="t03"):
        return RunPlan(first_tenant=first, last_tenant=last, ranges=ranges).run_key()

    base = {"t01": {0: (1, 5), 2: (0, 0)}, "t03": {1: (7, 9)}}
    same_reordered = {"t03": {1: (7, 9)}, "t01": {2: (0, 0), 0: (1, 5)}}
    assert key(base) == key(same_reordered) == key({t: dict(r) for t, r in base.items()})
    assert key(base).startswith("events-t01..t03-")
    assert RunPlan("t01", "t03", base).run_key("stats").startswith("stats-t01..t03-")
    others = [
        key({**base, "t01": {0: (1, 6), 2: (0, 0)}}),  # a different offset range
        key({**base, "t01": {0: (1, 5), 1: (0, 0)}}),  # a different partition
        key({**base, "t02": {0: (6, 6)}}),  # another tenant
        key({"t01": base["t01"]}),  # fewer tenants
        key({"t01": {0: (1, 5), 2: (0, 0)}, "t04": {1: (7, 9)}}),  # same offsets, another tenant
    ]
    assert len({key(base), *others}) == 1 + len(others)


def test_replanning_the_same_pending_gives_the_same_keys():
    pending = {t: _pending(2, partition=i % 3, offset=10 * i) for i, t in enumerate(ORDER)}
    first = [p.run_key() for p in plan_runs(pending, {"t03"}, ORDER, BatchPolicy(max_tenants_per_run=3))]
    again = [p.run_key() for p in plan_runs(pending, {"t03"}, ORDER, BatchPolicy(max_tenants_per_run=3))]
    assert first == again and len(set(first)) == len(first)


def test_run_key_depends_on_the_cluster():
    plan = RunPlan("t01", "t01", {"t01": {0: (0, 4)}})
    assert plan.run_key("events", "cluster-a") == plan.run_key("events", "cluster-a")
    assert len({plan.run_key("events", "cluster-a"), plan.run_key("events", "cluster-b"), plan.run_key()}) == 3


def test_an_events_wait_counts_from_its_kafka_timestamp_never_from_the_future():
    def record(timestamp_ms):
        return KafkaRecord(partition=0, offset=0, key=b"t", value=b"{}", headers=(), timestamp_ms=timestamp_ms)

    assert _produced_at(record(95_500), now=100.0) == 95.5
    assert _produced_at(record(200_000), now=100.0) == 100.0  # a producer clock ahead of ours
    assert _produced_at(record(None), now=100.0) == 100.0
    assert _produced_at(record(-1), now=100.0) == 100.0
