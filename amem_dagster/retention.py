"""Retention purges: remove a region's memories older than its window from every store, verify, audit."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from amem_dagster.errors import AmemError
from resources import pg_lifecycle
from resources.milvus import MilvusResource
from resources.postgres import PostgresResource


class PurgeIncomplete(AmemError):
    """A store still holds memories past the retention window after a purge."""


@dataclass
class PurgeReport:
    """What one region's purge removed (or would remove, in a dry run), per store."""

    region: str
    cutoff: datetime
    dry_run: bool
    removed: dict[str, int] = field(default_factory=lambda: {"pg_events": 0, "pg_vectors": 0, "milvus_vectors": 0})
    partitions_dropped: list[str] = field(default_factory=list)
    rows_deleted: int = 0

    @property
    def total(self) -> int:
        return sum(self.removed.values())


def purge_region(postgres: PostgresResource, milvus: MilvusResource, region: str, retention_days: int, *,
                 now: datetime | None = None, dry_run: bool = False, actor: str = "amem") -> PurgeReport:
    """Row-delete expired vectors day by day; drop whole expired days of events and row-delete the partial day;
    delete from Milvus; then verify that nothing older is left anywhere."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    report = PurgeReport(region=region, cutoff=cutoff, dry_run=dry_run)
    labels = {"memory_events": "pg_events", "memory_vectors": "pg_vectors"}
    with postgres.maintenance_transaction() as conn:
        tenants = pg_lifecycle.known_tenants(conn)
        if dry_run:
            for table, label in labels.items():
                report.removed[label] = pg_lifecycle.count_before(conn, region, table, cutoff)
    if dry_run:
        report.removed["milvus_vectors"] = sum(milvus.count(t, region, created_before=cutoff) for t in tenants)
        return report

    for table in pg_lifecycle.PURGE_ORDER:
        if table in pg_lifecycle.ROW_EXPIRED:
            deleted = _delete_by_day(postgres, region, table, cutoff)
            report.removed[labels[table]] += deleted
            report.rows_deleted += deleted
            continue
        # One short transaction per partition: dropping one locks its parent table exclusively.
        with postgres.owner_transaction() as conn:
            expired = pg_lifecycle.expired_partitions(conn, region, table, cutoff)
        for partition in expired:
            with postgres.owner_transaction() as conn:
                report.removed[labels[table]] += pg_lifecycle.drop_partition(conn, region, partition)
            report.partitions_dropped.append(partition.name)
        with postgres.maintenance_transaction() as conn:
            deleted = pg_lifecycle.delete_before(conn, region, table, cutoff)
        report.removed[labels[table]] += deleted
        report.rows_deleted += deleted
    for tenant in tenants:
        report.removed["milvus_vectors"] += milvus.delete(tenant, region, created_before=cutoff)

    verify_purged(postgres, milvus, region, cutoff, tenants)
    with postgres.maintenance_transaction() as conn:
        pg_lifecycle.audit(conn, actor=actor, action="retention_purge", region=region, details={
            "cutoff": cutoff.isoformat(), "retention_days": retention_days, "removed": report.removed,
            "partitions_dropped": len(report.partitions_dropped), "rows_deleted": report.rows_deleted})
    return report


def _delete_by_day(postgres: PostgresResource, region: str, table: str, cutoff: datetime) -> int:
    """Row-delete everything before `cutoff`, oldest day first, one transaction per day that holds rows: each
    DELETE is a range on the created_at index, and locks, WAL and a failure stay bounded by one day's rows."""
    deleted = 0
    while True:
        with postgres.maintenance_transaction() as conn:
            oldest = pg_lifecycle.oldest_before(conn, region, table, cutoff)
            if oldest is None:
                return deleted
            day_end = oldest.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
            deleted += pg_lifecycle.delete_before(conn, region, table, min(day_end, cutoff))


def verify_purged(postgres: PostgresResource, milvus: MilvusResource, region: str, cutoff: datetime,
                  tenants: list[str]) -> None:
    """Raise PurgeIncomplete unless no store holds anything of `region` created before `cutoff`."""
    with postgres.maintenance_transaction() as conn:
        left = {table: pg_lifecycle.count_before(conn, region, table, cutoff) for table in pg_lifecycle.PURGE_ORDER}
    left["milvus"] = sum(milvus.count(t, region, created_before=cutoff) for t in tenants)
    if any(left.values()):
        raise PurgeIncomplete(f"region {region} still holds memories older than {cutoff:%Y-%m-%d %H:%M} UTC: {left}")
