"""Pipeline benchmark: raw encode vs a direct plain loop vs sensor → runs → both stores, in one script.

    python bench/pipeline.py [--events 20000] [--tenants 60] [--skew 1.1] [--smoke]

Everything runs on fresh embedded services in a temporary AMEM_HOME. The same events are produced once;
(a) encodes their texts in this process with the model already loaded, (b) runs bench/direct_loop.py as a
fresh process, (c) resets the stores and plays the Dagster daemon: it ticks the real memory_events_sensor
against a Postgres-backed DagsterInstance every few seconds and launches each requested run as its own process
(`dagster job execute`, what the default run launcher does), until every event is in both stores. The last
line printed is one JSON object.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from amem_dagster import demo  # noqa: E402
from amem_dagster.settings import Settings  # noqa: E402
from bench.services import fresh_services  # noqa: E402
from bench.stores import reset_stores, stored_counts  # noqa: E402
from resources.embedder import EmbedderResource  # noqa: E402
from resources.kafka import KafkaResource, deliver_all  # noqa: E402

TICK_SECONDS = 5.0  # memory_events_sensor's minimum interval
MAX_CONCURRENT_RUNS = 2


def produce(kafka: KafkaResource, args) -> tuple[int, list[str]]:
    batch = demo.generate(tenants=args.tenants, events=args.events, bad_share=args.bad_share, skew=args.skew,
                          seed=args.seed)
    producer = kafka.producer()
    for key, value, headers in batch.messages:
        producer.produce(kafka.events_topic, key=key, value=value, headers=headers)
        producer.poll(0)
    deliver_all(producer, timeout=120)
    texts = [json.loads(value)["text"] for (_, value, _), kind in zip(batch.messages, batch.kinds, strict=True)
             if kind == demo.GOOD]
    return batch.good, texts


def measure_encode(texts: list[str], sample: int) -> float:
    embedder = EmbedderResource()
    embedder.encode(texts[:64])  # load and warm up outside the timing
    chosen = texts[:sample]
    t = time.perf_counter()
    embedder.encode(chosen)
    return len(chosen) / (time.perf_counter() - t)


def measure_direct(env: dict) -> dict:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "direct_loop.py")], env={**os.environ, **env},
                         capture_output=True, text=True, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    report["wall_seconds"] = time.perf_counter() - t
    return report


def measure_pipeline(settings: Settings, env: dict, expected: int, home: Path) -> dict:
    from dagster import DagsterInstance, build_sensor_context

    from amem_dagster.definitions import build_definitions

    dagster_home = home / "dagster-bench"
    dagster_home.mkdir()
    url = env["AMEM_PG_DSN"].replace("/amem?", "/dagster?").replace("postgresql://", "postgresql+psycopg2://")
    (dagster_home / "dagster.yaml").write_text(
        f'storage:\n  postgres:\n    postgres_url: "{url}"\ntelemetry:\n  enabled: false\n')
    run_env = {**os.environ, **env, "DAGSTER_HOME": str(dagster_home)}
    instance = DagsterInstance.from_config(str(dagster_home))
    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def("memory_events_sensor")
    cursor, running, launched, failed = None, [], 0, 0
    started = time.perf_counter()
    next_tick = started
    while True:
        if time.perf_counter() >= next_tick:
            next_tick += TICK_SECONDS
            with build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                      resources=defs.resources) as context:
                result = sensor(context)
            for request in getattr(result, "dynamic_partitions_requests", None) or []:
                instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            cursor = getattr(result, "cursor", None) or cursor
            for request in getattr(result, "run_requests", None) or []:
                config = dagster_home / f"run-{launched}.json"
                config.write_text(json.dumps(request.run_config))
                # The run's log goes to a file: a pipe nobody reads until exit would fill and block the run.
                log = dagster_home / f"run-{launched}.log"
                with open(log, "wb") as sink:
                    proc = subprocess.Popen(
                        [str(Path(sys.executable).parent / "dagster"), "job", "execute", "-m",
                         "amem_dagster.definitions", "-j", "memory_ingest_job", "-c", str(config),
                         "--tags", json.dumps(request.tags)],
                        cwd=ROOT, env=run_env, stdout=sink, stderr=subprocess.STDOUT)
                running.append((proc, log))
                launched += 1
        for proc, log in [r for r in running if r[0].poll() is not None]:
            running.remove((proc, log))
            if proc.returncode != 0:
                failed += 1
                print(log.read_text(errors="replace")[-2000:], file=sys.stderr)
        if not running and launched and stored_counts(env)["pg_vectors"] >= expected:
            break
        if failed or time.perf_counter() - started > 3600:
            raise SystemExit(f"pipeline did not finish: {failed} failed runs")
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    instance.dispose()
    return {"seconds": seconds, "runs": launched}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--tenants", type=int, default=60)
    parser.add_argument("--skew", type=float, default=1.1, help="Zipf exponent of tenant sizes")
    parser.add_argument("--bad-share", type=float, default=0.01)
    parser.add_argument("--encode-sample", type=int, default=4_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--smoke", action="store_true", help="a tiny run that proves the benchmark works")
    args = parser.parse_args()
    if args.smoke:
        args.events, args.tenants, args.encode_sample = 300, 6, 200

    with fresh_services() as (settings, env):
        kafka = KafkaResource(bootstrap_servers=env["AMEM_KAFKA_BOOTSTRAP"])
        kafka.provision_topics()
        good, texts = produce(kafka, args)
        encode_eps = measure_encode(texts, args.encode_sample)
        direct = measure_direct(env)
        assert direct["events"] == good, direct
        reset_stores(env, settings.regions)
        pipeline = measure_pipeline(settings, env, good, Path(env["AMEM_HOME"]))
        counts = stored_counts(env)
        assert counts == {"events": good, "pg_vectors": good, "milvus_vectors": good}, counts

    direct_eps = good / direct["wall_seconds"]
    pipeline_eps = good / pipeline["seconds"]
    print(f"events {good} over {args.tenants} tenants (Zipf {args.skew}), machine cores {os.cpu_count()}")
    print(f"(a) raw encode          {encode_eps:8.1f} events/s")
    print(f"(b) direct loop         {direct_eps:8.1f} events/s  ({direct['wall_seconds']:.1f}s, phases {direct['phases']})")
    print(f"(c) sensor→runs→stores  {pipeline_eps:8.1f} events/s  ({pipeline['seconds']:.1f}s, {pipeline['runs']} runs)")
    result = {
        "encode_eps": round(encode_eps, 1), "direct_eps": round(direct_eps, 1), "pipeline_eps": round(pipeline_eps, 1),
        "ratio_vs_direct": round(pipeline_eps / direct_eps, 3), "ratio_vs_encode": round(pipeline_eps / encode_eps, 3),
        "events": good, "tenants": args.tenants, "runs": pipeline["runs"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
