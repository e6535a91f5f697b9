"""Freshness probes for bench/freshness.py: a steady-rate producer and a watcher that sees events land in each store."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
from psycopg import sql

from amem_dagster import demo
from resources.kafka import KafkaResource, deliver_all
from resources.milvus import MilvusResource, render_literals
from resources.pg_schema import region_schema
from resources.postgres import PostgresResource

STORES = ("events", "pgvector", "milvus")  # events = the row in memory_events; the others = searchable vectors
PG_TABLES = {"events": "memory_events", "pgvector": "memory_vectors"}


def spread(seconds: list[float]) -> dict[str, float]:
    """p50 / p95 / max of latencies in seconds."""
    if not seconds:
        return {"p50": 0.0, "p95": 0.0, "max": 0.0}
    p50, p95 = np.percentile(seconds, [50, 95])
    return {"p50": round(float(p50), 2), "p95": round(float(p95), 2), "max": round(max(seconds), 2)}


class Watcher(threading.Thread):
    """Polls every store for all outstanding event ids at once, at a bounded rate, and records when each appears.

    One query per store per poll (an indexed (tenant_id, event_id) lookup in Postgres, an `event_id in [...]`
    filter in each Milvus collection), so the probe's load does not grow with the number of polls per event.
    Postgres is read through the maintainer (BYPASSRLS) role, the one cross-tenant jobs use. Milvus is read with
    a client of its own on MilvusResource's URI and collections (the resource's reads are tenant-scoped by design;
    this lookup by id is across tenants), at the collection's default consistency, which is what a search sees.
    """

    def __init__(self, postgres: PostgresResource, milvus: MilvusResource, interval: float):
        super().__init__(name="freshness-watcher", daemon=True)
        from pymilvus import MilvusClient

        self.postgres, self.milvus, self.interval = postgres, milvus, interval
        self.client = MilvusClient(uri=milvus.uri, token=milvus.token)
        self.produced: dict[str, tuple[str, float]] = {}  # event_id → (tenant_id, produce time)
        self.seen: dict[str, dict[str, float]] = {store: {} for store in STORES}
        self.requested: dict[str, float] = {}  # event_id → when a sensor tick put it in a run request
        self.polls, self.poll_seconds = 0, {store: 0.0 for store in STORES}
        self.began = self.stopped = 0.0
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self.error: BaseException | None = None

    def expect(self, event_id: str, tenant_id: str, produced_at: float) -> None:
        with self._lock:
            self.produced[event_id] = (tenant_id, produced_at)

    def outstanding(self, store: str) -> list[tuple[str, str]]:
        with self._lock:
            return [(eid, t) for eid, (t, _) in self.produced.items() if eid not in self.seen[store]]

    def complete(self) -> bool:
        return all(not self.outstanding(store) for store in STORES)

    def mark_requested(self, tenants: set[str], read_after: float, at: float) -> None:
        """A tick that started reading at `read_after` requested runs for `tenants`: it read every event of
        theirs produced before then, so those events' batching wait ends at `at`."""
        with self._lock:
            for eid, (tenant, produced_at) in self.produced.items():
                if tenant in tenants and produced_at < read_after:
                    self.requested.setdefault(eid, at)

    def sensor_waits(self) -> list[float]:
        return [self.requested[eid] - t for eid, (_, t) in self.produced.items() if eid in self.requested]

    def latencies(self, store: str) -> list[float]:
        return [self.seen[store][eid] - t for eid, (_, t) in self.produced.items() if eid in self.seen[store]]

    def stop(self) -> None:
        self._halt.set()
        # The client stays open: pymilvus shares one channel per address, and closing it would close that too.
        self.join()

    def run(self) -> None:
        self.began = time.perf_counter()
        try:
            while not self._halt.is_set():
                started = time.perf_counter()
                self.poll()
                self.polls += 1
                took = time.perf_counter() - started
                # At most a quarter of the time polling: when the stores are slow to answer (a loaded machine),
                # the probe backs off instead of adding to the load it measures.
                self._halt.wait(max(self.interval - took, 3 * took))
        except BaseException as exc:  # surfaced by the main loop; a dead watcher must not look like a stall
            self.error = exc
        self.stopped = time.perf_counter()

    def poll(self) -> None:
        for store in STORES:
            todo = self.outstanding(store)
            if todo:
                started = time.perf_counter()
                found = (self._milvus_found([eid for eid, _ in todo]) if store == "milvus"
                         else self._pg_found(PG_TABLES[store], todo))
                self.poll_seconds[store] += time.perf_counter() - started
                self._mark(store, found)

    def _mark(self, store: str, found: set[str]) -> None:
        now = time.perf_counter()  # the poll's end: visibility is known to within one poll interval
        with self._lock:
            for eid in found:
                self.seen[store].setdefault(eid, now)

    def _pg_found(self, table: str, todo: list[tuple[str, str]]) -> set[str]:
        ids, tenants = [eid for eid, _ in todo], [t for _, t in todo]
        query = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT event_id::text FROM {s}.{t} WHERE (tenant_id, event_id) IN "
                    "(SELECT * FROM unnest(%(tenants)s::text[], %(ids)s::uuid[]))").format(
                s=sql.Identifier(region_schema(region)), t=sql.Identifier(table))
            for region in self.postgres.region_list())
        with self.postgres.maintenance_transaction() as conn:
            return {row[0] for row in conn.execute(query, {"tenants": tenants, "ids": ids})}

    def _milvus_found(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        # Inline literals work on Milvus Lite (no filter templates) and on a server alike.
        where = render_literals("event_id in {ids}", {"ids": ids})
        for region in self.postgres.region_list():
            rows = self.client.query(self.milvus.collection_name(region), filter=where, output_fields=["event_id"],
                                     limit=len(ids))
            found.update(row["event_id"] for row in rows)
        return found


class Producer(threading.Thread):
    """Sends demo events at a steady rate; an event's produce time is taken just before its produce() call."""

    def __init__(self, kafka: KafkaResource, batch: demo.DemoBatch, rate: float, watcher: Watcher):
        super().__init__(name="freshness-producer", daemon=True)
        self.kafka, self.batch, self.rate, self.watcher = kafka, batch, rate, watcher
        self.started = self.finished = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            producer = self.kafka.producer()
            self.started = time.perf_counter()
            for i, (key, value, headers) in enumerate(self.batch.messages):
                # A fixed schedule, not sleep-after-send: a slow send must not lower the rate for the rest.
                time.sleep(max(0.0, self.started + i / self.rate - time.perf_counter()))
                body = json.loads(value)
                self.watcher.expect(body["event_id"], body["tenant_id"], time.perf_counter())
                producer.produce(self.kafka.events_topic, key=key, value=value, headers=headers)
                producer.poll(0)
            deliver_all(producer, timeout=60)
            self.finished = time.perf_counter()
        except BaseException as exc:
            self.error = exc
