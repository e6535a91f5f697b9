"""Every benchmark still runs: each script with --smoke as its own process, its last line JSON with its headline keys.

Benchmarks are not tests; this only proves they work (tiny sizes, about 1.5 minutes for all four here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HEADLINES = {
    "pipeline": {"encode_eps", "direct_eps", "pipeline_eps", "ratio_vs_direct", "ratio_vs_encode"},
    "embedding": {"torch_eps", "default_backend", "default_eps", "default_speedup", "default_cosine", "backends"},
    "retrieval": {"vectors", "tenants", "pgvector", "milvus", "targets"},
    "purge": {"ratio", "drop_seconds", "delete_seconds"},
    "freshness": {"default_policy", "events_p50_s", "pgvector_p50_s", "pgvector_p95_s", "milvus_p50_s",
                  "milvus_p95_s", "default_throughput_eps", "policies"},
}


def run_smoke(name: str) -> dict:
    script = ROOT / "bench" / f"{name}.py"
    if not script.exists():
        pytest.skip(f"{script.relative_to(ROOT)} does not exist yet")
    # The benchmarks start their own services in a temporary AMEM_HOME; the suite's addresses must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMEM_")}
    env["HF_HUB_OFFLINE"] = "1"
    out = subprocess.run([sys.executable, str(script), "--smoke"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, f"{name} --smoke failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    last = out.stdout.strip().splitlines()[-1]
    result = json.loads(last)
    assert isinstance(result, dict)
    return result


@pytest.mark.parametrize("name", sorted(HEADLINES))
def test_benchmark_smoke_run_ends_with_its_json_headline(name: str) -> None:
    result = run_smoke(name)
    missing = HEADLINES[name] - result.keys()
    assert not missing, f"{name}: the JSON line lacks {sorted(missing)}"
    if name == "embedding":
        assert result["default_cosine"] >= 0.99
        assert result["torch_eps"] > 0 and result["default_eps"] > 0
    if name == "retrieval":
        for store in ("pgvector", "milvus"):
            assert result[store], store
            for per_ef in result[store].values():
                assert 0.0 <= per_ef["recall_at_10"] <= 1.0 and per_ef["p50_ms"] <= per_ef["p99_ms"]
    if name == "pipeline":
        assert result["pipeline_eps"] > 0 and result["events"] > 0
    if name == "freshness":
        assert len(result["policies"]) >= 2
        for row in result["policies"]:
            assert row["events"] > 0 and row["runs"] >= 1 and row["throughput_eps"] > 0, row
            for store in ("events", "pgvector", "milvus"):
                spread = row["freshness_s"][store]
                assert 0 < spread["p50"] <= spread["p95"] <= spread["max"], (row["policy"], store, spread)
            # A vector is written after its event row, never before.
            assert row["freshness_s"]["events"]["p50"] <= row["freshness_s"]["pgvector"]["p50"], row


def test_report_renders_charts_and_a_summary_from_results(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    sys.path.insert(0, str(ROOT))
    from bench import report

    record = {"benchmark": "embedding", "command": "bench/embedding.py --smoke", "smoke": True,
              "finished": "2026-01-01T00:00:00+00:00", "seconds": 1.0,
              "machine": {**report.machine(), "load_average_after": 0.0},
              "result": {"torch_eps": 100.0, "default_backend": "onnx-int8", "default_eps": 250.0,
                         "default_speedup": 2.5, "default_cosine": 0.995, "texts": 10, "cores": 2,
                         "backends": {"torch": {"eps": 100.0, "speedup": 1.0, "speedup_p25_p75": [1, 1],
                                                "cosine_mean": 1.0},
                                      "onnx-int8": {"eps": 250.0, "speedup": 2.5, "speedup_p25_p75": [2.2, 2.7],
                                                    "cosine_mean": 0.995}}}}
    (tmp_path / "embedding.json").write_text(json.dumps(record))
    summary = report.render(tmp_path)
    assert (tmp_path / "embedding.png").stat().st_size > 1000
    text = summary.read_text()
    assert "## embedding (smoke run)" in text and "2.50×" in text and "Machine: " in text
