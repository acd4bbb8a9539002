"""The restore stream and validation against the private MariaDB: single vs parallel load,
hash checks, statement guards, scratch-database rules and the expectation suite."""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from blocks import MySQLConnection
from tasks.compression import new_compressor
from tasks.drill import DrillMarker, RestoredTable
from tasks.errors import (
    BackupVerificationError,
    ConfigurationError,
    RestoreLoadError,
    RestoreTargetRefused,
)
from tasks.manifest import BackupManifest, StoredObject, TableFacts, backup_prefix, new_backup_id
from tasks.mysql import defaults_file, dump_command, find_tool, table_checksums, table_row_counts
from tasks.restore import (
    RESTORERS,
    create_scratch_database,
    drop_scratch_database,
    read_drill_markers,
    restore_logical_dump,
    restorer_for,
)
from tasks.sample_data import create_sample_database
from tasks.storage import LocalFolderStore
from tasks.validation import load_expectations, run_expectations
from tests.fixtures.mysql import run_sql

pytestmark = pytest.mark.mysql

TABLES = ["ai_models", "audit_log", "experiment_totals", "experiments"]


def put_backup(store: LocalFolderStore, sql: bytes, source: str = "unit") -> BackupManifest:
    """Compress `sql` into `store` and return a manifest that signs it."""
    compressor = new_compressor("zstd")
    data = compressor.compress(sql) + compressor.flush()
    backup_id = new_backup_id(datetime.now(UTC))
    now = datetime.now(UTC)
    manifest = BackupManifest(
        backup_id=backup_id,
        source=source,
        database=source,
        started_at=now,
        consistent_at=now,
        finished_at=now,
        objects=[
            StoredObject(
                name="dump.sql.zst", size=len(data), sha256=hashlib.sha256(data).hexdigest()
            )
        ],
        prefix=backup_prefix("mysql", source, backup_id),
    )
    store.write_bytes(manifest.object_key("dump.sql.zst"), data)
    return manifest


@pytest.fixture
def scratch(mysql_root: MySQLConnection) -> Iterator[str]:
    name = f"drill_unit_{uuid.uuid4().hex[:8]}"
    create_scratch_database(
        mysql_root, name, DrillMarker("test", "unit", "x", datetime.now(UTC)), ["unit"]
    )
    yield name
    drop_scratch_database(mysql_root, name, owned=True)


@pytest.fixture(scope="module")
def sample(mysql_root: MySQLConnection) -> Iterator[tuple[str, bytes]]:
    """A sample database (trigger, view, routine, emoji, blobs) and its mariadb-dump."""
    name = f"s_{uuid.uuid4().hex[:8]}"
    create_sample_database(mysql_root, name, rows=5000)
    binary = find_tool("mariadb-dump", "mysqldump", package="mariadb-client")
    with defaults_file(mysql_root) as cnf:
        sql = subprocess.run(
            dump_command(binary, cnf, name), check=True, capture_output=True, timeout=300
        ).stdout
    yield name, sql
    run_sql(mysql_root, f"DROP DATABASE {name}")


@pytest.mark.parametrize("connections", [1, 3])
def test_single_and_parallel_loads_restore_identical_tables(
    connections: int, sample, scratch: str, mysql_root: MySQLConnection, tmp_path: Path
) -> None:
    source, sql = sample
    store = LocalFolderStore("a", tmp_path)
    manifest = put_backup(store, sql)
    stats = restore_logical_dump(manifest, store, mysql_root, scratch, connections=connections)

    assert table_checksums(mysql_root, scratch, TABLES) == table_checksums(
        mysql_root, source, TABLES
    )
    assert table_row_counts(mysql_root, scratch, TABLES)["experiments"] == 5000
    # The trigger exists, but was created after the rows (experiment_totals is not doubled).
    triggers = run_sql(
        mysql_root,
        f"SELECT trigger_name FROM information_schema.triggers WHERE trigger_schema='{scratch}'",
    )
    assert triggers == [("experiments_count",)]
    assert run_sql(mysql_root, "SELECT COUNT(*) FROM model_scores", scratch)[0][0] == 6
    assert stats.connections == connections and stats.statements > 10
    assert stats.compressed_bytes == manifest.objects[0].size
    assert stats.uncompressed_bytes == len(sql)
    assert stats.binlog_skipped, "root may skip the binary log for a scratch load"


