"""expired_memory_purge: one partition per region; each materialisation purges what outlived its window."""

from collections.abc import Sequence

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    StaticPartitionsDefinition,
    asset,
)

from amem_dagster.k8s_tags import CPU_STEP_TAGS
from amem_dagster.retention import purge_region
from resources.milvus import MilvusResource
from resources.postgres import PostgresResource


def build_retention_purge_asset(regions: Sequence[str], retention_days: dict[str, int]) -> AssetsDefinition:
    """The purge asset over `regions`, with each region's window (days) fixed at load from AMEM_RETENTION."""

    @asset(
        name="expired_memory_purge",
        partitions_def=StaticPartitionsDefinition(list(regions)),
        group_name="lifecycle",
        kinds={"postgres", "milvus"},
        op_tags=CPU_STEP_TAGS,
    )
    def expired_memory_purge(context: AssetExecutionContext, postgres: PostgresResource,
                             milvus: MilvusResource) -> MaterializeResult:
        """Memories of the region older than its retention window, removed from Postgres and Milvus and verified."""
        region = context.partition_key
        # Keep a week of daily partitions ready ahead of time, so inserts never wait on DDL.
        postgres.ensure_partitions(region, _days_ahead(7))
        report = purge_region(postgres, milvus, region, retention_days[region],
                              actor=f"dagster run {context.run_id}")
        context.log.info(f"purged {report.total} rows/vectors of {region} older than {report.cutoff:%Y-%m-%d}")
        return MaterializeResult(metadata={
            "region": region,
            "retention_days": retention_days[region],
            "cutoff": MetadataValue.timestamp(report.cutoff),
            **{f"removed_{store}": n for store, n in report.removed.items()},
            "partitions_dropped": len(report.partitions_dropped),
            "rows_deleted": report.rows_deleted,
            "verified_nothing_older": True,
        })

    return expired_memory_purge


def _days_ahead(days: int):
    from datetime import UTC, datetime, timedelta

    today = datetime.now(UTC).date()
    return [today + timedelta(days=n) for n in range(days + 1)]
