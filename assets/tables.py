"""Per-tenant figures in Dagit: on each tenant partition's own materialization, or as a bounded table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dagster import AssetExecutionContext, MetadataValue, TableColumn, TableRecord, TableSchema

# A run can cover hundreds of tenants; Dagit tables stay readable and the event log small.
MAX_ROWS = 200


def attach_per_partition(context: AssetExecutionContext, per_tenant: Mapping[str, Mapping[str, int]]) -> None:
    """Each tenant's figures on its own partition's materialization event. A table of every tenant on every
    partition's event would grow with the square of the tenants per run: at 200 tenants it cost seconds of
    event-log writes per step (bench/pipeline.py)."""
    for tenant, figures in per_tenant.items():
        context.add_asset_metadata({name: int(value) for name, value in figures.items()}, partition_key=tenant)


def tenant_table(per_tenant: Mapping[str, Mapping[str, int]], columns: Sequence[str]) -> MetadataValue:
    """A table with a `tenant` column and one integer column per name in `columns`, busiest tenants first."""
    ordered = sorted(per_tenant.items(), key=lambda kv: (-kv[1].get(columns[0], 0), kv[0]))[:MAX_ROWS]
    return MetadataValue.table(
        records=[TableRecord({"tenant": t, **{c: int(v.get(c, 0)) for c in columns}}) for t, v in ordered],
        schema=TableSchema(columns=[TableColumn("tenant", "string"), *(TableColumn(c, "int") for c in columns)]),
    )
