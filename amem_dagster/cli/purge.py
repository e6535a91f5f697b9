"""`amem purge [--dry-run] [--region R] [--json]`: the retention purge of the gdpr_purge_job, run from the shell."""

from __future__ import annotations

from datetime import datetime

import typer

from amem_dagster.cli import clients, operator
from amem_dagster.cli.output import console, print_json, table
from amem_dagster.settings import Settings

STORES = ("pg_events", "pg_vectors", "milvus_vectors")


def would_drop(pg, region: str, cutoff: datetime) -> list[str]:
    """The daily partitions a real purge would drop now (a catalog read; nothing changes)."""
    from resources import pg_lifecycle

    with pg.maintenance_transaction() as conn:
        return [p.name for table in pg_lifecycle.PURGE_ORDER
                for p in pg_lifecycle.expired_partitions(conn, region, table, cutoff)]


def run(config: Settings, regions: tuple[str, ...], *, dry_run: bool) -> list[dict]:
    """`purge_region` for each region with its window from the settings; one JSON-able dict per region."""
    from amem_dagster.retention import purge_region

    env = clients.addresses(config)
    milvus = clients.milvus(env)
    who = operator.actor()
    reports = []
    with clients.closing_pools():
        pg = clients.postgres(config, env)
        for region in regions:
            days = config.retention_for(region)
            report = purge_region(pg, milvus, region, days, dry_run=dry_run, actor=who)
            dropped = would_drop(pg, region, report.cutoff) if dry_run else report.partitions_dropped
            reports.append({
                "region": region, "retention_days": days, "cutoff": report.cutoff.isoformat(),
                "dry_run": dry_run, "removed": dict(report.removed), "total": report.total,
                "partitions_dropped": dropped, "rows_deleted": None if dry_run else report.rows_deleted,
            })
    return reports


def purge(
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would be removed; change nothing."),
    region: str | None = typer.Option(None, "--region", help="Only this region (default: every region)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """Remove every memory older than its region's retention window (AMEM_RETENTION) from Postgres and Milvus,
    verify that nothing older is left and audit it: the same code as gdpr_purge_job. With --dry-run, print what
    would be removed."""
    config = clients.settings()
    reports = run(config, operator.region_option(config, region), dry_run=dry_run)
    if as_json:
        print_json(reports)
        return
    title = ("retention purge, dry run (nothing changed): what would be removed, partitions that would drop"
             if dry_run else "retention purge: what was removed, partitions dropped")
    columns = ("region", "cutoff (UTC)", "events", "pg vectors", "milvus", "partitions")
    rows = [(f"{r['region']} ({r['retention_days']}d)", r["cutoff"][:16].replace("T", " "),
             *(r["removed"][s] for s in STORES), len(r["partitions_dropped"])) for r in reports]
    console.print(table(title, columns, rows, numeric=columns[2:], no_wrap=("region", "cutoff (UTC)")))
    if not dry_run:
        console.print("verified: no store holds memories older than its region's window; audit records written",
                      markup=False)
