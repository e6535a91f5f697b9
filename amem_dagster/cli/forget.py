"""`amem forget TENANT SUBJECT [--json]`: the right to erasure (forget_subject_job's code) from the shell."""

from __future__ import annotations

import typer

from amem_dagster.cli import clients, operator
from amem_dagster.cli.output import console, print_json, table
from amem_dagster.events import MAX_SUBJECT_ID


def subject_argument(value: str) -> str:
    if not value.strip() or len(value) > MAX_SUBJECT_ID:
        raise typer.BadParameter(f"a subject id is 1 to {MAX_SUBJECT_ID} characters, not blank")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # bytes of the command line that are not UTF-8 arrive as lone surrogates
        raise typer.BadParameter("the subject id is not valid UTF-8") from None
    return value


def tenant_known(pg, tenant: str) -> bool:
    with pg.maintenance_transaction() as conn:
        return conn.execute("SELECT 1 FROM amem.tenants WHERE tenant_id = %s", (tenant,)).fetchone() is not None


def require_erasures_topic(kafka) -> None:
    """The compacted memory.erasures topic must exist before the announcement; create the topics if missing."""
    clients.require_kafka(kafka)
    if kafka.erasures_topic not in kafka.admin().list_topics(timeout=5).topics:
        kafka.provision_topics()


def forget(
    tenant: str = typer.Argument(..., callback=operator.tenant_argument, help="Tenant id, e.g. tenant-001."),
    subject: str = typer.Argument(..., callback=subject_argument, help="The data subject's id (subject_id)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Erase every memory of SUBJECT in TENANT from every store and region, record it in the erasure ledger (so
    a Kafka replay cannot bring it back), announce it on the compacted memory.erasures topic and audit it (who,
    when, counts; never the text). The actor in the audit record is the OS user."""
    from amem_dagster.erasure import erase_subject

    config = clients.settings()
    env = clients.addresses(config)
    kafka = clients.kafka(config, env)
    with clients.closing_pools():
        pg = clients.postgres(config, env)
        if not tenant_known(pg, tenant):
            raise typer.BadParameter(f"tenant {tenant!r} is not known here (see `amem tenants list`)",
                                     param_hint="TENANT")
        require_erasures_topic(kafka)
        report = erase_subject(pg, clients.milvus(env), kafka, tenant, subject, config.regions,
                               actor=operator.actor())
    result = {"tenant_id": report.tenant_id, "erased_at": report.erased_at.isoformat(),
              "removed": dict(report.removed), "regions": list(config.regions)}
    if as_json:
        print_json(result)
        return
    console.print(f"erased a data subject of {tenant} at {report.erased_at:%Y-%m-%d %H:%M:%S} UTC "
                  f"(regions {', '.join(config.regions)})", markup=False)
    labels = {"pg_events": "postgres events", "pg_vectors": "pgvector rows", "milvus_vectors": "milvus vectors"}
    console.print(table(None, ("store", "removed"), [(labels.get(k, k), v) for k, v in report.removed.items()],
                        numeric=("removed",)))
    console.print(f"verified in every store; announced on {kafka.erasures_topic}; audit record written",
                  markup=False)