def test_statements_that_switch_or_create_databases_are_ignored(
    scratch: str, mysql_root: MySQLConnection, tmp_path: Path
) -> None:
    victim = f"victim_{uuid.uuid4().hex[:6]}"
    run_sql(mysql_root, f"CREATE DATABASE {victim}")
    run_sql(mysql_root, "CREATE TABLE precious (id INT PRIMARY KEY)", victim)
    sql = (
        f"CREATE DATABASE /*!32312 IF NOT EXISTS*/ `{victim}`;\n"
        f"USE `{victim}`;\n"
        "DROP TABLE IF EXISTS `precious`;\n"
        "CREATE TABLE `t` (id INT PRIMARY KEY);\n"
        "INSERT INTO `t` VALUES (1),\n(2);\n"
        f"/*!40000 DROP DATABASE IF EXISTS `{victim}`*/;\n"
        "DROP DATABASE\n"
        f"  `{victim}`;\n"
        "SET @@GLOBAL.GTID_PURGED=/*!80000 '+'*/ 'uuid:1-5';\n"
        "/*!40101 SET GLOBAL vibeops_no_such_variable = 1 */;\n"
    ).encode()
    store = LocalFolderStore("a", tmp_path)
    try:
        stats = restore_logical_dump(put_backup(store, sql), store, mysql_root, scratch, 2)
        assert run_sql(mysql_root, f"SHOW TABLES FROM {victim}") == [("precious",)]
        assert run_sql(mysql_root, "SELECT COUNT(*) FROM t", scratch)[0][0] == 2
        assert len(stats.ignored_statements) == 6
        assert stats.ignored_statements[1] == f"USE `{victim}`;"
    finally:
        run_sql(mysql_root, f"DROP DATABASE {victim}")


def test_alter_database_naming_another_database_alters_only_the_scratch_copy(
    scratch: str, mysql_root: MySQLConnection, tmp_path: Path
) -> None:
    """mysqldump brackets routines with `ALTER DATABASE `src``: it must never reach `src`."""
    victim = f"victim_{uuid.uuid4().hex[:6]}"
    run_sql(mysql_root, f"CREATE DATABASE {victim} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    sql = (
        f"ALTER DATABASE `{victim}` CHARACTER SET latin1 COLLATE latin1_swedish_ci ;\n"
        "CREATE TABLE `t` (id INT PRIMARY KEY);\n"
    ).encode()
    store = LocalFolderStore("a", tmp_path)

    def collation(name: str) -> list[tuple]:
        return run_sql(
            mysql_root,
            "SELECT default_collation_name FROM information_schema.schemata "
            f"WHERE schema_name = '{name}'",
        )

    try:
        restore_logical_dump(put_backup(store, sql), store, mysql_root, scratch, 1)
        assert collation(victim) == [("utf8mb4_bin",)]
        assert collation(scratch) == [("latin1_swedish_ci",)]
    finally:
        run_sql(mysql_root, f"DROP DATABASE {victim}")


def test_a_flipped_byte_is_a_corrupt_copy_even_when_the_sql_breaks_first(
    sample, scratch: str, mysql_root: MySQLConnection, tmp_path: Path
) -> None:
    store = LocalFolderStore("a", tmp_path)
    manifest = put_backup(store, sample[1])
    path = tmp_path / manifest.object_key("dump.sql.zst")
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BackupVerificationError, match="this copy is corrupt") as info:
        restore_logical_dump(manifest, store, mysql_root, scratch, 2)
    assert str(path) in str(info.value)


def test_bad_sql_whose_hash_matches_is_a_load_error_not_a_corrupt_copy(
    scratch: str, mysql_root: MySQLConnection, tmp_path: Path
) -> None:
    store = LocalFolderStore("a", tmp_path)
    manifest = put_backup(store, b"CREATE TABLE `t` (id INT PRIMARY KEY);\nSELEKT 1;\n")
    with pytest.raises(RestoreLoadError, match="SQL syntax"):
        restore_logical_dump(manifest, store, mysql_root, scratch, 1)


def test_sql_truncated_inside_an_insert_is_a_load_error(
    scratch: str, mysql_root: MySQLConnection, tmp_path: Path
) -> None:
    store = LocalFolderStore("a", tmp_path)
    sql = b"CREATE TABLE `t` (id INT PRIMARY KEY);\nINSERT INTO `t` VALUES (1),\n(2"
    with pytest.raises(RestoreLoadError, match="truncated SQL"):
        restore_logical_dump(put_backup(store, sql), store, mysql_root, scratch, 2)


def test_missing_object_is_a_storage_error_of_that_region(
    scratch: str, mysql_root: MySQLConnection, tmp_path: Path
) -> None:
    store = LocalFolderStore("eu", tmp_path)
    manifest = put_backup(store, b"SELECT 1;\n")
    store.delete(manifest.object_key("dump.sql.zst"))
    from tasks.errors import StorageError

    with pytest.raises(StorageError, match="region eu"):
        restore_logical_dump(manifest, store, mysql_root, scratch, 1)


def test_unknown_engine_names_what_is_supported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(RESTORERS, "physical")  # every engine has a restorer now: simulate a gap
    now = datetime.now(UTC)
    manifest = BackupManifest(
        backup_id="20250101T000000Z-abcdef",
        engine="physical",
        source="s",
        database="s",
        started_at=now,
        consistent_at=now,
        finished_at=now,
        objects=[],
        prefix="mysql/s/",
    )
    with pytest.raises(ConfigurationError, match=r"engine 'physical'.*supported: mysqldump"):
        restorer_for(manifest)


