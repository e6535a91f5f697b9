"""Demo traffic: deterministic by seed, exact counts, and every message judged by the real event contract."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

import pytest

from amem_dagster import demo
from amem_dagster.demo_texts import EVENT_TYPES, TOPICS
from amem_dagster.errors import EventRejected
from amem_dagster.events import parse_event

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REGIONS = ("eu", "us")


def _parse(message, regions=REGIONS):
    key, value, headers = message
    return parse_event(value, key=key, timestamp_ms=None, headers=headers, regions=regions, default_region="eu",
                       now=NOW)


def test_same_seed_same_bytes_other_seed_other_bytes():
    first = demo.generate(events=120, seed=11, now=NOW)
    assert first == demo.generate(events=120, seed=11, now=NOW)
    assert first.messages != demo.generate(events=120, seed=12, now=NOW).messages


def test_counts_add_up():
    batch = demo.generate(tenants=4, events=200, bad_share=0.1, seed=3, now=NOW)
    assert len(batch.messages) == len(batch.kinds) == 200
    assert (batch.good, batch.bad) == (180, 20)
    assert sum(batch.per_tenant.values()) == 180
    assert sorted(batch.per_tenant) == ["tenant-001", "tenant-002", "tenant-003", "tenant-004"]
    assert sum(batch.bad_kinds.values()) == 20
    assert set(batch.bad_kinds) == set(demo.BAD_KINDS)  # every kind once there are enough bad messages


def test_tenant_sizes_follow_the_skew():
    assert demo.tenant_sizes(10, 3, 0.0) in ([4, 3, 3], [3, 4, 3], [3, 3, 4])
    skewed = demo.tenant_sizes(1000, 5, 1.5)
    assert sum(skewed) == 1000 and skewed == sorted(skewed, reverse=True) and skewed[0] > 3 * skewed[-1]
    assert min(demo.tenant_sizes(12, 10, 3.0)) == 1  # heavy skew still leaves everyone an event
    assert demo.tenant_sizes(2, 5, 0.0) == [1, 1, 0, 0, 0]
    assert demo.tenant_sizes(0, 3, 1.0) == [0, 0, 0]


def test_every_good_message_parses_with_its_key_as_tenant():
    batch = demo.generate(tenants=5, events=400, bad_share=0.0, skew=1.0, seed=5, now=NOW)
    events = [_parse(message) for message in batch.messages]
    assert all(e.tenant_id.encode() == key for e, (key, _, _) in zip(events, batch.messages))
    assert Counter(e.tenant_id for e in events) == Counter(batch.per_tenant)
    assert len({e.event_id for e in events}) == 400
    assert {e.event_type for e in events} == set(EVENT_TYPES)
    assert {e.region for e in events} == set(REGIONS)
    assert any(e.subject_id for e in events) and any(e.subject_id is None for e in events)
    assert any(e.trace_id for e in events) and any(e.metadata for e in events)
    assert len({e.text for e in events}) > 250  # varied enough for search to be meaningful


def test_every_bad_kind_is_rejected_with_its_code():
    batch = demo.generate(tenants=3, events=140, bad_share=1.0, seed=9, now=NOW)
    assert batch.good == 0 and set(batch.bad_kinds) == set(demo.BAD_KINDS)
    for message, kind in zip(batch.messages, batch.kinds):
        with pytest.raises(EventRejected) as rejected:
            _parse(message)
        assert rejected.value.code == demo.BAD_KINDS[kind], (kind, message[1][:120])


def test_region_subset_places_every_event_there_even_when_it_is_not_the_default():
    batch = demo.generate(events=60, bad_share=0.0, seed=2, regions=("us",), default_region="eu", now=NOW)
    assert {_parse(m).region for m in batch.messages} == {"us"}
    assert all(json.loads(m[1])["region"] == "us" for m in batch.messages)


def test_tenant_prefix_names_the_tenants():
    batch = demo.generate(tenants=2, events=10, bad_share=0.0, seed=1, tenant_prefix="acme", now=NOW)
    assert sorted(batch.per_tenant) == ["acme-001", "acme-002"]
    with pytest.raises(ValueError):
        demo.generate(tenant_prefix="Not Valid")


@pytest.mark.parametrize("kwargs", [{"tenants": 0}, {"events": -1}, {"bad_share": 1.5}, {"skew": -1.0},
                                    {"regions": ()}])
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        demo.generate(**kwargs)


def test_every_template_renders_with_its_topic_slots():
    for topic in TOPICS:
        assert set(topic.templates) == set(EVENT_TYPES)
        for templates in topic.templates.values():
            for template in templates:
                assert template.format(**{slot: values[0] for slot, values in topic.slots.items()})
