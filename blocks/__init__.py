"""Prefect blocks: connections, the backup store and policies.

Register them with `prefect block register -m blocks`. Classes load on first use, so a flow
that needs only the Kubernetes block does not import prefect-gcp (and pandas) at start, and an
alert runbook's flow module imports prefect-kubernetes (about 3 s) only when its run loads the
cluster (`blocks.load_cluster`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_MODULES = {
    "BackupStore": "blocks.backup_store",
    "GcsDestination": "blocks.backup_store",
    "LocalFolderDestination": "blocks.backup_store",
    "EmulatorGcpCredentials": "blocks.gcs_emulator",
    "InfluxConnection": "blocks.influx",
    "KubeCluster": "blocks.kube",
    "load_cluster": "blocks.kube",
    "resolve_store": "blocks.defaults",
    "MongoConnection": "blocks.mongo",
    "MySQLConnection": "blocks.mysql",
    "RetentionPolicy": "blocks.retention",
    "TenantSettings": "blocks.tenants",
    "TenantTiers": "blocks.tenants",
}
__all__ = [
    "BackupStore",
    "EmulatorGcpCredentials",
    "GcsDestination",
    "InfluxConnection",
    "KubeCluster",
    "LocalFolderDestination",
    "MongoConnection",
    "MySQLConnection",
    "RetentionPolicy",
    "TenantSettings",
    "TenantTiers",
]  # block classes only: `prefect block register -m blocks` and `vibeops setup-blocks` walk it

if TYPE_CHECKING:
    from blocks.backup_store import BackupStore, GcsDestination, LocalFolderDestination
    from blocks.defaults import resolve_store as resolve_store
    from blocks.gcs_emulator import EmulatorGcpCredentials
    from blocks.influx import InfluxConnection
    from blocks.kube import KubeCluster
    from blocks.kube import load_cluster as load_cluster
    from blocks.mongo import MongoConnection
    from blocks.mysql import MySQLConnection
    from blocks.retention import RetentionPolicy
    from blocks.tenants import TenantSettings, TenantTiers


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module 'blocks' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # `prefect block register -m blocks` walks dir(); listing the names loads every class.
    return sorted(set(globals()) | set(__all__))
