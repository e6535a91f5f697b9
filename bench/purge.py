"""Purge benchmark: one region's expired month removed by partition drop versus row DELETE, same data, one script.

    python bench/purge.py [--days 31] [--rows-per-day 16200] [--vector-share 0.02] [--rounds 3] [--smoke]

Fresh embedded services in a temporary AMEM_HOME; the project's schema (region `eu`, daily partitions, indexes,
row-level security). One month of expired events (31 days x 16,200 = 502,200 rows by default) plus a week of
retained ones are loaded with COPY; `memory_vectors` holds a vector (384-d, HNSW-indexed) for a share of the
expired events (2 % by default: a full 500k-vector HNSW load would dominate the run without changing the
comparison). Each load is vacuumed, frozen and analysed, as months-old partitions are. Then, each on its own
load of the same deterministic rows:

  drop          what `purge_region` does in Postgres: the events table's expired daily partitions
                (`pg_lifecycle.expired_partitions`) dropped in one short transaction each
                (`pg_lifecycle.drop_partition`: count, then DROP TABLE), then `pg_lifecycle.delete_before` for the
                remainder (none here); `memory_vectors` is hash-partitioned by tenant since schema 4 (so a search
                touches one partition), which leaves it no daily partitions to drop: its expired rows go by
                `delete_before` in both methods;
  drop_batched  reference point: the same DROP TABLEs, all of a table's partitions in one transaction;
  delete        `pg_lifecycle.delete_before` alone: one `DELETE ... WHERE created_at < cutoff` per table.

The cutoff is the midnight after the month, so every method removes exactly the same rows; each is checked to
leave nothing older than the cutoff and every retained row. A CHECKPOINT precedes each timing, so none pays for
the load's dirty pages. `--rounds` repeats the three (rotating their order); medians are reported, `ratio` is
delete / drop (so above 1 means the drop was faster). Also reported: the fastest round of each, the VACUUM the
DELETE owes for its dead tuples (`vacuum_seconds`, not in `ratio`), the WAL each method writes (`drop_wal_mb`,
`delete_wal_mb`: what replicas and archives must also ship and replay) and the latency of a plain commit
(`commit_ms`). A dropped partition costs mostly its commit, in which Postgres truncates and unlinks the
partition's files (milliseconds each, growing with file size, not row by row); a DELETE costs per row, then its
VACUUM. The data was just loaded, so it is in the OS page cache: a purge of months-old data would also read it
from disk for the DELETE (and for drop_partition's count(*)), not for a bare DROP.
The last line printed is one JSON object.
"""

import argparse
import functools
import json
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psycopg import sql  # noqa: E402

from resources import pg_lifecycle, pg_schema  # noqa: E402
from bench.services import fresh_services  # noqa: E402
from resources.postgres import PostgresResource  # noqa: E402

REGION = "eu"
WINDOW_DAYS = 90
RETAINED_DAYS, RETAINED_PER_DAY = 7, 1_000
DIM = 384
SENTENCES = ["The user asked to rebook the flight to Lisbon for Tuesday morning",
             "Tool result: the weather API returned light rain and 14 degrees",
             "Planner decided to summarise the quarterly report before the meeting",
             "Observation: the customer prefers email over phone calls",
             "Executor retried the payment after a timeout from the bank gateway",
             "Evaluator scored the draft answer 0.82 for factual accuracy"]
EVENT_COLUMNS = ("tenant_id", "event_id", "created_at", "region", "agent_name", "event_type", "text",
                 "subject_id", "metadata")
VECTOR_COLUMNS = ("tenant_id", "event_id", "created_at", "region", "subject_id", "model", "embedding")


@functools.cache
def day_rows(day: date, count: int, seed: int, tenants: int, vector_share: float):
    """The rows of one day, the same on every call (and kept, so a reload only COPYs): (events, vectors), with
    vectors for a share of the events."""
    rng = random.Random(seed * 1_000_003 + day.toordinal())
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    events, vectors = [], []
    for i in range(count):
        tenant = f"tenant-{rng.randrange(tenants):03d}"
        event_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        created = start + timedelta(microseconds=rng.randrange(86_400_000_000))
        subject = f"subject-{rng.randrange(500)}" if rng.random() < 0.3 else None
        events.append((tenant, event_id, created, REGION, "planner", "Observation",
                       f"{rng.choice(SENTENCES)} (note {i})", subject, "{}"))
        if rng.random() < vector_share:
            vector = "[" + ",".join(f"{rng.uniform(-1, 1):.4f}" for _ in range(DIM)) + "]"
            vectors.append((tenant, event_id, created, REGION, subject, "bench-model", vector))
    return events, vectors


