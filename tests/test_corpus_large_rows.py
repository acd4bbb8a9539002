"""Large rows against a small max_allowed_packet on the restore server (private MariaDB).

The backup records its longest row; a restore raises the server's limit where the user may
(and puts it back), or fails before loading, naming the table, the size and the setting;
and a load that fails anyway carries the server's full message (error 2006), not a
truncated statement.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from blocks import MySQLConnection
from tasks.drill import DrillMarker
from tasks.errors import RestoreLoadError
from tasks.manifest import BackupManifest
from tasks.mysql import table_checksums
from tasks.restore import create_scratch_database, drop_scratch_database, restorer_for
from tasks.storage import LocalFolderStore
from tests.corpus.backup import flow_backup
from tests.fixtures.mysql import run_sql

pytestmark = pytest.mark.mysql

ROW_BYTES = 3 * 1024 * 1024  # fits a 4 MiB packet as data, not as a hex INSERT (6 MiB)
SMALL_PACKET = 4 * 1024 * 1024
LOGICAL = ["mysqldump", "mydumper"]


@pytest.fixture(autouse=True)
def vibeops_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VIBEOPS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def big_db(mysql_root: MySQLConnection) -> Iterator[str]:
    name = f"bigrow_{uuid.uuid4().hex[:8]}"
    run_sql(mysql_root, f"CREATE DATABASE {name}")
    run_sql(mysql_root, "CREATE TABLE blobs (id INT PRIMARY KEY, doc LONGBLOB, note TEXT)", name)
    run_sql(
        mysql_root,
        f"INSERT INTO blobs VALUES (1, REPEAT(UNHEX('A5'), {ROW_BYTES}), 'big'), (2, NULL, 'x')",
        name,
    )
    run_sql(mysql_root, "CREATE TABLE plain (id INT PRIMARY KEY)", name)
    yield name
    run_sql(mysql_root, f"DROP DATABASE IF EXISTS {name}")


@pytest.fixture(scope="module")
def backups(
    big_db: str, mysql_root: MySQLConnection, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, BackupManifest]]:
    made = {}
    for engine in LOGICAL:
        root = tmp_path_factory.mktemp(f"big-{engine}")
        manifest = flow_backup(engine, big_db, mysql_root, root)
        made[engine] = (root, manifest)
    return made


@pytest.fixture
def small_packet(mysql_root: MySQLConnection) -> Iterator[None]:
    """The restore server's global max_allowed_packet lowered to 4 MiB for one test."""
    [(before,)] = run_sql(mysql_root, "SELECT @@GLOBAL.max_allowed_packet")
    run_sql(mysql_root, f"SET GLOBAL max_allowed_packet = {SMALL_PACKET}")
    yield
    run_sql(mysql_root, f"SET GLOBAL max_allowed_packet = {before}")


@pytest.fixture(scope="module")
def limited_user(mysql_root: MySQLConnection) -> Iterator[MySQLConnection]:
    """A drill user who owns `drill_*` databases but may not change global settings."""
    user, password = f"lim_{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    run_sql(mysql_root, f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
    run_sql(mysql_root, f"GRANT ALL PRIVILEGES ON `drill\\_%`.* TO '{user}'@'%'")
    yield mysql_root.model_copy(update={"user": user, "password": SecretStr(password)})
    run_sql(mysql_root, f"DROP USER '{user}'@'%'")


def restore(
    backup: tuple[Path, BackupManifest], server: MySQLConnection, source: str
) -> tuple[str, object]:
    """Restore into a new scratch database; returns its name and the stats or the error."""
    root, manifest = backup
    name = f"drill_big_{uuid.uuid4().hex[:8]}"
    create_scratch_database(
        server, name, DrillMarker("t", source, manifest.backup_id, datetime.now(UTC)), [source]
    )
    store = LocalFolderStore("local-a", root / "local-a")
    try:
        return name, restorer_for(manifest)(manifest, store, server, name, connections=2)
    except RestoreLoadError as exc:
        return name, exc


def scratch_tables(conn: MySQLConnection, name: str) -> list[str]:
    rows = run_sql(
        conn,
        f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{name}'"
        " AND table_name <> '_vibeops_drill'",
    )
    return [r[0] for r in rows]


@pytest.mark.parametrize("engine", LOGICAL)
def test_manifest_records_the_longest_row_of_tables_with_blobs(engine: str, backups) -> None:
    _, manifest = backups[engine]
    assert manifest.tables["blobs"].longest_row_bytes == ROW_BYTES + len("big")
    assert manifest.tables["plain"].longest_row_bytes is None  # no BLOB/TEXT: not scanned


@pytest.mark.parametrize("engine", LOGICAL)
def test_restore_raises_the_packet_limit_where_privileged_and_puts_it_back(
    engine: str, backups, big_db: str, mysql_root: MySQLConnection, small_packet: None
) -> None:
    name, stats = restore(backups[engine], mysql_root, big_db)
    try:
        assert not isinstance(stats, Exception), stats
        assert any("raised max_allowed_packet" in n and "'blobs'" in n for n in stats.notes)  # type: ignore[attr-defined]
        assert table_checksums(mysql_root, name, ["blobs"]) == table_checksums(
            mysql_root, big_db, ["blobs"]
        )
        assert run_sql(mysql_root, "SELECT @@GLOBAL.max_allowed_packet") == [(SMALL_PACKET,)]
    finally:
        drop_scratch_database(mysql_root, name, owned=True)


@pytest.mark.parametrize("engine", LOGICAL)
def test_restore_fails_before_loading_naming_table_size_and_setting(
    engine: str,
    backups,
    big_db: str,
    mysql_root: MySQLConnection,
    limited_user: MySQLConnection,
    small_packet: None,
) -> None:
    name, error = restore(backups[engine], limited_user, big_db)
    try:
        assert isinstance(error, RestoreLoadError), error
        message = str(error)
        assert "table 'blobs' has a row of 3.0 MiB" in message, message
        assert "max_allowed_packet = 4.0 MiB" in message and "nothing was loaded" in message
        # 2 x (3 MiB + 3 bytes) + 1 MiB, rounded up to whole KiB
        assert "SET GLOBAL max_allowed_packet = 7341056" in message
        assert scratch_tables(mysql_root, name) == []
    finally:
        drop_scratch_database(mysql_root, name, owned=True)


def test_a_failed_load_carries_the_servers_full_message(
    backups,
    big_db: str,
    mysql_root: MySQLConnection,
    limited_user: MySQLConnection,
    small_packet: None,
) -> None:
    """A backup from before longest_row_bytes existed: the load itself hits the limit."""
    root, manifest = backups["mysqldump"]
    old = manifest.model_copy(
        update={
            "tables": {
                t: f.model_copy(update={"longest_row_bytes": None})
                for t, f in manifest.tables.items()
            }
        }
    )
    name, error = restore((root, old), limited_user, big_db)
    try:
        assert isinstance(error, RestoreLoadError), error
        message = str(error)
        assert "ERROR 2006" in message or "ERROR 1153" in message, message
        assert "gone away" in message or "max_allowed_packet" in message, message
    finally:
        drop_scratch_database(mysql_root, name, owned=True)
