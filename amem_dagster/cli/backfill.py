"""`amem backfill [TENANT ...] [--all]`: re-embed tenants through the real Dagster instance, one run per range.

Each run materialises `memory_embeddings` (and its check `memory_stores_agree`) of memory_ingest_job over one
contiguous range of the `tenants` dynamic partitions, tagged like a Dagit single-run backfill. The asset embeds
every retained event that has no vector from the *current* model (AMEM_EMBED_MODEL), and the upserts replace the
older model's vector in pgvector and Milvus: after a model change a backfill re-embeds; otherwise it is a no-op.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import typer

from amem_dagster.cli import clients, dagster_home, operator
from amem_dagster.cli.output import console, err_console, print_json, table
from amem_dagster.errors import AmemError

ASSET = "memory_embeddings"
JOB = "memory_ingest_job"
# The run's events still go to the instance's event log (Dagit shows them); only the console stays quiet.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class BackfillFailed(AmemError):
    """A backfill run did not succeed."""


@dataclass(frozen=True)
class RangeRun:
    """One run over a contiguous range of tenant partitions, as recorded in the Dagster instance."""

    first: str
    last: str
    tenants: list[str]
    run_id: str
    success: bool
    events_embedded: int
    model: str | None


def partition_ranges(order: Sequence[str], selected: Sequence[str]) -> list[list[str]]:
    """Group the selected keys into maximal runs of neighbours in the partitions' order (unknown keys raise)."""
    index = {key: i for i, key in enumerate(order)}
    missing = [key for key in selected if key not in index]
    if missing:
        raise ValueError(f"not partitions: {missing}")
    positions = sorted({index[key] for key in selected})
    ranges: list[list[str]] = []
    for pos in positions:
        if ranges and index[ranges[-1][-1]] == pos - 1:
            ranges[-1].append(order[pos])
        else:
            ranges.append([order[pos]])
    return ranges


def range_tags(first: str, last: str) -> dict[str, str]:
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    return {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last,
            "amem/backfill": "cli"}


def run_backfill(defs, instance, tenants: Sequence[str], *, raise_on_error: bool = False,
                 progress: Callable[[list[str]], None] | None = None) -> list[RangeRun]:
    """Execute memory_embeddings (+ its check) of memory_ingest_job for `tenants` on `instance`: one run per
    contiguous range of the instance's `tenants` partitions (another one while a run hit the asset's per-run
    limit). Tests pass their own definitions (e.g. a model)."""
    from dagster import AssetKey

    from assets.partitions import TENANTS

    order = instance.get_dynamic_partitions(TENANTS.name)
    job = defs.resolve_job_def(JOB)
    limit = pending_limit()
    runs = []
    for group in partition_ranges(order, tenants):
        while True:
            if progress:
                progress(group)
            result = job.execute_in_process(instance=instance, asset_selection=[AssetKey(ASSET)],
                                            tags=range_tags(group[0], group[-1]), raise_on_error=raise_on_error,
                                            run_config=QUIET)
            metadata = {}
            for materialization in result.asset_materializations_for_node(ASSET):
                metadata = {k: v.value for k, v in materialization.metadata.items()}
            run = RangeRun(first=group[0], last=group[-1], tenants=group, run_id=result.run_id,
                           success=result.success, events_embedded=int(metadata.get("events_embedded", 0)),
                           model=metadata.get("model"))
            runs.append(run)
            # A run embeds at most `limit` events per tenant and region; fewer in all means nothing is left.
            if not run.success or run.events_embedded < limit:
                break
    return runs


def pending_limit() -> int:
    """How many events memory_embeddings takes per tenant and region in one run (pending_embeddings' limit)."""
    from resources import pg_memory

    return int(inspect.signature(pg_memory.pending_embeddings).parameters["limit"].default)


def span(first: str, last: str) -> str:
    return first if first == last else f"{first} … {last}"


def announce(group: list[str]) -> None:
    plural = "s" if len(group) > 1 else ""
    err_console.print(f"re-embedding {span(group[0], group[-1])} ({len(group)} tenant{plural}) in one run …",
                      markup=False, highlight=False)


def backfill(
    tenants: list[str] | None = typer.Argument(None, metavar="[TENANT]...",
                                               help="Tenant ids (partitions of `tenants`)."),
    every: bool = typer.Option(False, "--all", help="Every tenant partition."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Re-embed TENANTs (or --all) with the current model (AMEM_EMBED_MODEL) through the Dagster instance of
    `amem dev` ($AMEM_HOME/dagster): one run per contiguous range of tenant partitions, recorded like a Dagit
    backfill. Vectors of another model are replaced, never duplicated; tenants already embedded with this
    model cost one cheap run."""
    tenants = list(dict.fromkeys(tenants or []))
    if every == bool(tenants):
        raise typer.BadParameter("name one or more tenants, or pass --all (not both)")
    for tenant in tenants:
        operator.tenant_argument(tenant)
    config = clients.settings()
    env = clients.addresses(config)
    clients.require_kafka(clients.kafka(config, env))  # each run announces its vectors on memory.embeddings
    with operator.dagster_instance(config) as instance, operator.exported(env), clients.closing_pools():
        from assets.partitions import TENANTS

        known = instance.get_dynamic_partitions(TENANTS.name)
        unknown = [t for t in tenants if t not in known]
        if unknown:
            raise typer.BadParameter(f"not partitions of `tenants` in {dagster_home.dagster_home(config)}:"
                                     f" {', '.join(unknown)}", param_hint="TENANT")
        selected = known if every else tenants
        if not selected:
            err_console.print("no tenant partitions yet: nothing to backfill", style="yellow")
            return
        from amem_dagster.definitions import build_definitions

        # Whatever the runs print (e.g. a model export's progress bars) goes to stderr: stdout is the result.
        with contextlib.redirect_stdout(sys.stderr):
            runs = run_backfill(build_definitions(config), instance, selected, progress=announce)
    failed = [r for r in runs if not r.success]
    if as_json:
        print_json([r.__dict__ for r in runs])
    else:
        rows = [(span(r.first, r.last), len(r.tenants), r.events_embedded, "success" if r.success else "FAILED",
                 r.run_id[:8]) for r in runs]
        model = next((r.model for r in runs if r.model), config.embed_model or "the packaged model")
        console.print(table(f"backfill of {ASSET} with {model}", ("tenant range", "tenants", "re-embedded",
                                                                    "status", "run"), rows,
                            numeric=("tenants", "re-embedded"), no_wrap=("run",)))
    if failed:
        raise BackfillFailed(f"{len(failed)} of {len(runs)} backfill runs failed: {', '.join(r.run_id for r in failed)}"
                             " (see their logs in Dagit)")