def copy_rows(conn, table: str, columns: tuple[str, ...], rows) -> None:
    statement = sql.SQL("COPY {s}.{t} ({c}) FROM STDIN").format(
        s=sql.Identifier(pg_schema.region_schema(REGION)), t=sql.Identifier(table),
        c=sql.SQL(", ").join(map(sql.Identifier, columns)))
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def load(pg: PostgresResource, month: list[date], retained: list[date], args) -> dict[str, int]:
    """Create the daily partitions and COPY the month's rows (events, a share with vectors) and the retained
    week's events; returns the month's counts per table."""
    counts = {"events": 0, "vectors": 0}
    with pg.owner_transaction() as conn:
        pg_schema.ensure_partitions(conn, REGION, month + retained)
    # The maintainer role bypasses row-level security, which COPY FROM requires.
    for day in month + retained:
        expired = day in month
        events, vectors = day_rows(day, args.rows_per_day if expired else RETAINED_PER_DAY, args.seed, args.tenants,
                                   args.vector_share if expired else 0.0)
        with pg.maintenance_transaction() as conn:
            copy_rows(conn, "memory_events", EVENT_COLUMNS, events)
            copy_rows(conn, "memory_vectors", VECTOR_COLUMNS, vectors)
        if expired:
            counts["events"] += len(events)
            counts["vectors"] += len(vectors)
    settle(pg)
    return counts


def settle(pg: PostgresResource) -> None:
    """Make the fresh load look like months-old data: vacuumed, frozen and analysed (and so no autovacuum works
    through the new partitions while a method is timed)."""
    with pg.pool().connection() as conn:
        conn.autocommit = True
        conn.execute(sql.SQL("VACUUM (FREEZE, ANALYZE) {s}.memory_events, {s}.memory_vectors").format(
            s=sql.Identifier(pg_schema.region_schema(REGION))))


def commit_latency_ms(pg: PostgresResource, samples: int = 30) -> float:
    """Median time of a commit that must flush WAL (a transaction that only takes an xid): the disk's fsync."""
    times = []
    with pg.pool().connection() as conn:
        for _ in range(samples):
            t = time.perf_counter()
            with conn.transaction():
                conn.execute("SELECT pg_current_xact_id()")
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def checkpoint(pg: PostgresResource) -> None:
    with pg.pool().connection() as conn:
        conn.autocommit = True
        conn.execute("CHECKPOINT")


def wal_position(pg: PostgresResource) -> str:
    with pg.pool().connection() as conn:
        return conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]


def wal_mb_since(pg: PostgresResource, start: str) -> float:
    """WAL written since `start`, in MB: what a replica or an archive must also ship and replay."""
    with pg.pool().connection() as conn:
        diff = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s::pg_lsn)",
                            (start,)).fetchone()[0]
    return float(diff) / 1e6


def purge_by_drop(pg: PostgresResource, cutoff: datetime) -> tuple[int, int]:
    """purge_region's Postgres steps: drop whole expired partitions, then row-delete the rest; (rows, partitions)."""
    removed = dropped = 0
    for table in pg_lifecycle.PURGE_ORDER:
        with pg.owner_transaction() as conn:
            expired = pg_lifecycle.expired_partitions(conn, REGION, table, cutoff)
        for partition in expired:
            with pg.owner_transaction() as conn:
                removed += pg_lifecycle.drop_partition(conn, REGION, partition)
            dropped += 1
        with pg.maintenance_transaction() as conn:
            removed += pg_lifecycle.delete_before(conn, REGION, table, cutoff)
    return removed, dropped


