"""Per-tenant figures in Dagit: a small table of a run's busiest tenants, the same on every partition's event."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dagster import MetadataValue, TableColumn, TableRecord, TableSchema

# A range run's metadata is copied onto each of its tenant partitions' events, so a table of every tenant grows
# the event log with the square of the tenants per run; figures per tenant are in the JSON logs and tenant_stats.
# (Per-partition metadata through add_asset_metadata re-lists the dynamic partitions per call: seconds at 200.)
MAX_ROWS = 10


def tenant_table(per_tenant: Mapping[str, Mapping[str, int]], columns: Sequence[str]) -> MetadataValue:
    """A table with a `tenant` column and one integer column per name in `columns`, busiest tenants first."""
    ordered = sorted(per_tenant.items(), key=lambda kv: (-kv[1].get(columns[0], 0), kv[0]))[:MAX_ROWS]
    return MetadataValue.table(
        records=[TableRecord({"tenant": t, **{c: int(v.get(c, 0)) for c in columns}}) for t, v in ordered],
        schema=TableSchema(columns=[TableColumn("tenant", "string"), *(TableColumn(c, "int") for c in columns)]),
    )
