"""Pipeline benchmark: raw encode vs a direct plain loop vs sensor → runs → both stores, in one script.

    python bench/pipeline.py [--events 20000] [--tenants 200] [--skew 1.1] [--event-batch 1000] [--smoke]

Everything runs on fresh embedded services in a temporary AMEM_HOME, with the embedder's default backend
everywhere. The same events (Zipf-skewed over the tenants) are produced once; (a) encodes their texts in this
process with the model already loaded, (b) runs bench/direct_loop.py as a fresh process, (c) resets the stores
and plays the Dagster daemon: it ticks the real memory_events_sensor against a Postgres-backed DagsterInstance
every few seconds and launches each requested run as its own process (`dagster job execute`, what the default
run launcher does; with DAGSTER_EVENT_BATCH_SIZE, see --event-batch), until every event is in both stores. CPU
time is read per step for (b) and per process for (c), the Postgres, Milvus and Kafka servers included. The last
line printed is one JSON object.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from amem_dagster import demo  # noqa: E402
from amem_dagster.settings import Settings  # noqa: E402
from bench.services import CpuMeter, fresh_services, shares  # noqa: E402
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


def backend_in_use(embedder: EmbedderResource) -> str:
    # The loaded encoder, not the configured name: "auto" falls back to torch when a graph cannot be built.
    return getattr(embedder._model(), "backend", "torch")


def measure_encode(texts: list[str], sample: int) -> tuple[float, str]:
    embedder = EmbedderResource()  # the default backend, as in the direct loop and the runs
    embedder.encode(texts[:64])  # load and warm up outside the timing
    chosen = texts[:sample]
    t = time.perf_counter()
    embedder.encode(chosen)
    return len(chosen) / (time.perf_counter() - t), backend_in_use(embedder)


def measure_direct(env: dict, home: Path) -> dict:
    t = time.perf_counter()
    with open(home / "direct.err", "wb") as err:  # stderr to a file: an unread pipe can fill and block
        out = subprocess.run([sys.executable, str(ROOT / "bench" / "direct_loop.py")], env={**os.environ, **env},
                             stdout=subprocess.PIPE, stderr=err, text=True)
    if out.returncode:
        raise SystemExit(f"direct loop failed:\n{(home / 'direct.err').read_text()[-3000:]}")
    report = json.loads(out.stdout.strip().splitlines()[-1])
    report["wall_seconds"] = time.perf_counter() - t
    return report


def run_steps(instance, run_ids: list[str]) -> dict[str, float]:
    """Seconds per step over the runs, from their event logs: launch (process start to RUN_START), each step
    (STEP_START to STEP_SUCCESS), and the timings the assets put in their materialization metadata."""
    from dagster import DagsterEventType

    steps: dict[str, float] = {}
    for run_id, spawned in run_ids:
        started, reported = {}, set()
        for entry in instance.all_logs(run_id):
            event = entry.dagster_event
            if event is None:
                continue
            kind = event.event_type
            if kind == DagsterEventType.RUN_START:
                steps["launch"] = steps.get("launch", 0.0) + entry.timestamp - spawned
            elif kind == DagsterEventType.STEP_START:
                started[event.step_key] = entry.timestamp
            elif kind == DagsterEventType.STEP_SUCCESS and event.step_key in started:
                key = f"step {event.step_key}"
                steps[key] = steps.get(key, 0.0) + entry.timestamp - started[event.step_key]
            elif kind == DagsterEventType.ASSET_MATERIALIZATION and event.step_key not in reported:
                # One materialization per tenant partition, each with the whole step's metadata: count it once.
                reported.add(event.step_key)
                for name, value in event.event_specific_data.materialization.metadata.items():
                    if name.endswith("_seconds"):
                        key = f"{event.step_key}.{name[:-len('_seconds')]}"
                        steps[key] = steps.get(key, 0.0) + float(value.value)
    return {k: round(v, 3) for k, v in steps.items()}


def measure_pipeline(settings: Settings, env: dict, expected: int, home: Path, event_batch: int) -> dict:
    from dagster import DagsterInstance, build_sensor_context

    from amem_dagster.definitions import build_definitions

    dagster_home = home / "dagster-bench"
    dagster_home.mkdir()
    url = env["AMEM_PG_DSN"].replace("/amem?", "/dagster?").replace("postgresql://", "postgresql+psycopg2://")
    (dagster_home / "dagster.yaml").write_text(
        f'storage:\n  postgres:\n    postgres_url: "{url}"\ntelemetry:\n  enabled: false\n')
    run_env = {**os.environ, **env, "DAGSTER_HOME": str(dagster_home)}
    if event_batch:
        # A single-run backfill writes one materialization event per tenant partition and step; Dagster's own
        # setting stores them in batches (one INSERT per batch) instead of one round trip each.
        run_env["DAGSTER_EVENT_BATCH_SIZE"] = str(event_batch)
    instance = DagsterInstance.from_config(str(dagster_home))
    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def("memory_events_sensor")
    cursor, running, launched, failed, spawned = None, [], 0, 0, []
    meter = CpuMeter(home)
    runs_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    next_tick = started
    while True:
        if time.perf_counter() >= next_tick:
            next_tick += TICK_SECONDS
            with build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                      resources=defs.resources) as context:
                meter.mark("bench")
                result = sensor(context)
                meter.mark("sensor")
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
                spawned.append((request.tags, time.time()))
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
    meter.mark("bench")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # Client CPU of the sensor only (the bench's own polling is not the pipeline's); the runs are child processes.
    cpu = {"sensor": meter.steps["sensor"]["client"],
           "runs": (after.ru_utime + after.ru_stime) - (runs_cpu.ru_utime + runs_cpu.ru_stime)}
    for step in meter.steps.values():
        for name, value in step.items():
            if name != "client":
                cpu[name] = cpu.get(name, 0.0) + value
    # Each run is matched to its launch by tags (a run's own tags are a superset of those it was launched with).
    ids = [(r.dagster_run.run_id, next((t for tags, t in spawned if tags.items() <= r.dagster_run.tags.items()),
                                       r.create_timestamp.timestamp())) for r in instance.get_run_records()]
    steps = run_steps(instance, ids)
    instance.dispose()
    return {"seconds": seconds, "runs": launched, "cpu": cpu, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--skew", type=float, default=1.1, help="Zipf exponent of tenant sizes")
    parser.add_argument("--bad-share", type=float, default=0.01)
    parser.add_argument("--encode-sample", type=int, default=4_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--event-batch", type=int, default=1000,
                        help="DAGSTER_EVENT_BATCH_SIZE for the runs (0: Dagster's default, one write per event)")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that proves the benchmark works")
    args = parser.parse_args()
    if args.smoke:
        args.events, args.tenants, args.encode_sample = 300, 12, 200

    with fresh_services() as (settings, env):
        home = Path(env["AMEM_HOME"])
        kafka = KafkaResource(bootstrap_servers=env["AMEM_KAFKA_BOOTSTRAP"])
        kafka.provision_topics()
        good, texts = produce(kafka, args)
        encode_eps, backend = measure_encode(texts, args.encode_sample)
        direct = measure_direct(env, home)
        assert direct["events"] == good and direct["backend"] == backend, direct
        reset_stores(env, settings.regions)
        pipeline = measure_pipeline(settings, env, good, home, args.event_batch)
        counts = stored_counts(env)
        assert counts == {"events": good, "pg_vectors": good, "milvus_vectors": good}, counts

    direct_eps = good / direct["wall_seconds"]
    pipeline_eps = good / pipeline["seconds"]
    step_cpu = {step: sum(parts.values()) for step, parts in direct["cpu"].items()}
    print(f"events {good} over {args.tenants} tenants (Zipf {args.skew}), backend {backend}, "
          f"machine cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    print(f"(a) raw encode          {encode_eps:8.1f} events/s")
    print(f"(b) direct loop         {direct_eps:8.1f} events/s  ({direct['wall_seconds']:.1f}s)")
    print(f"(c) sensor→runs→stores  {pipeline_eps:8.1f} events/s  "
          f"({pipeline['seconds']:.1f}s, {pipeline['runs']} runs)")
    print(f"{'direct step':<16}{'wall s':>8}{'CPU s':>8}{'share':>8}   CPU by process")
    total_cpu = sum(step_cpu.values())
    for step, cpu in step_cpu.items():
        parts = ", ".join(f"{k} {v:.2f}" for k, v in direct["cpu"][step].items() if v >= 0.005)
        print(f"{step:<16}{direct['phases'].get(step, 0.0):8.2f}{cpu:8.2f}{cpu / total_cpu:8.1%}   {parts}")
    print(f"pipeline CPU by process: {json.dumps({k: round(v, 2) for k, v in pipeline['cpu'].items()})}")
    print(f"pipeline run steps (s): {json.dumps(pipeline['steps'])}")
    # What orchestration adds (sensor ticks, run launch, Dagster bookkeeping) is mostly per run, not per event:
    # ratio_vs_direct = D / (D + overhead), so it reaches 0.9 once the direct time D is 9x the overhead.
    overhead = pipeline["seconds"] - direct["wall_seconds"]
    print(f"orchestration overhead {overhead:.1f}s; ratio_vs_direct 0.9 from about "
          f"{max(overhead, 0.0) * 9 * direct_eps:,.0f} events per run at this rate (extrapolated)")
    result = {
        "encode_eps": round(encode_eps, 1), "direct_eps": round(direct_eps, 1), "pipeline_eps": round(pipeline_eps, 1),
        "ratio_vs_direct": round(pipeline_eps / direct_eps, 3), "ratio_vs_encode": round(pipeline_eps / encode_eps, 3),
        "events": good, "tenants": args.tenants, "skew": args.skew, "runs": pipeline["runs"], "backend": backend,
        "dagster_event_batch_size": args.event_batch, "overhead_seconds": round(overhead, 2),
        "events_for_ratio_0_9": int(max(overhead, 0.0) * 9 * direct_eps),
        "step_cpu_share": shares(step_cpu), "step_seconds": direct["phases"],
        "direct_cpu_seconds": {s: {k: round(v, 2) for k, v in p.items()} for s, p in direct["cpu"].items()},
        "pipeline_cpu_share": shares(pipeline["cpu"]), "pipeline_steps": pipeline["steps"],
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
