"""Per-tenant figures as a Dagster table, so range runs still show each tenant's numbers in Dagit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dagster import MetadataValue, TableColumn, TableRecord, TableSchema

# A run can cover hundreds of tenants; Dagit tables stay readable and the event log small.
MAX_ROWS = 200


def tenant_table(per_tenant: Mapping[str, Mapping[str, int]], columns: Sequence[str]) -> MetadataValue:
    """A table with a `tenant` column and one integer column per name in `columns`, busiest tenants first."""
    ordered = sorted(per_tenant.items(), key=lambda kv: (-kv[1].get(columns[0], 0), kv[0]))[:MAX_ROWS]
    return MetadataValue.table(
        records=[TableRecord({"tenant": t, **{c: int(v.get(c, 0)) for c in columns}}) for t, v in ordered],
        schema=TableSchema(columns=[TableColumn("tenant", "string"), *(TableColumn(c, "int") for c in columns)]),
    )
