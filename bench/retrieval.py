"""Retrieval benchmark: per-tenant top-10 latency and recall@10 of pgvector and Milvus Lite at several ef values.

    python bench/retrieval.py [--vectors 200000] [--tenants 200] [--skew 1.1] [--queries 400]
                              [--ef 10,40,100,200] [--days 30] [--no-previous] [--smoke]

On fresh embedded Postgres (pgvector) and Milvus Lite servers in a temporary AMEM_HOME, the script loads the same
vectors (bench/retrieval_data.py) into both stores through the project's own schema and resources, then sends the
same single-vector queries to both, one at a time, and compares each answer with the exact top 10 computed by
numpy over the tenant's vectors. Queries are new points from the queried tenant's topics, spread evenly over
tenants (so small tenants are well represented) and reported per tenant size.

"pgvector" is the project's layout (schema 4: vectors hash-partitioned by tenant, HNSW on the halfvec cast),
searched through pg_memory.search in PostgresResource.tenant_transaction (row-level security, SET LOCAL
ef_search, iterative scan, the event text fetched by key). "pg_daily_partitions" is the previous layout (schema
3: vectors range-partitioned by day, one HNSW per day, joined to the events) with the same rows, for comparison;
created_at spreads over --days days, so it has that many partitions. Loading COPYs rows and builds HNSW once
(bench/retrieval_load.py); the app's batch write paths are timed against schema 3's statements. The last line
is one JSON object.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from psycopg import sql  # noqa: E402

from amem_dagster.embedded import milvus as embedded_milvus  # noqa: E402
from amem_dagster.embedded import postgres as embedded_postgres  # noqa: E402
from bench.retrieval_data import Dataset  # noqa: E402
from bench.retrieval_load import (REGION, load_milvus, load_postgres, load_previous_layout,  # noqa: E402
                                  measure_writes, previous_search)
from resources import pg_memory, pg_vector_table  # noqa: E402
from resources.milvus import MilvusResource  # noqa: E402
from resources.pg_schema import SCHEMA_VERSION  # noqa: E402
from resources.postgres import PostgresResource, close_pools  # noqa: E402

RECALL_TARGET, P99_TARGET_MS = 0.95, 10.0
BUCKETS = (("small", 0, 1_000), ("medium", 1_000, 10_000), ("large", 10_000, 10**12))


@contextmanager
def fresh_stores():
    """Embedded Postgres and Milvus Lite (no broker: nothing here uses Kafka) in a throwaway AMEM_HOME."""
    with tempfile.TemporaryDirectory(prefix="amem-bench-", dir="/tmp") as home:
        home = Path(home)
        socket_dir = embedded_postgres.start(home)
        try:
            uri = embedded_milvus.start(home, home / "milvus.db")
            try:
                yield embedded_postgres.dsn(socket_dir), uri
            finally:
                embedded_milvus.stop(home)
        finally:
            close_pools()
            embedded_postgres.stop(home)


def plan_summary(postgres: PostgresResource, data: Dataset, tenant: str, ef: int) -> str:
    """How Postgres answers pg_memory.search's nearest-neighbour query for one tenant: which partitions it scans
    and whether by HNSW or exactly (the tenant's primary-key range, then a sort)."""
    query = data.draw(tenant, 1)[0]
    with postgres.tenant_transaction(tenant) as conn:
        conn.execute("SELECT set_config('hnsw.ef_search', %s, true), set_config('hnsw.iterative_scan', "
                     "'relaxed_order', true)", (str(ef),))
        plan = [r[0] for r in conn.execute(sql.SQL("EXPLAIN ") + pg_memory.nearest_sql(REGION, len(query)),
                                           {"tenant": tenant, "q": query, "k": 10})]
        scans = [line.strip().lstrip("-> ").split("  ")[0] for line in plan if "Scan" in line]
        used = [n.split(" using ")[1].split(" ")[0] for n in scans if " using " in n]
        methods = dict(conn.execute("SELECT c.relname, a.amname FROM pg_class c JOIN pg_am a ON a.oid = c.relam "
                                    "WHERE c.relname = ANY(%s)", (used,)).fetchall()) if used else {}
    hnsw = sum(methods.get(name) == "hnsw" for name in used)
    return f"{len(scans)} scans, {hnsw} by HNSW: {'; '.join(scans) or plan[0]}"


def run_queries(stores: dict, data: Dataset, queries: list[tuple[str, np.ndarray]], efs: list[int]) -> dict:
    """Every query against every store at every ef, interleaved query by query (so drift in the machine's load
    hits every setting alike); latency per call and recall@10 per query."""
    out = {(name, ef): {"ms": [], "recall": [], "bucket": []} for name in stores for ef in efs}
    for number, (tenant, vector) in enumerate(queries):
        expected = data.exact_top(tenant, vector, 10)
        size = len(data.rows_of[tenant])
        bucket = next(b for b, lo, hi in BUCKETS if lo <= size < hi)
        settings = [(name, ef) for ef in efs for name in stores]
        shift = number % len(settings)
        for name, ef in settings[shift:] + settings[:shift]:
            t = time.perf_counter()
            hits = stores[name](tenant, vector, ef)
            sample = out[(name, ef)]
            sample["ms"].append((time.perf_counter() - t) * 1000)
            sample["recall"].append(len({h.event_id for h in hits} & expected) / max(len(expected), 1))
            sample["bucket"].append(bucket)
    return out


def summarise(samples: dict) -> dict:
    ms, recall = np.array(samples["ms"]), np.array(samples["recall"])
    result = {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
              "p99_ms": round(float(np.percentile(ms, 99)), 2), "recall_at_10": round(float(recall.mean()), 4),
              "recall_p5": round(float(np.percentile(recall, 5)), 2), "by_tenant_size": {}}
    buckets = np.array(samples["bucket"])
    for bucket, _, _ in BUCKETS:
        chosen = buckets == bucket
        if chosen.any():
            result["by_tenant_size"][bucket] = {
                "queries": int(chosen.sum()), "recall_at_10": round(float(recall[chosen].mean()), 4),
                "p50_ms": round(float(np.percentile(ms[chosen], 50)), 2),
                "p99_ms": round(float(np.percentile(ms[chosen], 99)), 2)}
    result["meets_target"] = result["recall_at_10"] >= RECALL_TARGET and result["p99_ms"] <= P99_TARGET_MS
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=200_000)
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--skew", type=float, default=1.1, help="Zipf exponent of tenant sizes")
    parser.add_argument("--queries", type=int, default=400, help="queries per ef value, spread evenly over tenants")
    parser.add_argument("--ef", default="10,40,100,200", help="ef_search (pgvector) / ef (Milvus) values")
    parser.add_argument("--days", type=int, default=30, help="created_at spread over this many days")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--no-previous", dest="previous", action="store_false",
                        help="skip the previous pgvector layout (schema 3's daily partitions)")
    parser.add_argument("--write-rows", type=int, default=1000, help="batch size of the timed write paths")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that proves the benchmark works")
    args = parser.parse_args()
    if args.smoke:
        args.vectors, args.tenants, args.queries, args.ef, args.days, args.write_rows = 3000, 12, 36, "10,64", 3, 100
    efs = [int(x) for x in args.ef.split(",")]
    started = time.perf_counter()

    t = time.perf_counter()
    data = Dataset(args.vectors, args.tenants, args.skew, args.dim, args.days, args.seed)
    generate_seconds = time.perf_counter() - t
    query_tenants = [data.tenants[i % len(data.tenants)] for i in range(args.queries)]
    queries = [(tenant, data.draw(tenant, 1)[0]) for tenant in query_tenants]

    with fresh_stores() as (dsn, uri):
        postgres = PostgresResource(dsn=dsn, regions="eu,us", dim=args.dim)
        milvus = MilvusResource(uri=uri, dim=args.dim, collection_prefix="bench_vectors")
        pg_load = load_postgres(postgres, data)
        milvus_load = load_milvus(milvus, data)
        previous_load = load_previous_layout(postgres, data) if args.previous else None
        print(f"loaded {len(data.event_ids)} vectors: pgvector COPY {pg_load['copy_seconds']:.1f}s + HNSW build "
              f"{pg_load['index_seconds']:.1f}s over {pg_load['vector_partitions']} partitions; Milvus upsert "
              f"{milvus_load['upsert_seconds']:.1f}s + index {milvus_load['index_wait_seconds']:.1f}s "
              f"{milvus_load['index']}", flush=True)

        def pg_search(tenant: str, vector: np.ndarray, ef: int) -> list:
            with postgres.tenant_transaction(tenant) as conn:
                return pg_memory.search(conn, tenant, REGION, vector, k=10, ef_search=ef)

        def milvus_search(tenant: str, vector: np.ndarray, ef: int) -> list:
            return milvus.search(tenant, REGION, vector, k=10, ef=ef)

        stores = {"pgvector": pg_search, "milvus": milvus_search}
        if args.previous:
            stores["pg_daily_partitions"] = previous_search(postgres)
        # Not reported: one query per tenant warms every store's caches, and gives Milvus Lite's background index
        # build and compaction (it reports the index finished right after the flush) time to settle.
        run_queries(stores, data, list({tenant: (tenant, v) for tenant, v in queries}.values()), efs)
        by_size = sorted(zip(data.sizes, data.tenants, strict=True))
        plans = {f"{label} ({size} vectors)": plan_summary(postgres, data, tenant, efs[0])
                 for label, (size, tenant) in (("smallest", by_size[0]), ("median", by_size[len(by_size) // 2]),
                                               ("largest", by_size[-1]))}
        samples = run_queries(stores, data, queries, efs)
        results = {name: {str(ef): summarise(samples[(name, ef)]) for ef in efs} for name in stores}
        writes = measure_writes(postgres, data, rows=args.write_rows)

    print(f"{len(data.event_ids)} vectors, {len(data.tenants)} tenants (Zipf {args.skew}: largest "
          f"{max(data.sizes)}, median {int(statistics.median(data.sizes))}, smallest {min(data.sizes)}), "
          f"{args.queries} queries per ef, {os.cpu_count()} cores")
    for label, plan in plans.items():
        print(f"pgvector plan, {label}: {plan}")
    print("writes, rows/s (new / schema 3's executemany): " + ", ".join(
        f"{label} {phase} {writes[f'{label}_{phase}_new_rows_per_s']:.0f} / "
        f"{writes[f'{label}_{phase}_previous_rows_per_s']:.0f} = {writes[f'{label}_{phase}_speedup']:.2f}x"
        for label in ("events", "vectors") for phase in ("insert", "replay")))
    print(f"{'store':22} {'ef':>4} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'recall@10':>9}   "
          "recall | p99 ms for small/medium/large tenants")
    for name, per_ef in results.items():
        for ef, r in per_ef.items():
            by = r["by_tenant_size"]
            recalls = "/".join(f"{by[b]['recall_at_10']:.3f}" if b in by else "-" for b, _, _ in BUCKETS)
            p99s = "/".join(f"{by[b]['p99_ms']:.1f}" if b in by else "-" for b, _, _ in BUCKETS)
            print(f"{name:22} {ef:>4} {r['p50_ms']:7.2f} {r['p95_ms']:7.2f} {r['p99_ms']:7.2f} "
                  f"{r['recall_at_10']:9.4f}   {recalls} | {p99s}")
    targets = {}
    for name, per_ef in results.items():
        met = [int(ef) for ef, r in per_ef.items() if r["meets_target"]]
        targets[name] = {"met": bool(met), "ef": min(met) if met else None,
                         "best_recall": max(r["recall_at_10"] for r in per_ef.values()),
                         "best_p99_ms": min(r["p99_ms"] for r in per_ef.values())}
        print(f"{name}: recall@10 >= {RECALL_TARGET} with p99 <= {P99_TARGET_MS} ms "
              f"{'met at ef=' + str(min(met)) if met else 'NOT met'}")
    summary = {
        "vectors": len(data.event_ids), "tenants": len(data.tenants), "skew": args.skew, "dim": args.dim,
        "queries_per_ef": args.queries, "ef": efs, "cores": os.cpu_count(), "data": "clustered-random",
        "tenant_sizes": {"largest": int(max(data.sizes)), "median": int(statistics.median(data.sizes)),
                         "smallest": int(min(data.sizes))},
        "load": {"generate_seconds": round(generate_seconds, 1),
                 "pgvector": {k: (round(v, 1) if isinstance(v, float) else v) for k, v in pg_load.items()},
                 "milvus": {k: (round(v, 1) if isinstance(v, float) else v) for k, v in milvus_load.items()}},
        "pg_layout": {"schema_version": SCHEMA_VERSION, "vector_partitions": pg_vector_table.VECTOR_PARTITIONS,
                      "index": "hnsw halfvec_cosine_ops", "days": args.days},
        "pg_plans": plans, "pgvector": results["pgvector"], "milvus": results["milvus"], "targets": targets,
        "writes": writes,
        # Schema 3's layout on the same rows, labelled so the report shows it beside the current one.
        "alternatives": {name: per_ef for name, per_ef in results.items() if name not in ("pgvector", "milvus")},
        "alternatives_load": previous_load,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
