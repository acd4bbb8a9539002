"""Prefect blocks: connections, the backup store and policies.

Register them with `prefect block register -m blocks`.
"""

from blocks.backup_store import BackupStore, GcsDestination, LocalFolderDestination
from blocks.gcs_emulator import EmulatorGcpCredentials
from blocks.kube import KubeCluster
from blocks.mysql import MySQLConnection
from blocks.retention import RetentionPolicy
from blocks.tenants import TenantSettings, TenantTiers

__all__ = [
    "BackupStore",
    "EmulatorGcpCredentials",
    "GcsDestination",
    "KubeCluster",
    "LocalFolderDestination",
    "MySQLConnection",
    "RetentionPolicy",
    "TenantSettings",
    "TenantTiers",
]
