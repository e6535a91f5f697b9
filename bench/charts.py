"""One matplotlib chart per benchmark result (bench/results/<name>.png), drawn from its JSON record."""

from __future__ import annotations

from pathlib import Path


def _pyplot():  # imported late: only `make bench` installs matplotlib
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
    """Throughput of raw encode, the direct loop and the pipeline; beside it, where the CPU goes, per step of the
    direct loop and per process of the pipeline (service processes included)."""
    plt = _pyplot()
    result = record["result"]
    labels = [("encode_eps", "raw encode"), ("direct_eps", "direct loop"), ("pipeline_eps", "sensor → runs")]
    labels = [(k, v) for k, v in labels if k in result]
    fig, (ax, right) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1, 1.2]})
    bars = ax.bar([v for _, v in labels], [result[k] for k, _ in labels], color=["#55a868", "#4c72b0", "#dd8452"])
    for bar, (key, _) in zip(bars, labels, strict=True):
        ax.annotate(f"{result[key]:.0f}/s", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                    va="bottom", fontsize=9, xytext=(0, 3), textcoords="offset points")
    ratios = ", ".join(f"{k} {result[k]}" for k in ("ratio_vs_direct", "ratio_vs_encode") if k in result)
    ax.set_ylabel("events per second")
    ax.set_title(f"{result.get('events', '?')} events over {result.get('tenants', '?')} tenants, "
                 f"{result.get('backend', '?')}\n{ratios}", fontsize=10)
    panels = [("direct loop, by step", result.get("step_cpu_share") or {}),
              ("pipeline, by process", result.get("pipeline_cpu_share") or {})]
    left = [0.0, 0.0]
    colors = iter(["#55a868", "#4c72b0", "#dd8452", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c",
                   "#ccb974", "#64b5cd", "#2d5a27", "#a1c9f4"])
    for row, (_, shares) in enumerate(panels):
        for name, share in sorted(shares.items(), key=lambda kv: -kv[1]):
            if share < 0.005:
                continue
            right.barh(row, share, left=left[row], color=next(colors), edgecolor="white")
            if share >= 0.04:
                right.annotate(f"{name}\n{share:.0%}", (left[row] + share / 2, row), ha="center", va="center",
                               fontsize=7)
            left[row] += share
    right.set_yticks([0, 1], [title for title, _ in panels])
    right.set_xlim(0, 1)
    right.invert_yaxis()
    right.set_xlabel("share of CPU time (Postgres, Milvus and Kafka server processes included)")
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


def chart_purge(record: dict, path: Path) -> None:
    plt = _pyplot()
    r = record["result"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    methods = ["partition drop", "row DELETE", "DELETE + VACUUM"]
    seconds = [r["drop_seconds"], r["delete_seconds"], r["delete_seconds"] + r.get("vacuum_seconds", 0.0)]
    bars = left.bar(methods, seconds, color=["#4c72b0", "#dd8452", "#c44e52"])
    for bar, value in zip(bars, seconds, strict=True):
        left.annotate(f"{value:.2f} s", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                      va="bottom", fontsize=8, xytext=(0, 3), textcoords="offset points")
    left.set_ylabel(f"seconds (median of {r.get('rounds', '?')} rounds)")
    wal = [r["drop_wal_mb"], r["delete_wal_mb"]]
    bars = right.bar(methods[:2], wal, color=["#4c72b0", "#dd8452"])
    for bar, value in zip(bars, wal, strict=True):
        right.annotate(f"{value:.1f} MB", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                       va="bottom", fontsize=8, xytext=(0, 3), textcoords="offset points")
    right.set_yscale("log")
    right.set_ylabel("WAL written, MB (log)")
    fig.suptitle(f"Expiring {r['rows']:,} rows over {r.get('partitions_dropped', '?')} daily partitions")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def chart_freshness(record: dict, path: Path) -> None:
    """Per batching policy: p50 freshness stacked by stage (sensor wait, run to stored event, embedding), p95
    whiskers per store, and what each policy cost in runs and achieved in throughput."""
    plt = _pyplot()
    r = record["result"]
    rows = r["policies"]
    names = [row["policy"] for row in rows]
    x = list(range(len(rows)))
    sensor = [row["sensor_wait_s"]["p50"] for row in rows]
    stored = [max(row["freshness_s"]["events"]["p50"] - w, 0.0) for row, w in zip(rows, sensor, strict=True)]
    embedded = [max(row["freshness_s"]["pgvector"]["p50"] - row["freshness_s"]["events"]["p50"], 0.0) for row in rows]
    fig, ax = plt.subplots(figsize=(11, 4.8))
    ax.bar(x, sensor, color="#8c8c8c", label="sensor wait (p50)")
    ax.bar(x, stored, bottom=sensor, color="#4c72b0", label="queue + run start + stored event")
    ax.bar(x, embedded, bottom=[a + b for a, b in zip(sensor, stored, strict=True)], color="#55a868",
           label="embedded + in pgvector")
    for offset, store, color in ((-0.12, "pgvector", "#2d5a27"), (0.12, "milvus", "#dd8452")):
        p50 = [row["freshness_s"][store]["p50"] for row in rows]
        p95 = [row["freshness_s"][store]["p95"] for row in rows]
        spread = [[0] * len(rows), [b - a for a, b in zip(p50, p95, strict=True)]]
        ax.errorbar([i + offset for i in x], p50, yerr=spread, fmt="o", color=color, capsize=4, markersize=4,
                    label=f"{store} p50 → p95")
    for i, row in enumerate(rows):
        top = max(row["freshness_s"][s]["p95"] for s in ("pgvector", "milvus"))
        ax.annotate(f"{row['throughput_eps']:.1f} ev/s\n{row['runs']} runs", (i, top), ha="center", va="bottom",
                    fontsize=8, xytext=(0, 4), textcoords="offset points")
    ax.set_xticks(x, [f"{n}\n(default)" if n == r.get("default_policy") else n for n in names])
    ax.set_xlabel("batching policy: min events / max wait")
    ax.set_ylabel("produce → searchable, seconds")
    ax.set_ylim(0, max(row["freshness_s"][s]["p95"] for row in rows for s in ("pgvector", "milvus")) * 1.3)
    ax.set_title(f"Freshness at {r['rate_eps']} events/s over {r['tenants']} tenants; sensor tick "
                 f"{r['sensor_interval_s']} s, {r['cores']} cores, load {r['load_average']}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


CHARTS = {"embedding": chart_embedding, "retrieval": chart_retrieval, "pipeline": chart_pipeline,
          "purge": chart_purge, "freshness": chart_freshness}
