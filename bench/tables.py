"""The headline rows of bench/results/summary.md per benchmark: (figure, value, target verdict)."""

from __future__ import annotations


def _verdict(ok: bool, target: str) -> str:
    return f"{'met' if ok else '**not met**'} ({target})"


def rows_embedding(r: dict) -> list[tuple[str, str, str]]:
    default = r["backends"][r["default_backend"]]
    rows = [("CPU default backend", r["default_backend"], ""),
            ("speed-up vs PyTorch fp32 (median of in-round ratios)", f"{r['default_speedup']:.2f}×",
             _verdict(r["default_speedup"] >= 2.5, "≥ 2.5×")),
            ("mean cosine to PyTorch fp32", f"{r['default_cosine']:.4f}",
             _verdict(r["default_cosine"] >= 0.99, "≥ 0.99")),
            ("throughput torch → default", f"{r['torch_eps']:.0f} → {default['eps']:.0f} texts/s", "")]
    for name, b in r["backends"].items():
        rows.append((f"  {name}", f"{b['speedup']:.2f}× ({b['eps']:.0f}/s), cos {b['cosine_mean']:.4f}", ""))
    return rows


def rows_retrieval(r: dict) -> list[tuple[str, str, str]]:
    rows = [("data", f"{r['vectors']} vectors, {r['tenants']} tenants, Zipf {r['skew']} (largest "
                      f"{r['tenant_sizes']['largest']}, smallest {r['tenant_sizes']['smallest']})", "")]
    stores = {"pgvector": r.get("pgvector"), "milvus": r.get("milvus"), **(r.get("alternatives") or {})}
    for store, per_ef in stores.items():
        label = {"pgvector": "pgvector", "milvus": "Milvus Lite",
                 "pg_daily_partitions": "pgvector, schema 3 layout (daily partitions)"}.get(store, store)
        for ef, s in sorted((per_ef or {}).items(), key=lambda kv: int(kv[0])):
            by_size = s.get("by_tenant_size") or {}
            sizes = ", ".join(f"{b} {v['p99_ms']:.1f}" for b, v in by_size.items())
            rows.append((f"{label} ef={ef}", f"recall@10 {s['recall_at_10']:.3f}, p50/p95/p99 {s['p50_ms']:.1f}/"
                                             f"{s['p95_ms']:.1f}/{s['p99_ms']:.1f} ms"
                                             + (f" (p99 by tenant size: {sizes} ms)" if sizes else ""),
                         _verdict(s["meets_target"], "recall ≥ 0.95 and p99 ≤ 10 ms")))
    return rows


def rows_pipeline(r: dict) -> list[tuple[str, str, str]]:
    rows = [("events / tenants / runs", f"{r.get('events')} / {r.get('tenants')} / {r.get('runs')}", "")]
    for key in ("encode_eps", "direct_eps", "pipeline_eps"):
        if key in r:
            rows.append((key, f"{r[key]:.1f} events/s", ""))
    if "ratio_vs_direct" in r:
        rows.append(("ratio_vs_direct", f"{r['ratio_vs_direct']:.3f}",
                     _verdict(r["ratio_vs_direct"] >= 0.9, "≥ 0.9")))
    if "ratio_vs_encode" in r:
        rows.append(("ratio_vs_encode", f"{r['ratio_vs_encode']:.3f}", ""))
    if "overhead_seconds" in r:
        rows.append(("orchestration overhead (pipeline − direct)", f"{r['overhead_seconds']:.1f} s per run; "
                     f"ratio 0.9 from ~{r['events_for_ratio_0_9']:,} events per run (extrapolated)", ""))
    for step, share in sorted((r.get("step_cpu_share") or {}).items(), key=lambda kv: -kv[1]):
        if share >= 0.01:
            rows.append((f"  direct loop CPU share: {step}", f"{share:.1%}", ""))
    return rows


def rows_purge(r: dict) -> list[tuple[str, str, str]]:
    return [("rows expired", f"{r['rows']:,} over {r.get('partitions_dropped', '?')} daily partitions", ""),
            ("partition drop vs row DELETE", f"{r['drop_seconds']:.3f} s vs {r['delete_seconds']:.3f} s "
                                             f"(DELETE/drop {r['ratio']:.2f})", ""),
            ("counting the VACUUM the DELETE owes", f"DELETE/drop {r['ratio_with_vacuum']:.2f}", ""),
            ("WAL written", f"{r['drop_wal_mb']:.1f} MB vs {r['delete_wal_mb']:.1f} MB", "")]


def rows_freshness(r: dict) -> list[tuple[str, str, str]]:
    rows = [("load", f"{r['rate_eps']} events/s, {r['events_per_policy']} events per policy, {r['tenants']} tenants; "
                     f"sensor tick {r['sensor_interval_s']} s", "")]
    for row in r["policies"]:
        f = row["freshness_s"]
        default = " (default)" if row["policy"] == r.get("default_policy") else ""
        rows.append((f"policy {row['policy']}{default}",
                     f"p50/p95 s: events {f['events']['p50']:.1f}/{f['events']['p95']:.1f}, pgvector "
                     f"{f['pgvector']['p50']:.1f}/{f['pgvector']['p95']:.1f}, Milvus {f['milvus']['p50']:.1f}/"
                     f"{f['milvus']['p95']:.1f}; {row['throughput_eps']:.1f} events/s in {row['runs']} runs", ""))
    return rows


def rows_generic(r: dict) -> list[tuple[str, str, str]]:
    return [(k, f"{v}", "") for k, v in r.items() if not isinstance(v, dict | list)]


ROWS = {"embedding": rows_embedding, "retrieval": rows_retrieval, "pipeline": rows_pipeline,
        "purge": rows_purge, "freshness": rows_freshness}
