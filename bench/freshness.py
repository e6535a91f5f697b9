"""Freshness benchmark: produce→searchable latency per store under the real sensor and runs, per batching policy."""

import argparse
import json
import os
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from amem_dagster import demo  # noqa: E402
from amem_dagster.cli import dagster_home  # noqa: E402
from amem_dagster.settings import Settings  # noqa: E402
from bench.freshness_watch import STORES, Producer, Watcher, spread  # noqa: E402
from bench.services import fresh_services  # noqa: E402
from resources.embedder import EmbedderResource  # noqa: E402
from resources.kafka import KafkaResource  # noqa: E402
from resources.milvus import MilvusResource  # noqa: E402
from resources.postgres import PostgresResource  # noqa: E402
from sensors.batching import BatchPolicy  # noqa: E402
from sensors.memory_events_sensor import SENSOR_NAME  # noqa: E402

USAGE = """python bench/freshness.py [--rate 20] [--events 900] [--tenants 20] [--policies 20/1,50/3,200/10] [--smoke]

Fresh embedded services; `amem dev`'s own Dagster instance config (Postgres storage, queued runs). Per policy
(min_events/max_wait_seconds) a producer thread sends demo events at a steady rate while this process plays the
daemon: it ticks the real memory_events_sensor at its minimum interval, queues the requested runs and dequeues
them every dequeue interval of the instance's run coordinator, at most max_concurrent_runs at a time, each run its
own `dagster job execute` process (the job's own in-process executor, as in the local deployment). A watcher
polls every store for the outstanding event ids. The last line printed is one JSON object."""


class LocalDaemon:
    """What `dagster dev`'s daemon does for memory_events_sensor: ticks, the run queue, one process per run."""

    def __init__(self, instance, home: Path, env: dict):
        coordinator = instance.run_coordinator
        self.max_runs = coordinator.get_run_queue_config().max_concurrent_runs
        self.dequeue_seconds = coordinator.dequeue_interval_seconds
        self.instance, self.home, self.env = instance, home, env
        self.cursor: str | None = None  # kept across policies: the sensor keeps its place in the topic
        self.launched = 0
        self.sensor_interval = 0

    def drive(self, defs, producer: Producer, watcher: Watcher, timeout: float) -> dict:
        """Run until everything produced is in every store and no run is queued or running."""
        sensor = defs.resolve_sensor_def(SENSOR_NAME)
        self.sensor_interval = sensor.minimum_interval_seconds
        queue, running, run_seconds, waits, tick_seconds = deque(), [], [], [], []
        start = time.perf_counter()
        next_tick = start
        # The run queue daemon loops independently of the sensor: half an interval is their mean phase offset.
        next_dequeue = start + self.dequeue_seconds / 2
        while True:
            now = time.perf_counter()
            if now >= next_tick:
                next_tick = max(next_tick + sensor.minimum_interval_seconds, now)
                requests = self._tick(sensor, defs)
                tick_seconds.append(time.perf_counter() - now)
                watcher.mark_requested({o["tenant_id"] for r in requests
                                        for o in r.run_config["ops"]["memory_events"]["config"]["offsets"]},
                                       now, time.perf_counter())
                queue.extend((request, now) for request in requests)
            if now >= next_dequeue:
                next_dequeue += self.dequeue_seconds
                while queue and len(running) < self.max_runs:
                    request, queued_at = queue.popleft()
                    waits.append(now - queued_at)
                    running.append(self._launch(sensor.job_name, request))
            for item in [r for r in running if r[0].poll() is not None]:
                running.remove(item)
                proc, log, launched_at = item
                if proc.returncode:
                    raise SystemExit(f"run failed, log {log}:\n{log.read_text(errors='replace')[-3000:]}")
                run_seconds.append(time.perf_counter() - launched_at)
            for thread in (producer, watcher):
                if thread.error:
                    raise thread.error
            if producer.finished and not queue and not running and watcher.complete():
                break
            if now - start > timeout:
                raise SystemExit(f"not every event became searchable within {timeout:.0f}s")
            time.sleep(0.05)
        return {"ticks": len(tick_seconds), "tick_seconds_mean": round(sum(tick_seconds) / len(tick_seconds), 2),
                "tick_seconds_max": round(max(tick_seconds), 2), "runs": len(run_seconds),
                "run_seconds_mean": round(sum(run_seconds) / len(run_seconds), 2) if run_seconds else 0.0,
                "queue_wait_mean_s": round(sum(waits) / len(waits), 2) if waits else 0.0}

    def _tick(self, sensor, defs) -> list:
        from dagster import build_sensor_context

        with build_sensor_context(instance=self.instance, cursor=self.cursor, definitions=defs,
                                  resources=defs.resources) as context:
            result = sensor(context)
        for request in getattr(result, "dynamic_partitions_requests", None) or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        self.cursor = getattr(result, "cursor", None) or self.cursor
        return list(getattr(result, "run_requests", None) or [])

    def _launch(self, job_name: str, request) -> tuple:
        config = self.home / f"run-{self.launched}.json"
        config.write_text(json.dumps(request.run_config))
        # The run's output goes to a file: a pipe nobody reads until exit would fill and block the run.
        log = self.home / f"run-{self.launched}.log"
        self.launched += 1
        with open(log, "wb") as sink:
            proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "dagster"), "job", "execute", "-m", "amem_dagster.definitions",
                 "-j", job_name, "-c", str(config), "--tags", json.dumps(request.tags)],
                cwd=ROOT, env={**os.environ, **self.env, "DAGSTER_HOME": str(self.home)}, stdout=sink,
                stderr=subprocess.STDOUT)
        return proc, log, time.perf_counter()