def drop_batched(pg: PostgresResource, cutoff: datetime) -> tuple[int, int]:
    """Reference point: the same DROP TABLEs, but all of a table's expired partitions in one transaction (one
    commit per table instead of one per partition; the parent stays locked until the commit), then the same
    row delete of what no partition held; (rows, partitions)."""
    removed = dropped = 0
    for table in pg_lifecycle.PURGE_ORDER:
        with pg.owner_transaction() as conn:
            for partition in pg_lifecycle.expired_partitions(conn, REGION, table, cutoff):
                removed += conn.execute(sql.SQL("SELECT count(*) FROM {s}.{p}").format(
                    s=sql.Identifier(pg_schema.region_schema(REGION)), p=sql.Identifier(partition.name))).fetchone()[0]
                conn.execute(sql.SQL("DROP TABLE {s}.{p}").format(
                    s=sql.Identifier(pg_schema.region_schema(REGION)), p=sql.Identifier(partition.name)))
                dropped += 1
        with pg.maintenance_transaction() as conn:
            removed += pg_lifecycle.delete_before(conn, REGION, table, cutoff)
    return removed, dropped


def purge_by_delete(pg: PostgresResource, cutoff: datetime) -> int:
    removed = 0
    for table in pg_lifecycle.PURGE_ORDER:
        with pg.maintenance_transaction() as conn:
            removed += pg_lifecycle.delete_before(conn, REGION, table, cutoff)
    return removed


def vacuum(pg: PostgresResource) -> None:
    with pg.pool().connection() as conn:
        conn.autocommit = True
        for table in pg_lifecycle.PURGE_ORDER:
            conn.execute(sql.SQL("VACUUM {s}.{t}").format(s=sql.Identifier(pg_schema.region_schema(REGION)),
                                                         t=sql.Identifier(table)))


def left_behind(pg: PostgresResource, cutoff: datetime) -> tuple[int, int]:
    """(rows older than the cutoff, retained rows) over both tables."""
    with pg.maintenance_transaction() as conn:
        older = sum(pg_lifecycle.count_before(conn, REGION, t, cutoff) for t in pg_lifecycle.PURGE_ORDER)
        total = sum(conn.execute(sql.SQL("SELECT count(*) FROM {s}.{t}").format(
            s=sql.Identifier(pg_schema.region_schema(REGION)), t=sql.Identifier(t))).fetchone()[0]
            for t in pg_lifecycle.PURGE_ORDER)
    return older, total - older


def reload(pg: PostgresResource, month: list[date], args, expected: tuple[int, int]) -> None:
    """The same rows again (deterministic), into re-created partitions."""
    t = time.perf_counter()
    load(pg, month, [], args)
    assert left_behind(pg, month_cutoff(month)) == expected, "the reload differs"
    print(f"reloaded the same {expected[0]:,} rows in {time.perf_counter() - t:.1f}s", flush=True)


def month_cutoff(month: list[date]) -> datetime:
    """The midnight after the month: every row of the month is older, every retained row is newer."""
    end = month[-1] + timedelta(days=1)
    return datetime(end.year, end.month, end.day, tzinfo=UTC)


