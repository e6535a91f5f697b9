"""When a tenant's pending events become a run, and how due tenants are grouped into few runs.

A run costs seconds before it does any work (process start, imports, model load), so runs cover many tenant
partitions at once: a contiguous key range of the `tenants` dynamic partitions, which Dagster executes as one
run under a single-run backfill policy. A tenant is due when its backlog or the age of its oldest pending
event passes a threshold, like Kafka's linger. Once one tenant is due, a launch is paid for anyway, so every
pending tenant rides along, in as few contiguous ranges as `max_tenants_per_run` allows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sensors.cursor import PendingTenant


@dataclass(frozen=True)
class BatchPolicy:
    """Thresholds that trade freshness for run overhead."""

    min_events: int = 200
    # The longest an event waits for its run request, counted from its Kafka timestamp; ticks come at intervals,
    # so a tenant is due at the last tick before it would pass this.
    max_wait_seconds: float = 10.0
    max_tenants_per_run: int = 500


@dataclass(frozen=True)
class RunPlan:
    """One run: a contiguous range of tenant partitions and the exact offsets each tenant's events sit at."""

    first_tenant: str
    last_tenant: str
    ranges: dict[str, dict[int, tuple[int, int]]]  # tenant → partition → (first, last) offsets

    def run_key(self, prefix: str = "events", cluster_id: str = "") -> str:
        """Stable per cluster, tenant set and offset ranges: a replayed plan dedupes, new work never collides.

        The cluster id matters because offsets restart on a new cluster (the in-memory broker's restart).
        """
        canonical = json.dumps([cluster_id, {t: sorted(r.items()) for t, r in sorted(self.ranges.items())}],
                               separators=(",", ":"))
        return f"{prefix}-{self.first_tenant}..{self.last_tenant}-{hashlib.sha256(canonical.encode()).hexdigest()[:24]}"


def due_tenants(pending: Mapping[str, PendingTenant], now: float, policy: BatchPolicy,
                next_tick_in: float = 0.0) -> set[str]:
    """Tenants with `min_events` pending, or whose oldest event would wait past `max_wait_seconds` by the next tick."""
    deadline = now + max(next_tick_in, 0.0) - policy.max_wait_seconds
    return {t for t, p in pending.items() if p.count >= policy.min_events or p.first_seen <= deadline}


def plan_runs(
    pending: Mapping[str, PendingTenant], due: set[str], partition_order: Sequence[str], policy: BatchPolicy
) -> list[RunPlan]:
    """When any tenant is due, group all pending tenants into runs over contiguous ranges of `partition_order`."""
    if not due:
        return []
    index = {key: i for i, key in enumerate(partition_order)}
    missing = pending.keys() - index.keys()
    if missing:
        raise ValueError(f"tenants without a partition: {sorted(missing)[:5]}")
    positions = sorted(index[t] for t in pending)
    plans = []
    start = positions[0]
    end = start
    for pos in positions[1:]:
        if pos - start >= policy.max_tenants_per_run:
            plans.append(_plan(pending, partition_order, start, end))
            start = pos
        end = pos
    plans.append(_plan(pending, partition_order, start, end))
    return plans


def _plan(pending: Mapping[str, PendingTenant], order: Sequence[str], start: int, end: int) -> RunPlan:
    tenants = order[start:end + 1]
    ranges = {t: {p: (span[0], span[1]) for p, span in pending[t].ranges.items()} for t in tenants if t in pending}
    return RunPlan(first_tenant=order[start], last_tenant=order[end], ranges=ranges)