def parse_policies(text: str) -> list[BatchPolicy]:
    policies = []
    for item in text.split(","):
        events, wait = item.split("/")
        policies.append(BatchPolicy(min_events=int(events), max_wait_seconds=float(wait)))
    # The headline is the default policy's: measure it even when the sweep does not name it.
    return policies if BatchPolicy() in policies else [*policies, BatchPolicy()]


def label(policy: BatchPolicy) -> str:
    return f"{policy.min_events} ev / {policy.max_wait_seconds:g} s"


def measure(args, policy: BatchPolicy, index: int, daemon: LocalDaemon, settings: Settings, kafka, postgres,
            milvus) -> dict:
    from amem_dagster.definitions import build_definitions

    # A new seed per policy: new event ids, so each policy's events are told apart from earlier ones.
    batch = demo.generate(tenants=args.tenants, events=args.events, bad_share=0.0, skew=args.skew,
                          seed=args.seed + index)
    watcher = Watcher(postgres, milvus, args.poll)
    producer = Producer(kafka, batch, args.rate, watcher)
    defs = build_definitions(settings, events_policy=policy)
    watcher.start()
    producer.start()
    try:
        stats = daemon.drive(defs, producer, watcher, timeout=args.events / args.rate + 600)
    finally:
        watcher.stop()
    done = max(max(watcher.seen[store].values()) for store in STORES)
    return {"policy": label(policy), "min_events": policy.min_events, "max_wait_seconds": policy.max_wait_seconds,
            "events": len(batch.messages), **stats,
            "events_per_run": round(len(batch.messages) / max(stats["runs"], 1), 1),
            "produce_seconds": round(producer.finished - producer.started, 2),
            "throughput_eps": round(len(batch.messages) / (done - producer.started), 2),
            "freshness_s": {store: spread(watcher.latencies(store)) for store in STORES},
            # Produce → the tick that requested its run: the part of freshness the batching thresholds decide.
            "sensor_wait_s": spread(watcher.sensor_waits()),
            "polls": watcher.polls,
            "poll_period_ms": round(1000 * (watcher.stopped - watcher.began) / max(watcher.polls, 1)),
            "poll_ms_mean": {store: round(1000 * t / max(watcher.polls, 1), 1)
                             for store, t in watcher.poll_seconds.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, usage=USAGE)
    parser.add_argument("--rate", type=float, default=20.0, help="events per second")
    parser.add_argument("--events", type=int, default=900, help="events per policy")
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--skew", type=float, default=1.1, help="Zipf exponent of tenant sizes")
    parser.add_argument("--policies", default="20/1,50/3,200/10", help="min_events/max_wait_seconds,...")
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between watcher polls")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--smoke", action="store_true", help="a tiny run that proves the benchmark works")
    args = parser.parse_args()
    if args.smoke:
        args.events, args.tenants, args.policies = 40, 4, "20/1,200/10"
    policies = parse_policies(args.policies)

    with fresh_services() as (settings, env):
        from dagster import DagsterInstance

        kafka = KafkaResource(bootstrap_servers=env["AMEM_KAFKA_BOOTSTRAP"])
        kafka.provision_topics()
        postgres = PostgresResource(dsn=env["AMEM_PG_DSN"], regions=",".join(settings.regions))
        milvus = MilvusResource(uri=env["AMEM_MILVUS_URI"])
        # A running deployment has its tables, collections and exported model graph (cached under AMEM_HOME)
        # already: make them outside the measurement, or the first policy's first run pays for them.
        postgres.pool()
        for region in settings.regions:
            milvus.ensure_collection(region)
        EmbedderResource(model=settings.embed_model or "").encode(["warm up"])
        # The instance `amem dev` writes: the embedded server's dagster database, its queued run coordinator.
        home, _ = dagster_home.write(Settings.from_env({"AMEM_HOME": env["AMEM_HOME"]}))
        instance = DagsterInstance.from_config(str(home))
        daemon = LocalDaemon(instance, home, env)
        rows = []
        for index, policy in enumerate(policies):
            rows.append(measure(args, policy, index, daemon, settings, kafka, postgres, milvus))
            print(f"{rows[-1]['policy']:>16}: sensor wait p50 {rows[-1]['sensor_wait_s']['p50']:.1f}s, " + ", ".join(
                f"{s} p50 {rows[-1]['freshness_s'][s]['p50']:.1f}s p95 {rows[-1]['freshness_s'][s]['p95']:.1f}s"
                for s in STORES) + f"; {rows[-1]['throughput_eps']:.1f} events/s, {rows[-1]['runs']} runs",
                flush=True)
        instance.dispose()

    default = rows[policies.index(BatchPolicy())]
    result = {
        "default_policy": default["policy"],
        **{f"{store}_{q}_s": default["freshness_s"][store][q] for store in STORES for q in ("p50", "p95")},
        "default_throughput_eps": default["throughput_eps"], "default_runs": default["runs"],
        "policies": rows, "rate_eps": args.rate, "events_per_policy": args.events, "tenants": args.tenants,
        "skew": args.skew, "sensor_interval_s": daemon.sensor_interval, "dequeue_interval_s": daemon.dequeue_seconds,
        "max_concurrent_runs": daemon.max_runs, "poll_interval_s": args.poll, "cores": os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
