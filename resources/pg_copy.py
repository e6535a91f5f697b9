"""Batch writes through COPY: rows go into a transaction-local temp table in one binary COPY, then one INSERT.

Measured on the embedded server (2 cores, 2,000 rows per batch): events 94 ms with executemany (pipelined
INSERT per row) vs 30 ms this way; vector upserts are dominated by HNSW maintenance, but re-upserting existing
rows still went from 1.55 s to 0.94 s. For a handful of rows the temp table's create/drop costs more than it
saves, so small batches keep the executemany path (`COPY_MIN_ROWS`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import psycopg
from psycopg import sql

COPY_MIN_ROWS = 32


def copy_insert(conn: psycopg.Connection, staging: str, columns: Sequence[tuple[str, str]], rows: Iterable[tuple],
                insert: sql.Composable) -> int:
    """COPY `rows` into temp table `staging` (columns: (name, type) pairs), run `insert` (which selects FROM
    the staging table), drop the table, and return the INSERT's row count."""
    name = sql.Identifier(staging)
    # ON COMMIT DROP also cleans up when the INSERT fails; the explicit DROP lets a second call (another region)
    # in the same transaction create it again.
    conn.execute(sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
        name, sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in columns)))
    with conn.cursor() as cur:
        with cur.copy(sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(name)) as copy:
            copy.set_types([t.split("(")[0] for _, t in columns])
            for row in rows:
                copy.write_row(row)
        cur.execute(insert)
        count = max(cur.rowcount, 0)
    conn.execute(sql.SQL("DROP TABLE {}").format(name))
    return count
