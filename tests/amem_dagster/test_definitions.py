"""The code location loads as Dagster loads it, with the stable names operators and tests rely on."""

import subprocess
import sys
from pathlib import Path

from amem_dagster.definitions import build_definitions
from amem_dagster.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_workspace_validates_with_the_dagster_cli():
    dagster = Path(sys.executable).parent / "dagster"
    out = subprocess.run([str(dagster), "definitions", "validate", "-w", "workspace.yaml"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Validation successful for code location amem_dagster" in out.stderr + out.stdout


def test_stable_names_and_local_executor():
    defs = build_definitions(Settings.from_env({"AMEM_HOME": "/tmp/unused"}))
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} >= {"memory_events", "memory_embeddings"}
    assert {s.name for s in defs.sensors} >= {"memory_events_sensor", "memory_embeddings_sensor"}
    assert graph.get(next(k for k in graph.get_all_asset_keys()
                          if k.to_user_string() == "memory_events")).partitions_def.name == "tenants"
    job = defs.resolve_job_def("memory_ingest_job")
    assert job.executor_def.name == "in_process"
