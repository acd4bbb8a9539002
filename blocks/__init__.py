"""Prefect blocks: connections, the backup store and policies.

Register them with `prefect block register -m blocks`.
"""

from blocks.backup_store import BackupStore, GcsDestination, LocalFolderDestination
from blocks.mysql import MySQLConnection
from blocks.tenants import TenantSettings, TenantTiers

__all__ = [
    "BackupStore",
    "GcsDestination",
    "LocalFolderDestination",
    "MySQLConnection",
    "TenantSettings",
    "TenantTiers",
]
