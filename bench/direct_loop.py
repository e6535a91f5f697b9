"""The direct baseline: read memory.events by assignment, then store, embed and write both stores in one loop.

bench/pipeline.py runs it as its own process so that it pays the cold start a Dagster run pays (interpreter,
imports, model load). It calls the assets' Dagster-free write functions, so the only difference to the
pipeline is the orchestration. Prints one JSON object with its phase timings.
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
from assets.memory_writes import embed_and_write, store_events  # noqa: E402
from resources.embedder import EmbedderResource  # noqa: E402
from resources.kafka import KafkaResource, read_from  # noqa: E402
from resources.milvus import MilvusResource  # noqa: E402
from resources.pg_memory import StoredEvent  # noqa: E402
from resources.postgres import PostgresResource  # noqa: E402


def main() -> None:
    settings = Settings.from_env()
    kafka = KafkaResource(bootstrap_servers=os.environ["AMEM_KAFKA_BOOTSTRAP"])
    postgres = PostgresResource(dsn=os.environ["AMEM_PG_DSN"], regions=",".join(settings.regions))
    milvus = MilvusResource(uri=os.environ["AMEM_MILVUS_URI"])
    embedder = EmbedderResource(model=settings.embed_model or "")
    phases = {"startup": time.perf_counter() - STARTED}

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
    phases["read_parse"] = time.perf_counter() - t

    t = time.perf_counter()
    store_events(postgres, by_tenant)
    phases["store_events"] = time.perf_counter() - t

    todo = [(tenant, StoredEvent(e.event_id, e.created_at, e.region, e.subject_id, e.text))
            for tenant, rows in by_tenant.items() for e, _, _ in rows]
    outcome = embed_and_write(todo, embedder=embedder, milvus=milvus, postgres=postgres, kafka=kafka)
    phases.update(outcome.seconds)
    print(json.dumps({"events": outcome.total, "phases": {k: round(v, 3) for k, v in phases.items()},
                      "seconds": round(time.perf_counter() - STARTED, 3)}))


if __name__ == "__main__":
    main()
