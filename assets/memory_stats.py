"""memory_stats: per-tenant memory statistics, refreshed when new embeddings are announced on Kafka."""

from dagster import AssetExecutionContext, BackfillPolicy, MaterializeResult, asset
from psycopg import sql
from psycopg.types.json import Jsonb

from amem_dagster.k8s_tags import CPU_STEP_TAGS
from assets.memory_embeddings import memory_embeddings
from assets.partitions import TENANTS
from assets.tables import tenant_table
from resources.milvus import MilvusResource
from resources.pg_schema import region_schema
from resources.placement import PlacementResource
from resources.postgres import PostgresResource


@asset(
    partitions_def=TENANTS,
    deps=[memory_embeddings],
    backfill_policy=BackfillPolicy.single_run(),
    group_name="memory",
    op_tags=CPU_STEP_TAGS,
    kinds={"postgres"},
)
def memory_stats(
    context: AssetExecutionContext,
    postgres: PostgresResource,
    milvus: MilvusResource,
    placement: PlacementResource,
) -> MaterializeResult:
    """Events, vectors per store, subjects, event types and time span of each tenant's memory."""
    per_tenant = {}
    for tenant in sorted(context.partition_keys):
        figures = {"events": 0, "pg_vectors": 0, "milvus_vectors": 0, "subjects": 0}
        types: dict[str, int] = {}
        first = last = None
        with postgres.tenant_transaction(tenant) as conn:
            for region in placement.region_list():
                s = sql.Identifier(region_schema(region))
                events, subjects, lo, hi = conn.execute(sql.SQL(
                    "SELECT count(*), count(DISTINCT subject_id), min(created_at), max(created_at)"
                    " FROM {s}.memory_events WHERE tenant_id = %s").format(s=s), (tenant,)).fetchone()
                figures["events"] += events
                figures["subjects"] += subjects
                first = min(filter(None, (first, lo)), default=None)
                last = max(filter(None, (last, hi)), default=None)
                figures["pg_vectors"] += conn.execute(sql.SQL(
                    "SELECT count(*) FROM {s}.memory_vectors WHERE tenant_id = %s").format(s=s),
                    (tenant,)).fetchone()[0]
                for event_type, n in conn.execute(sql.SQL(
                        "SELECT event_type, count(*) FROM {s}.memory_events WHERE tenant_id = %s"
                        " GROUP BY event_type").format(s=s), (tenant,)):
                    types[event_type] = types.get(event_type, 0) + n
                figures["milvus_vectors"] += milvus.count(tenant, region)
            conn.execute(
                """INSERT INTO amem.tenant_stats (tenant_id, events, pg_vectors, milvus_vectors, subjects,
                       event_types, first_event_at, last_event_at, updated_at)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())
                   ON CONFLICT (tenant_id) DO UPDATE SET events = EXCLUDED.events,
                       pg_vectors = EXCLUDED.pg_vectors, milvus_vectors = EXCLUDED.milvus_vectors,
                       subjects = EXCLUDED.subjects, event_types = EXCLUDED.event_types,
                       first_event_at = EXCLUDED.first_event_at, last_event_at = EXCLUDED.last_event_at,
                       updated_at = now()""",
                (tenant, figures["events"], figures["pg_vectors"], figures["milvus_vectors"], figures["subjects"],
                 Jsonb(types), first, last))
        per_tenant[tenant] = figures
    context.log.info(f"refreshed statistics of {len(per_tenant)} tenants")
    return MaterializeResult(metadata={
        "tenants": len(per_tenant),
        "events": sum(f["events"] for f in per_tenant.values()),
        "busiest_tenants": tenant_table(per_tenant, ("events", "pg_vectors", "milvus_vectors", "subjects")),
    })
