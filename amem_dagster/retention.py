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
    """Drop whole expired daily partitions, row-delete the partial day, delete from Milvus, then verify."""
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


def verify_purged(postgres: PostgresResource, milvus: MilvusResource, region: str, cutoff: datetime,
                  tenants: list[str]) -> None:
    """Raise PurgeIncomplete unless no store holds anything of `region` created before `cutoff`."""
    with postgres.maintenance_transaction() as conn:
        left = {table: pg_lifecycle.count_before(conn, region, table, cutoff) for table in pg_lifecycle.PURGE_ORDER}
    left["milvus"] = sum(milvus.count(t, region, created_before=cutoff) for t in tenants)
    if any(left.values()):
        raise PurgeIncomplete(f"region {region} still holds memories older than {cutoff:%Y-%m-%d %H:%M} UTC: {left}")
