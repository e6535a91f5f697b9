"""Fixtures of the deployment tests: offline AMEM_* addresses and a kubeconfig for a cluster that is not there."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.deployments.support import OFFLINE_AMEM_ENV


@pytest.fixture
def offline_amem_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in OFFLINE_AMEM_ENV.items():
        monkeypatch.setenv(key, value)
    return OFFLINE_AMEM_ENV


@pytest.fixture
def fake_kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig for a cluster that does not exist: kubernetes' loader parses it without any network."""
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "offline",
        "clusters": [{"name": "offline", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "offline", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "offline", "context": {"cluster": "offline", "user": "offline", "namespace": "amem"}}],
    }))
    return path
