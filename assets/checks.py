"""Asset check: per tenant, the events table, the pgvector table and the Milvus collections hold the same count."""

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, asset_check

from assets.memory_embeddings import memory_embeddings
from assets.partitions import TENANTS
from assets.tables import tenant_table
from resources import pg_memory
from resources.milvus import MilvusResource
from resources.placement import PlacementResource
from resources.postgres import PostgresResource


@asset_check(asset=memory_embeddings, partitions_def=TENANTS, blocking=False)
def memory_stores_agree(
    context: AssetCheckExecutionContext,
    postgres: PostgresResource,
    milvus: MilvusResource,
    placement: PlacementResource,
) -> AssetCheckResult:
    """Every stored event has exactly one vector in pgvector and one in Milvus, per tenant and region."""
    per_tenant: dict[str, dict[str, int]] = {}
    disagreeing: list[str] = []
    bad: set[str] = set()
    for tenant in sorted(context.partition_keys):
        figures = {"events": 0, "pg_vectors": 0, "milvus_vectors": 0}
        with postgres.tenant_transaction(tenant) as conn:
            for region in placement.region_list():
                events, vectors = pg_memory.count_tenant(conn, tenant, region)
                mv = milvus.count(tenant, region)
                figures["events"] += events
                figures["pg_vectors"] += vectors
                figures["milvus_vectors"] += mv
                if not events == vectors == mv:
                    disagreeing.append(f"{tenant}/{region}: events={events} pg={vectors} milvus={mv}")
                    bad.add(tenant)
        per_tenant[tenant] = figures
    return AssetCheckResult(
        passed=not disagreeing,
        severity=AssetCheckSeverity.WARN,
        description="; ".join(disagreeing[:20]) or "events, pgvector rows and Milvus rows agree",
        metadata={"tenants_checked": len(per_tenant), "tenants_disagreeing": len(bad),
                  # Only the tenants that disagree: a row per checked tenant grew the event log with the run.
                  "disagreeing": tenant_table({t: per_tenant[t] for t in bad},
                                              ("events", "pg_vectors", "milvus_vectors"))},
    )
