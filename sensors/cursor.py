"""The memory_events_sensor cursor: where to read next per Kafka partition, and what is read but not yet run."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

CURSOR_VERSION = 1


@dataclass
class PendingTenant:
    """Valid events of one tenant that are read but not yet in a requested run."""

    first_seen: float
    count: int = 0
    # Kafka partition → [first offset, last offset] holding this tenant's pending events.
    ranges: dict[int, list[int]] = field(default_factory=dict)

    def add(self, partition: int, offset: int) -> None:
        span = self.ranges.get(partition)
        if span is None:
            self.ranges[partition] = [offset, offset]
        else:
            span[0] = min(span[0], offset)
            span[1] = max(span[1], offset)
        self.count += 1


@dataclass
class EventsCursor:
    """Everything below `offsets[p]` is either covered by a requested run or held in `pending`."""

    cluster_id: str = ""
    offsets: dict[int, int] = field(default_factory=dict)
    pending: dict[str, PendingTenant] = field(default_factory=dict)

    def add_event(self, tenant_id: str, partition: int, offset: int, now: float) -> None:
        self.pending.setdefault(tenant_id, PendingTenant(first_seen=now)).add(partition, offset)

    def to_json(self) -> str:
        return json.dumps({
            "v": CURSOR_VERSION,
            "cluster_id": self.cluster_id,
            "offsets": {str(p): o for p, o in sorted(self.offsets.items())},
            "pending": {t: {"first_seen": round(p.first_seen, 3), "count": p.count,
                            "ranges": {str(k): v for k, v in sorted(p.ranges.items())}}
                        for t, p in sorted(self.pending.items())},
        }, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | None) -> EventsCursor:
        if not raw:
            return cls()
        data = json.loads(raw)
        if data.get("v") != CURSOR_VERSION:
            raise ValueError(f"unknown cursor version {data.get('v')!r}")
        return cls(
            cluster_id=data["cluster_id"],
            offsets={int(p): int(o) for p, o in data["offsets"].items()},
            pending={t: PendingTenant(first_seen=p["first_seen"], count=p["count"],
                                      ranges={int(k): list(v) for k, v in p["ranges"].items()})
                     for t, p in data["pending"].items()},
        )
