"""deployments/Dockerfile, checked without a Docker engine: parsed with BuildKit's own parser (the `dockerfile`
package), its COPY sources and ignore file checked against the repository, its command against dagster's CLI,
and its build-time model check run here."""

from __future__ import annotations

import fnmatch
import importlib
import os
import re
import subprocess
import sys
import tomllib

import dockerfile
import pytest
import yaml
from dagster._cli.api import grpc_command

from tests.deployments.support import DEPLOYMENTS, ROOT

DOCKERFILE = DEPLOYMENTS / "Dockerfile"
IGNORE = DEPLOYMENTS / "Dockerfile.dockerignore"


@pytest.fixture(scope="module")
def stages() -> list[list[dockerfile.Command]]:
    """The instructions of each build stage; stage 0 holds what precedes the first FROM (global ARGs)."""
    result: list[list[dockerfile.Command]] = [[]]
    for command in dockerfile.parse_file(str(DOCKERFILE)):
        if command.cmd == "FROM":
            result.append([])
        result[-1].append(command)
    return result


def ignored(path: str) -> bool:
    """Docker's .dockerignore rule: the last pattern that matches the path (or a parent of it) decides."""
    parts = path.split("/")
    decision = False
    for line in IGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        pattern = pattern.removeprefix("**/")
        candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)] + parts
        if any(fnmatch.fnmatch(c, pattern) for c in candidates):
            decision = not negate
    return decision


def env_of(stage: list[dockerfile.Command]) -> dict[str, str]:
    env: dict[str, str] = {}
    for command in stage:
        if command.cmd == "ENV":
            env.update(zip(command.value[::2], command.value[1::2], strict=True))
    return env


def test_cpu_base_by_default_with_cuda_build_arguments(stages):
    global_args = dict(c.value[0].split("=", 1) for c in stages[0] if c.cmd == "ARG")
    assert global_args["BASE_IMAGE"] == "python:3.11-slim"
    build, final = stages[1], stages[-1]
    assert build[0].value == ("${BASE_IMAGE}", "AS", "build") and final[0].value == ("${BASE_IMAGE}",)
    build_args = dict(c.value[0].split("=", 1) for c in build if c.cmd == "ARG")
    assert build_args["TORCH_INDEX_URL"].endswith("/whl/cpu")
    assert "cu1" in DOCKERFILE.read_text()  # the documented CUDA variant of that argument


def test_torch_first_then_the_project(stages):
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch_pin,) = [p for p in pins if p.startswith("torch==")]
    runs = [c.value[0] for c in stages[1] if c.cmd == "RUN"]
    torch_at = next(i for i, r in enumerate(runs) if torch_pin in r and "${TORCH_INDEX_URL}" in r)
    project_at = next(i for i, r in enumerate(runs) if re.search(r"pip install \.$", r))
    assert torch_at < project_at


def test_copy_sources_exist_enter_the_context_and_cover_the_packages(stages):
    copied: set[str] = set()
    for command in (c for stage in stages for c in stage if c.cmd == "COPY"):
        if any(flag.startswith("--from=") for flag in command.flags):
            continue
        for source in command.value[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert not ignored(source), f"COPY {source}: excluded by {IGNORE.name}"
            copied.add(source)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["readme"] in copied and "pyproject.toml" in copied
    for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in copied, f"package {pattern} is not copied into the image"
    assert ignored(".venv/bin/python") and ignored(".amem/pgdata/PG_VERSION") and ignored("tests/conftest.py")
    assert ignored("amem_dagster/__pycache__/settings.cpython-311.pyc")


def test_runs_as_a_non_root_user_offline(stages):
    final = stages[-1]
    (user,) = [c.value[0] for c in final if c.cmd == "USER"]
    assert user.isdigit() and int(user) != 0  # numeric, so the kubelet can enforce runAsNonRoot
    helm = yaml.safe_load((DEPLOYMENTS / "helm/values.yaml").read_text())
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    assert deployment["podSecurityContext"]["runAsUser"] == int(user)
    env = env_of(final)
    assert env["HF_HUB_OFFLINE"] == "1" and env["AMEM_DEPLOYMENT"] == "prod"
    assert env["DAGSTER_HOME"] == yaml.safe_load((DEPLOYMENTS / "dagster.yaml").read_text())[
        "run_launcher"]["config"]["dagster_home"]


def test_command_is_the_grpc_server_of_the_code_location(stages):
    final = stages[-1]
    assert not [c for c in final if c.cmd == "ENTRYPOINT"], \
        "an ENTRYPOINT would prefix the `dagster api execute_run` args of run and step pods"
    (cmd,) = [c for c in final if c.cmd == "CMD"]
    assert cmd.json and cmd.value[:3] == ("dagster", "api", "grpc")
    params = grpc_command.make_context("grpc", list(cmd.value[3:])).params
    assert params["module_name"] == "amem_dagster.definitions"
    importlib.import_module(params["module_name"])
    (exposed,) = [c.value[0] for c in final if c.cmd == "EXPOSE"]
    assert int(exposed) == params["port"] == 3030


def test_build_time_model_check_passes_offline(stages, tmp_path):
    """The image's model check, run here with the same pins: the packaged weights load with the hub offline and the
    CPU default's int8 graph is built into AMEM_HOME (baked into the image)."""
    (check,) = [c.value[0] for c in stages[-1] if c.cmd == "RUN" and "default_model_path" in c.value[0]]
    code = re.fullmatch(r'python -c "(.*)"', check).group(1)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "AMEM_HOME": str(tmp_path / "amem")}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert list((tmp_path / "amem" / "models" / "onnx-int8").glob("*/meta.json")), "the int8 graph was not baked in"
