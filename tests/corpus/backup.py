"""Back a database up through the real backup-mysql flow into two local regions (test helper)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from blocks import MySQLConnection
from flows.backup import BackupMySQLParams, backup_mysql
from flows.forms import params_of
from tests.helpers import local_store, save_block


def flow_backup(
    engine: str, database: str, conn: MySQLConnection, root: Path, return_state: bool = False
) -> Any:
    """The manifest (or, with `return_state`, the flow run's final state)."""
    params = BackupMySQLParams(
        source=database,
        database=database,
        engine=engine,  # type: ignore[arg-type]
        connection_block=save_block(conn),
        store_block=save_block(local_store(root)),
        chunk_rows=1000,
    )
    return backup_mysql(**params_of(params), return_state=return_state)
