"""Embedded defaults: what flows use when no block name is given (one machine, no cloud).

- MySQL: 127.0.0.1:3306 as root, or VIBEOPS_MYSQL_HOST / VIBEOPS_MYSQL_PORT / VIBEOPS_MYSQL_USER
  (the password, if any, from VIBEOPS_MYSQL_PASSWORD: never a parameter).
- Backup store: two local folders standing in for two regional buckets, under VIBEOPS_HOME
  (default: `var/` in the project folder).
"""

from __future__ import annotations

import os

from prefect.blocks.core import Block
from pydantic import SecretStr

from blocks.backup_store import BackupStore, LocalFolderDestination
from blocks.mongo import MongoConnection
from blocks.mysql import MySQLConnection
from blocks.paths import vibeops_home
from tasks.errors import missing_block


def local_mysql_connection(database: str = "vibebench") -> MySQLConnection:
    """The embedded default MySQL connection."""
    return MySQLConnection(
        host=os.environ.get("VIBEOPS_MYSQL_HOST", "127.0.0.1"),
        port=int(os.environ.get("VIBEOPS_MYSQL_PORT", "3306")),
        user=os.environ.get("VIBEOPS_MYSQL_USER", "root"),
        password=SecretStr(os.environ.get("VIBEOPS_MYSQL_PASSWORD", "")),
        database=database,
    )


def local_backup_store() -> BackupStore:
    """Two local folders standing in for the two regional buckets."""
    root = vibeops_home() / "backups"
    return BackupStore(
        destinations=[
            LocalFolderDestination(region="local-a", path=str(root / "region-a")),
            LocalFolderDestination(region="local-b", path=str(root / "region-b")),
        ]
    )


def _load(block_type: type[Block], name: str, field: str) -> Block:
    try:
        return block_type.load(name)  # type: ignore[return-value]  # sync context: a Block
    except ValueError as exc:
        raise missing_block(
            field,
            block_type.get_block_type_name(),
            block_type.__name__,
            name,
            "the embedded default",
        ) from exc


def resolve_mysql(block_name: str | None, database: str = "vibebench") -> MySQLConnection:
    """The named MySQLConnection block, or the embedded default when the name is empty."""
    if not block_name:
        return local_mysql_connection(database)
    return _load(MySQLConnection, block_name, "connection_block")  # type: ignore[return-value]


def local_mongo_connection(database: str = "vibebench") -> MongoConnection:
    """The embedded default MongoDB: 127.0.0.1:27017, or VIBEOPS_MONGO_HOST / _PORT / _USER
    (the password from VIBEOPS_MONGO_PASSWORD: never a parameter)."""
    return MongoConnection(
        host=os.environ.get("VIBEOPS_MONGO_HOST", "127.0.0.1"),
        port=int(os.environ.get("VIBEOPS_MONGO_PORT", "27017")),
        username=os.environ.get("VIBEOPS_MONGO_USER", ""),
        password=SecretStr(os.environ.get("VIBEOPS_MONGO_PASSWORD", "")),
        database=database,
    )


def resolve_mongo(
    block_name: str | None, database: str = "vibebench", field: str = "connection_block"
) -> MongoConnection:
    """The named MongoConnection block, or the embedded default when the name is empty."""
    if not block_name:
        return local_mongo_connection(database)
    return _load(MongoConnection, block_name, field)  # type: ignore[return-value]


def resolve_store(block_name: str | None) -> BackupStore:
    """The named BackupStore block, or the embedded local store when the name is empty."""
    if not block_name:
        return local_backup_store()
    return _load(BackupStore, block_name, "store_block")  # type: ignore[return-value]


LOCAL_BLOCKS = ("local-mysql", "local-two-regions", "local-retention-policy")


def save_local_blocks() -> tuple[str, ...]:
    """Save the embedded defaults as blocks, so the UI shows (and edits) them.

    `local-retention-policy` holds the seed's rules: edit it in the UI (Blocks) and name it in
    purge-retention's `policy_block`. `vibeops up` and `vibeops setup-blocks` call this.
    """
    from blocks.retention import RetentionPolicy

    local_mysql_connection().save(LOCAL_BLOCKS[0], overwrite=True)
    local_backup_store().save(LOCAL_BLOCKS[1], overwrite=True)
    RetentionPolicy().save(LOCAL_BLOCKS[2], overwrite=True)
    return LOCAL_BLOCKS
