"""`amem milvus-relayout [--region R]`: rebuild Milvus Lite collections of an earlier layout, a partition per tenant."""

from __future__ import annotations

import typer

from amem_dagster.cli import clients, operator
from amem_dagster.cli.output import console, print_json, table


def milvus_relayout(
    region: str | None = typer.Option(None, "--region", help="Only this region (default: every region)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """Copy each region's Milvus Lite collection written with the old tenant_id partition key (every search then
    scans all tenants) into one with a partition per tenant. Run it with nothing else writing (stop `amem dev`);
    an interrupted run is safe to repeat. A Milvus server keeps the partition key: nothing to do there."""
    config = clients.settings()
    regions = operator.region_option(config, region)
    milvus = clients.milvus(clients.addresses(config))
    reports = [{"region": r, "collection": milvus.collection_name(r), "rows_copied": milvus.relayout(r)}
               for r in regions]
    if as_json:
        print_json(reports)
        return
    rows = [(r["region"], r["collection"], r["rows_copied"] or "nothing to do") for r in reports]
    columns = ("region", "collection", "rows copied")
    console.print(table("Milvus collections laid out with a partition per tenant", columns, rows,
                        numeric=("rows copied",)))
