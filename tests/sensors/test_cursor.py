"""EventsCursor / PendingTenant: JSON round trip, version check and pending-range growth."""

from __future__ import annotations

import json

import pytest

from sensors.cursor import CURSOR_VERSION, EventsCursor, PendingTenant


def test_round_trip():
    cursor = EventsCursor(cluster_id="c-1", offsets={2: 10, 0: 7, 11: 0})
    cursor.add_event("beta", 0, 5, now=1000.25)
    cursor.add_event("alpha", 2, 9, now=1001.5)
    cursor.add_event("alpha", 0, 3, now=1002.0)
    restored = EventsCursor.from_json(cursor.to_json())
    assert restored == cursor
    assert restored.to_json() == cursor.to_json()
    data = json.loads(cursor.to_json())
    assert data["v"] == CURSOR_VERSION and list(data["offsets"]) == ["0", "2", "11"]  # sorted, string keys
    assert data["pending"]["alpha"] == {"first_seen": 1001.5, "count": 2, "ranges": {"0": [3, 3], "2": [9, 9]}}


def test_first_seen_is_rounded_to_milliseconds():
    cursor = EventsCursor()
    cursor.add_event("t", 0, 0, now=1.23456789)
    assert EventsCursor.from_json(cursor.to_json()).pending["t"].first_seen == 1.235


@pytest.mark.parametrize("raw", [None, ""])
def test_no_cursor_is_a_fresh_start(raw):
    assert EventsCursor.from_json(raw) == EventsCursor()


@pytest.mark.parametrize("version", [None, 0, 2, "1"])
def test_unknown_version_is_rejected(version):
    raw = json.loads(EventsCursor(cluster_id="c").to_json())
    raw["v"] = version
    with pytest.raises(ValueError, match="unknown cursor version"):
        EventsCursor.from_json(json.dumps(raw))


def test_pending_range_grows_to_cover_every_offset():
    pending = PendingTenant(first_seen=5.0)
    for partition, offset in [(1, 40), (1, 12), (1, 77), (1, 50), (3, 8)]:
        pending.add(partition, offset)
    assert pending.ranges == {1: [12, 77], 3: [8, 8]}
    assert pending.count == 5 and pending.first_seen == 5.0


def test_first_seen_is_kept_from_the_first_event():
    cursor = EventsCursor()
    cursor.add_event("t", 0, 1, now=10.0)
    cursor.add_event("t", 0, 2, now=20.0)
    assert cursor.pending["t"].first_seen == 10.0 and cursor.pending["t"].ranges == {0: [1, 2]}
