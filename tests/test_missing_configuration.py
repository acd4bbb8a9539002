"""Missing configuration fails with a typed error naming the block to create and where.

Issue #14: a runbook without a cluster failed with the raw
`ConfigException: Invalid kube-config file. No configuration found.`
"""

from __future__ import annotations

from pathlib import Path

import pytest

from blocks.defaults import resolve_mongo, resolve_mysql, resolve_store
from blocks.influx import resolve_influx
from blocks.kube import KubeCluster, load_cluster
from blocks.tenants import resolve_kube_cluster
from flows.incidents import restart_deployment
from tasks.errors import (
    ClusterNotConfigured,
    ConfigurationError,
    ConnectionNotConfigured,
    MissingConfiguration,
    StoreNotConfigured,
)
from tasks.kube import api_client


@pytest.fixture
def no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A worker with no in-cluster service account and no kubeconfig."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))


def test_no_cluster_is_a_typed_error_naming_the_block(no_cluster) -> None:
    with pytest.raises(ClusterNotConfigured) as info, api_client(KubeCluster()):
        pass
    message = str(info.value)
    assert "'VibeOps Kube Cluster' block" in message
    assert "Prefect UI (Blocks" in message and "cluster_block" in message
    assert isinstance(info.value, ConfigurationError)


def test_a_runbook_without_a_cluster_fails_with_the_typed_error(no_cluster) -> None:
    state = restart_deployment(
        namespace="vibebench", deployment="vibebench-core", dry_run=True, return_state=True
    )
    assert state.is_failed()
    with pytest.raises(ClusterNotConfigured, match="VibeOps Kube Cluster"):
        state.result()


@pytest.mark.parametrize(
    ("resolve", "error", "block_type"),
    [
        (resolve_store, StoreNotConfigured, "VibeOps Backup Store"),
        (resolve_mysql, ConnectionNotConfigured, "VibeOps MySQL Connection"),
        (resolve_mongo, ConnectionNotConfigured, "VibeOps MongoDB Connection"),
        (resolve_influx, ConnectionNotConfigured, "VibeOps InfluxDB Connection"),
        (load_cluster, ClusterNotConfigured, "VibeOps Kube Cluster"),
        (resolve_kube_cluster, ClusterNotConfigured, "VibeOps Kube Cluster"),
    ],
)
def test_a_block_name_that_does_not_exist_names_the_type_and_the_fix(
    resolve, error, block_type: str
) -> None:
    with pytest.raises(error) as info:
        resolve("no-such-block")
    message = str(info.value)
    assert f"no '{block_type}' block named 'no-such-block'" in message
    assert "Add block" in message and "vibeops setup-blocks" in message
    assert "leave" in message and "empty" in message
    assert isinstance(info.value, MissingConfiguration)

