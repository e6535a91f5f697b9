"""The direct baseline: read memory.events by assignment, then store, embed and write both stores in one loop.

bench/pipeline.py runs it as its own process so that it pays the cold start a Dagster run pays (interpreter,
imports, model load). It calls the assets' Dagster-free write functions, so the only difference to the
pipeline is the orchestration. Prints one JSON object: each step's wall time and CPU time, the CPU split into
this process and the Postgres, Milvus and Kafka server processes (read from /proc).
"""

import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

STARTED = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amem_dagster.errors import EventRejected  # noqa: E402
from amem_dagster.events import parse_event  # noqa: E402
from amem_dagster.settings import Settings  # noqa: E402
from assets.memory_writes import WRITE_STEPS, embed_and_write, store_events  # noqa: E402
from bench.services import CpuMeter  # noqa: E402
from resources.embedder import EmbedderResource  # noqa: E402
from resources.kafka import KafkaResource, read_from  # noqa: E402
from resources.milvus import MilvusResource  # noqa: E402
from resources.pg_memory import StoredEvent  # noqa: E402
from resources.postgres import PostgresResource  # noqa: E402

# Inside embed_and_write encoding overlaps the store writes, so server CPU is charged by server, not by window.
SERVER_STEP = {"postgres": "pg_write", "milvus": "milvus_write", "kafka": "publish"}


def main() -> None:
    meter = CpuMeter(os.environ["AMEM_HOME"])
    settings = Settings.from_env()
    kafka = KafkaResource(bootstrap_servers=os.environ["AMEM_KAFKA_BOOTSTRAP"])
    postgres = PostgresResource(dsn=os.environ["AMEM_PG_DSN"], regions=",".join(settings.regions))
    milvus = MilvusResource(uri=os.environ["AMEM_MILVUS_URI"])
    embedder = EmbedderResource(model=settings.embed_model or "")
    wall = {"startup": time.perf_counter() - STARTED}
    # The interpreter and imports ran before the meter existed: startup's own CPU is the process's total so far.
    meter.mark("startup")
    meter.steps["startup"]["client"] = time.process_time()

    t = time.perf_counter()
    _, partitions = kafka.describe(kafka.events_topic)
    consumer = kafka.consumer()
    records, _ = read_from(consumer, kafka.events_topic, {p: 0 for p in partitions}, max_messages=10_000_000,
                           deadline=time.monotonic() + 600)
    consumer.close()
    by_tenant = defaultdict(list)
    for r in records:
        try:
            event = parse_event(r.value, key=r.key, timestamp_ms=r.timestamp_ms, headers=r.headers,
                                regions=settings.regions, default_region=settings.default_region)
        except EventRejected:
            continue
        by_tenant[event.tenant_id].append((event, r.partition, r.offset))
    wall["read_parse"] = time.perf_counter() - t
    meter.mark("read_parse")

    t = time.perf_counter()
    store_events(postgres, by_tenant)
    wall["store_events"] = time.perf_counter() - t
    meter.mark("store_events")

    t = time.perf_counter()
    embedder.encode(["load the model"])  # the cold model load, apart from the steady encode
    wall["model_load"] = time.perf_counter() - t
    meter.mark("model_load")

    todo = [(tenant, StoredEvent(e.event_id, e.created_at, e.region, e.subject_id, e.text))
            for tenant, rows in by_tenant.items() for e, _, _ in rows]
    outcome = embed_and_write(todo, embedder=embedder, milvus=milvus, postgres=postgres, kafka=kafka)
    wall.update(outcome.seconds)
    cpu = {step: {"client": used.get("client", 0.0)} for step, used in meter.steps.items()}
    window = meter.mark("embed_and_write")
    # The writer thread's own CPU is measured per step; what remains of this process's CPU is the encode
    # (its worker threads are not the caller's thread, so encode cannot be measured by thread time).
    for step in WRITE_STEPS:
        cpu[step] = {"client": outcome.cpu.get(step, 0.0)}
    cpu["encode"] = {"client": max(window["client"] - sum(outcome.cpu.get(s, 0.0) for s in WRITE_STEPS), 0.0)}
    for server, step in SERVER_STEP.items():
        cpu[step][server] = window.get(server, 0.0)
    for step, used in meter.steps.items():
        if step != "embed_and_write":
            cpu[step].update({k: v for k, v in used.items() if k != "client"})
    backend = getattr(embedder._model(), "backend", "torch")  # the loaded encoder: "auto" may fall back to torch
    print(json.dumps({"events": outcome.total, "backend": backend, "phases": {k: round(v, 3) for k, v in wall.items()},
                      "cpu": {s: {k: round(v, 3) for k, v in parts.items()} for s, parts in cpu.items()},
                      "seconds": round(time.perf_counter() - STARTED, 3)}))


if __name__ == "__main__":
    main()