def test_scratch_databases_are_marked_and_only_ours_are_dropped(
    mysql_root: MySQLConnection,
) -> None:
    foreign = f"drill_foreign_{uuid.uuid4().hex[:6]}"
    run_sql(mysql_root, f"CREATE DATABASE {foreign}")
    try:
        marker = DrillMarker("run", "unit", "id", datetime.now(UTC))
        with pytest.raises(RestoreTargetRefused, match="not created by a drill"):
            create_scratch_database(mysql_root, foreign, marker, ["unit"])
        with pytest.raises(RestoreTargetRefused, match="no drill marker"):
            drop_scratch_database(mysql_root, foreign)
        assert read_drill_markers(mysql_root, [foreign]) == {foreign: None}
    finally:
        run_sql(mysql_root, f"DROP DATABASE {foreign}")
    ours = f"drill_unit_{uuid.uuid4().hex[:6]}"
    create_scratch_database(mysql_root, ours, marker, ["unit"])
    found = read_drill_markers(mysql_root, [ours])[ours]
    assert found is not None and found.drill_run == "run" and found.status == "restoring"
    assert drop_scratch_database(mysql_root, ours) is True
    assert drop_scratch_database(mysql_root, ours) is False


# -- expectation suite -------------------------------------------------------------------------


def test_suite_file_errors_name_the_file_and_entry(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("tables:\n  t:\n    - type: expect_the_moon\n")
    with pytest.raises(ConfigurationError, match="table 't': 'expect_the_moon' is not"):
        load_expectations(str(bad))
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_expectations(str(tmp_path / "missing.yaml"))
    default = load_expectations()
    assert {s.type for s in default.tables["experiments"]} >= {
        "expect_table_row_count_to_equal",
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_between",
    }


def test_expectations_run_skip_expensive_ones_and_report_failures(
    sample, mysql_root: MySQLConnection, tmp_path: Path
) -> None:
    source, _ = sample
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(
        "expensive: {max_rows: 1000, types: [expect_column_values_to_be_unique]}\n"
        "tables:\n"
        "  experiments:\n"
        "    - type: expect_table_row_count_to_equal\n"
        "      kwargs: {value: $manifest_rows}\n"
        "    - type: ExpectColumnValuesToBeBetween\n"
        "      kwargs: {column: score, min_value: 0, max_value: 50}\n"
        "    - type: expect_column_values_to_be_unique\n"
        "      kwargs: {column: task_id}\n"
        "  ai_models:\n"
        "    - type: expect_column_values_to_be_unique\n"
        "      kwargs: {column: name}\n"
        "  not_in_backup:\n"
        "    - type: expect_column_values_to_not_be_null\n"
        "      kwargs: {column: x}\n"
    )
    suite = load_expectations(str(suite_file))
    now = datetime.now(UTC)
    manifest = BackupManifest(
        backup_id="20250101T000000Z-abcdef",
        source=source,
        database=source,
        started_at=now,
        consistent_at=now,
        finished_at=now,
        objects=[],
        tables={"experiments": TableFacts(rows=5000), "ai_models": TableFacts(rows=6)},
        prefix="mysql/x/",
    )
    restored = {"experiments": RestoredTable(5000), "ai_models": RestoredTable(6)}
    outcomes = {
        (o.table, o.expectation): o
        for o in run_expectations(mysql_root, source, suite, manifest, restored)
    }
    assert outcomes[("experiments", "expect_table_row_count_to_equal")].success
    assert outcomes[("experiments", "expect_table_row_count_to_equal")].kwargs["value"] == 5000
    between = outcomes[("experiments", "expect_column_values_to_be_between")]
    assert not between.success and "unexpected" in between.observed
    unique = outcomes[("experiments", "expect_column_values_to_be_unique")]
    assert unique.success and unique.skipped == "expensive: 5,000 rows > max_rows 1,000"
    assert outcomes[("ai_models", "expect_column_values_to_be_unique")].success
    assert outcomes[("ai_models", "expect_column_values_to_be_unique")].skipped is None
    assert outcomes[("not_in_backup", "expect_column_values_to_not_be_null")].skipped == (
        "table not in this backup"
    )


def test_a_failed_restore_inside_the_transaction_drops_the_scratch_database(
    mysql_root: MySQLConnection,
) -> None:
    from prefect import flow
    from prefect.transactions import transaction

    from tasks.restore import prepare_scratch_target

    name = f"drill_unit_{uuid.uuid4().hex[:8]}"
    seen: list[bool] = []

    @flow
    def attempt() -> None:
        marker = DrillMarker("run", "unit", "id", datetime.now(UTC))
        with transaction():
            prepare_scratch_target(mysql_root, name, marker, ["unit"])
            seen.append(name in read_drill_markers(mysql_root, [name]))
            raise BackupVerificationError("simulated corrupt copy")

    with pytest.raises(BackupVerificationError):
        attempt()
    assert seen == [True]
    assert read_drill_markers(mysql_root, [name]) == {}, "the rollback hook dropped it"
