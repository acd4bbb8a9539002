"""The hostile corpus (tests/corpus/mysql/corpus.sql) through every engine, end to end.

A private MariaDB holds the corpus; each engine backs it up through the backup-mysql flow
into two local regions, its own restore path loads it back, and tests/corpus/compare.py
compares the copy object by object (SHOW CREATE of every table, view, trigger, routine,
event and sequence, with the sql_mode, character set and collation of stored programs)
and checksum by checksum (CHECKSUM TABLE, COUNT(*), the history of system-versioned
tables, the state of sequences).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from blocks import MySQLConnection
from tasks.drill import MARKER_TABLE, DrillMarker
from tasks.engine_shapes import TableShape, check_engine_shapes, refusals
from tasks.errors import ConfigurationError
from tasks.manifest import BackupManifest
from tasks.physical import create_scratch_server
from tasks.restore import create_scratch_database, drop_scratch_database, restorer_for
from tasks.storage import LocalFolderStore
from tests.corpus.backup import flow_backup
from tests.corpus.compare import (
    CORPUS,
    HOSTILE_NAMES,
    catalog,
    create_database,
    differences,
    load_sql,
    q,
)
from tests.fixtures.mysql import run_sql

pytestmark = pytest.mark.mysql

ENGINES = ["mysqldump", "mydumper", "physical"]
# The biggest BLOB of the corpus. CI keeps it small; the packet-limit tests go further.
BIG_ROW_BYTES = int(os.environ.get("VIBEOPS_CORPUS_BIG_ROW_BYTES", 6 * 1024 * 1024))


@pytest.fixture(autouse=True)
def vibeops_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("VIBEOPS_HOME", str(home))
    return home


# Shapes an engine refuses at preflight (tasks.engine_shapes), and the engines it names.
REFUSED: dict[str, dict[str, str]] = {
    "mysqldump": {"versioned_trx": "use 'physical'"},
    "mydumper": {
        "versioned": "use 'mysqldump' or 'physical'",
        "versioned_trx": "use 'physical'",
        "order_seq": "use 'mysqldump' or 'physical'",
    },
}


def make_corpus(conn: MySQLConnection, without: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    """The corpus in a new latin1 database, with one BLOB of BIG_ROW_BYTES."""
    name = f"corpus_{uuid.uuid4().hex[:8]}"
    create_database(conn, name)
    load_sql(conn, name, CORPUS)
    run_sql(
        conn,
        f"INSERT INTO big_rows VALUES (3, REPEAT(UNHEX('5A00'), {BIG_ROW_BYTES // 2}), 'big')",
        name,
    )
    for table in sorted(without):
        run_sql(conn, f"DROP TABLE {q(table)}", name)
    return name


@pytest.fixture(scope="module")
def corpus_db(mysql_root: MySQLConnection) -> Iterator[str]:
    name = make_corpus(mysql_root)
    yield name
    run_sql(mysql_root, f"DROP DATABASE IF EXISTS {q(name)}")


def backup(engine: str, database: str, conn: MySQLConnection, root: Path) -> BackupManifest:
    return flow_backup(engine, database, conn, root)  # type: ignore[no-any-return]


def restored_catalog(
    manifest: BackupManifest, root: Path, conn: MySQLConnection, database: str
) -> dict[str, str]:
    """Restore `manifest` with its engine's restore path; the copy's catalog."""
    store = LocalFolderStore("local-a", root / "local-a")
    if manifest.engine == "physical":
        scratch = create_scratch_server("drill_corpus", [conn.port])
        try:
            copy = scratch.connection(database)
            restorer_for(manifest)(manifest, store, copy, database, scratch_server=scratch)
            return catalog(copy, database)
        finally:
            scratch.remove()
    name = f"drill_corpus_{uuid.uuid4().hex[:8]}"
    marker = DrillMarker("test", database, manifest.backup_id, datetime.now(UTC))
    create_scratch_database(conn, name, marker, [database])
    try:
        # The scratch database takes the source's character set (fid-objects' part of #11).
        [(charset, collation)] = run_sql(
            conn,
            "SELECT default_character_set_name, default_collation_name"
            f" FROM information_schema.schemata WHERE schema_name = '{database}'",
        )
        run_sql(conn, f"ALTER DATABASE {q(name)} CHARACTER SET {charset} COLLATE {collation}")
        restorer_for(manifest)(manifest, store, conn, name, connections=2)
        found = catalog(conn, name)
        return {
            key: value.replace(q(name), "`DB`")
            for key, value in found.items()
            if not key.endswith(f":{MARKER_TABLE}")
        }
    finally:
        drop_scratch_database(conn, name, owned=True)


@pytest.mark.parametrize("engine", ENGINES)
def test_every_engine_round_trips_the_corpus_object_by_object(
    engine: str, corpus_db: str, mysql_root: MySQLConnection, tmp_path: Path
) -> None:
    """The whole corpus, less only the shapes the engine refuses up front (next test)."""
    database = corpus_db
    if engine in REFUSED:
        database = make_corpus(mysql_root, without=set(REFUSED[engine]))
    try:
        before = catalog(mysql_root, database)
        assert {"trigger:gen_cols_bi", "event:purge_metrics", "procedure:add_item"} <= set(before)
        manifest = backup(engine, database, mysql_root, tmp_path)
        assert manifest.engine == engine
        after = restored_catalog(manifest, tmp_path, mysql_root, database)
        assert differences(before, after) == []
    finally:
        if database != corpus_db:
            run_sql(mysql_root, f"DROP DATABASE IF EXISTS {q(database)}")


@pytest.mark.parametrize("engine", sorted(REFUSED))
def test_an_engine_refuses_what_it_cannot_round_trip_before_writing_anything(
    engine: str, corpus_db: str, mysql_root: MySQLConnection, tmp_path: Path
) -> None:
    state = flow_backup(engine, corpus_db, mysql_root, tmp_path, return_state=True)
    assert state.is_failed()
    with pytest.raises(ConfigurationError) as refused:
        state.result()
    message = str(refused.value)
    for table, alternatives in REFUSED[engine].items():
        pattern = rf"table {table!r} is [^;]*; engine {engine!r} cannot restore it: {alternatives}"
        assert re.search(pattern, message), message
    assert f"engine {engine!r}" in message and "nothing was written" in message
    assert not [p for p in tmp_path.rglob("*") if p.is_file()], "something was written"


def test_refusal_rules_name_the_engines_that_can() -> None:
    shapes = [
        TableShape("h", "system-versioned"),
        TableShape("t", "system-versioned-trx-id"),
        TableShape("s", "sequence"),
        TableShape("b`t", "backtick-name"),
    ]
    assert refusals(shapes, "physical") == []
    assert [(r.table, r.alternatives) for r in refusals(shapes, "mysqldump")] == [
        ("t", ("physical",))
    ]
    assert [r.table for r in refusals(shapes, "mydumper")] == ["h", "t", "s", "b`t"]


def test_physical_refuses_a_database_name_with_a_space_before_connecting() -> None:
    nowhere = MySQLConnection(host="127.0.0.1", port=1, user="nobody")
    with pytest.raises(ConfigurationError, match=r"'physical'.*'Kunden DB'.*use 'mysqldump'"):
        check_engine_shapes(nowhere, "Kunden DB", "physical")


@pytest.fixture
def hostile_db(mysql_root: MySQLConnection) -> Iterator[str]:
    """tests/corpus/mysql/hostile_names.sql in a new utf8mb4 database."""
    database = f"hostile_{uuid.uuid4().hex[:8]}"
    create_database(mysql_root, database, "utf8mb4", "utf8mb4_general_ci")
    load_sql(mysql_root, database, HOSTILE_NAMES)
    yield database
    run_sql(mysql_root, f"DROP DATABASE IF EXISTS {q(database)}")


def test_mydumper_refuses_a_backtick_in_a_name_before_writing_anything(
    hostile_db: str, mysql_root: MySQLConnection, tmp_path: Path
) -> None:
    """mydumper 0.10 does not escape backticks: its dump fails (or the tool crashes)."""
    state = flow_backup("mydumper", hostile_db, mysql_root, tmp_path, return_state=True)
    with pytest.raises(ConfigurationError) as refused:
        state.result()
    assert re.search(
        r"table 'back`tick' is [^;]*backtick[^;]*; engine 'mydumper' cannot restore it: "
        r"use 'mysqldump' or 'physical'",
        str(refused.value),
    ), refused.value
    assert not [p for p in tmp_path.rglob("*") if p.is_file()], "something was written"


@pytest.mark.parametrize("engine", ENGINES)
def test_every_engine_round_trips_hostile_names(
    engine: str, hostile_db: str, mysql_root: MySQLConnection, tmp_path: Path
) -> None:
    if engine == "mydumper":  # refused up front (previous test)
        run_sql(mysql_root, "DROP TABLE `back``tick`", hostile_db)
    before = catalog(mysql_root, hostile_db)
    assert {"table:order", "table:Kunden Übersicht", "view:view with space"} <= set(before)
    manifest = backup(engine, hostile_db, mysql_root, tmp_path)
    after = restored_catalog(manifest, tmp_path, mysql_root, hostile_db)
    assert differences(before, after) == []