def measure(pg: PostgresResource, cutoff: datetime, expected: tuple[int, int], method: str) -> dict:
    """Time one purge method on the loaded month (after a CHECKPOINT), check its outcome, note its WAL."""
    checkpoint(pg)
    wal = wal_position(pg)
    t = time.perf_counter()
    if method == "drop":
        removed, partitions = purge_by_drop(pg, cutoff)
    elif method == "drop_batched":
        removed, partitions = drop_batched(pg, cutoff)
    else:
        removed, partitions = purge_by_delete(pg, cutoff), 0
    seconds = time.perf_counter() - t
    outcome = {"seconds": seconds, "wal_mb": wal_mb_since(pg, wal), "partitions": partitions}
    assert removed == expected[0] and left_behind(pg, cutoff) == (0, expected[1]), f"{method} purge is wrong"
    if method == "delete":
        t = time.perf_counter()
        vacuum(pg)
        outcome["vacuum_seconds"] = time.perf_counter() - t
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=31, help="expired days (daily partitions) in the month")
    parser.add_argument("--rows-per-day", type=int, default=16_200)
    parser.add_argument("--vector-share", type=float, default=0.02,
                        help="share of the expired events that also have a pgvector row")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each method; medians are reported")
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--smoke", action="store_true", help="a tiny run that proves the benchmark works")
    args = parser.parse_args()
    if args.smoke:
        args.days, args.rows_per_day, args.rounds = 3, 500, 1

    today = datetime.now(UTC).date()
    # A month that lies wholly outside eu's 90-day window, and the week before today, which stays.
    first = today - timedelta(days=WINDOW_DAYS + 10 + args.days)
    month = [first + timedelta(days=n) for n in range(args.days)]
    retained = [today - timedelta(days=n) for n in range(RETAINED_DAYS, 0, -1)]
    cutoff = month_cutoff(month)
    methods = ("drop", "drop_batched", "delete")
    results: dict[str, list[dict]] = {m: [] for m in methods}

    with fresh_services() as (_, env):
        pg = PostgresResource(dsn=env["AMEM_PG_DSN"], regions=REGION, pool_max_size=2)
        pg.pool()  # the project's schema, migrated as the pipeline does
        t = time.perf_counter()
        counts = load(pg, month, retained, args)
        load_seconds = time.perf_counter() - t
        expected = left_behind(pg, cutoff)
        assert expected[0] == counts["events"] + counts["vectors"]
        print(f"loaded {expected[0]:,} expired rows ({counts['events']:,} events, {counts['vectors']:,} vectors) over "
              f"{args.days} days and {expected[1]:,} retained events in {load_seconds:.1f}s", flush=True)
        loaded = True
        for round_ in range(1, args.rounds + 1):
            # The order rotates from round to round, so no method always comes first after a load.
            shift = (round_ - 1) % len(methods)
            for method in methods[shift:] + methods[:shift]:
                if not loaded:
                    reload(pg, month, args, expected)
                outcome = measure(pg, cutoff, expected, method)
                loaded = False
                results[method].append(outcome)
                extra = (f", + {outcome['vacuum_seconds']:.3f}s VACUUM for the dead tuples"
                         if method == "delete" else "")
                print(f"round {round_} {method:12s} {outcome['seconds']:.3f}s, {outcome['wal_mb']:7.2f} MB WAL{extra}",
                      flush=True)

        commit_ms = commit_latency_ms(pg)
        print(f"a commit that flushes WAL takes {commit_ms:.1f} ms here (median of 30)", flush=True)

    def median(method: str, key: str = "seconds") -> float:
        return statistics.median(r[key] for r in results[method])

    def fastest(method: str) -> float:
        return min(r["seconds"] for r in results[method])

    drop, delete, batched, vacuum_s = median("drop"), median("delete"), median("drop_batched"), \
        median("delete", "vacuum_seconds")
    ratio = delete / drop
    print(f"medians of {args.rounds} rounds on {expected[0]:,} rows ({os.cpu_count()} cores): partition drop "
          f"(pg_lifecycle.drop_partition) {drop:.3f}s, row DELETE {delete:.3f}s: DELETE/drop = {ratio:.2f}; "
          f"with the VACUUM the DELETE owes {(delete + vacuum_s) / drop:.2f}; drops in one transaction {batched:.3f}s; "
          f"WAL {median('drop', 'wal_mb'):.1f} MB vs {median('delete', 'wal_mb'):.1f} MB; fastest rounds: drop "
          f"{fastest('drop'):.3f}s, DELETE {fastest('delete'):.3f}s, one transaction {fastest('drop_batched'):.3f}s")
    print(json.dumps({"rows": expected[0], "drop_seconds": round(drop, 4), "delete_seconds": round(delete, 4),
                      "ratio": round(ratio, 2), "vacuum_seconds": round(vacuum_s, 3),
                      "ratio_with_vacuum": round((delete + vacuum_s) / drop, 2),
                      "drop_batched_seconds": round(batched, 4), "drop_min_seconds": round(fastest("drop"), 4),
                      "delete_min_seconds": round(fastest("delete"), 4),
                      "drop_wal_mb": round(median("drop", "wal_mb"), 2),
                      "delete_wal_mb": round(median("delete", "wal_mb"), 2), "events": counts["events"],
                      "vectors": counts["vectors"], "partitions_dropped": results["drop"][0]["partitions"],
                      "days": args.days, "rounds": args.rounds, "commit_ms": round(commit_ms, 2),
                      "load_seconds": round(load_seconds, 1)}))


if __name__ == "__main__":
    main()
