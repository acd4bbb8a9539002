"""Object fidelity end to end: a hostile-named latin1 database with every kind of object, backed
up by backup-mysql (mysqldump) and drilled by restore-drill, against a private MariaDB and a
real Prefect API. A damaged backup (one object missing, a stored program's context changed)
must fail the drill, naming the object kind, its name and what differs."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from blocks import MySQLConnection
from flows.forms import params_of
from flows.restore_drill import RestoreDrillParams, restore_drill
from tasks.drill import scratch_database_name
from tasks.errors import DrillFailed
from tasks.object_diff import backquote, markdown_code
from tasks.restore import drop_scratch_database, read_drill_markers
from tests.fixtures.mysql import run_sql
from tests.helpers import Regions, back_up_to_local_regions, markdown_of, save_block

pytestmark = pytest.mark.mysql

ORDERS = "Bestellungen für Kunden"  # a space and non-ASCII letters: stopped every backup
VIEW = "Kunden | Sicht"
TRIGGER_FIRST = "vor Einfügen"
TRIGGER_SECOND = "danach"
PROCEDURE = "zähle`n"
FUNCTION = "doppelt"
EVENT = "aufräumen"
SEQUENCE = "nummern"
PLAIN = "teile"

SCHEMA = [
    f"CREATE TABLE {backquote(ORDERS)} (id INT AUTO_INCREMENT PRIMARY KEY,"
    " `Straße` VARCHAR(40) CHARACTER SET utf8mb4, note VARCHAR(20)) AUTO_INCREMENT=1000",
    f"INSERT INTO {backquote(ORDERS)} (`Straße`, note) VALUES ('Hauptstraße 1', 'a'),"
    " ('Čapkova 2', 'b'), ('東京 3', 'c')",
    f"CREATE TABLE {PLAIN} (id INT PRIMARY KEY, v INT) PARTITION BY HASH(id) PARTITIONS 2",
    f"INSERT INTO {PLAIN} VALUES (1, 10), (2, 20), (3, 30)",
    f"CREATE VIEW {backquote(VIEW)} AS SELECT id, `Straße` FROM {backquote(ORDERS)}",
    "SET SESSION sql_mode = 'TRADITIONAL'",
    f"CREATE TRIGGER {backquote(TRIGGER_FIRST)} BEFORE INSERT ON {backquote(ORDERS)}"
    " FOR EACH ROW SET NEW.note = UPPER(NEW.note)",
    f"CREATE TRIGGER {TRIGGER_SECOND} BEFORE INSERT ON {backquote(ORDERS)} FOR EACH ROW"
    f" FOLLOWS {backquote(TRIGGER_FIRST)} SET NEW.note = CONCAT(NEW.note, '!')",
    f"CREATE PROCEDURE {backquote(PROCEDURE)}() SELECT COUNT(*) FROM {PLAIN}",
    f"CREATE FUNCTION {FUNCTION}(x INT) RETURNS INT DETERMINISTIC RETURN x * 2",
    f"CREATE EVENT {backquote(EVENT)} ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00'"
    f" DISABLE DO DELETE FROM {PLAIN} WHERE id < 0",
    f"CREATE SEQUENCE {SEQUENCE} START WITH 100",
]


@pytest.fixture(autouse=True)
def vibeops_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("VIBEOPS_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def source_db(mysql_root: MySQLConnection):
    name = f"fid_{uuid.uuid4().hex[:8]}"
    run_sql(mysql_root, f"CREATE DATABASE {name} CHARACTER SET latin1 COLLATE latin1_swedish_ci")
    import pymysql

    connection = pymysql.connect(**mysql_root.pymysql_kwargs(name))
    try:
        with connection.cursor() as cur:
            for statement in SCHEMA:
                cur.execute(statement)
    finally:
        connection.close()
    yield name
    run_sql(mysql_root, f"DROP DATABASE IF EXISTS {name}")


@pytest.fixture(scope="module")
def server_block(mysql_root: MySQLConnection) -> str:
    return save_block(mysql_root)


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory, source_db: str, server_block: str):
    """One real mysqldump backup of the hostile database in two local regions."""
    root = tmp_path_factory.mktemp("golden")
    manifest = back_up_to_local_regions(root, source_db, server_block, engine="mysqldump")
    return root, manifest


@pytest.fixture
def backup(golden, tmp_path: Path) -> Regions:
    """A per-test copy of the golden backup, whose dump a test may damage."""
    root, manifest = golden
    return Regions.copy_of(root, manifest, tmp_path / "regions")


def drill(backup: Regions, source: str, server: str, **extra: object):  # type: ignore[no-untyped-def]
    params = RestoreDrillParams(
        source=source, store_block=backup.block, drill_server_block=server, **extra
    )
    return restore_drill(**params_of(params), return_state=True)


def report_of(state) -> str:  # type: ignore[no-untyped-def]
    return markdown_of(state.state_details.flow_run_id)


def failure_of(state) -> BaseException:  # type: ignore[no-untyped-def]
    with pytest.raises(DrillFailed) as info:
        state.result()
    return info.value


# -- a good backup of hostile names -----------------------------------------------------------


def test_hostile_names_back_up_and_drill_exactly_into_a_scratch_with_the_source_collation(
    backup: Regions, source_db: str, server_block: str, mysql_root: MySQLConnection
) -> None:
    catalog = backup.manifest.catalog
    assert catalog is not None
    assert (catalog.charset, catalog.collation) == ("latin1", "latin1_swedish_ci")
    assert catalog.counts() == {
        "table": 2,
        "view": 1,
        "trigger": 2,
        "procedure": 1,
        "function": 1,
        "event": 1,
        "sequence": 1,
    }
    orders = catalog.tables[ORDERS]
    assert orders.auto_increment == 1003 and orders.collation == "latin1_swedish_ci"
    assert catalog.tables[PLAIN].partitions == ["p0", "p1"]
    triggers = {o.name: o for o in catalog.of_kind("trigger")}
    assert triggers[TRIGGER_FIRST].action_order == 1 and triggers[TRIGGER_SECOND].action_order == 2
    assert "STRICT_ALL_TABLES" in (triggers[TRIGGER_SECOND].sql_mode or "")
    assert triggers[TRIGGER_FIRST].database_collation == "latin1_swedish_ci"
    assert backup.manifest.tables[ORDERS].rows == 3

    state = drill(backup, source_db, server_block, keep_hours=1)
    assert state.is_completed(), state
    scratch = scratch_database_name(source_db, backup.manifest.backup_id)
    try:
        [(charset, collation)] = run_sql(
            mysql_root,
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME"
            f" FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{scratch}'",
        )
        assert (charset, collation) == ("latin1", "latin1_swedish_ci")
        [(db_collation,)] = run_sql(
            mysql_root,
            "SELECT DATABASE_COLLATION FROM information_schema.TRIGGERS"
            f" WHERE TRIGGER_SCHEMA = '{scratch}' AND TRIGGER_NAME = '{TRIGGER_SECOND}'",
        )
        assert db_collation == "latin1_swedish_ci"
    finally:
        drop_scratch_database(mysql_root, scratch)
    report = report_of(state)
    assert "PASSED" in report and "Every object matches ✅" in report
    assert f"| {markdown_code(ORDERS)} | 3 | 3 |" in report
    assert "2 trigger(s)" in report and "1 sequence(s)" in report


# -- one object missing from the restored copy, per kind --------------------------------------


def _cut(sql: str, start: str, end: str) -> str:
    """`sql` without the text from the regex `start` (multi-line) to the next `end` inclusive."""
    match = re.search(start, sql, re.MULTILINE)
    assert match, start
    stop = sql.index(end, match.end()) + len(end)
    return sql[: match.start()] + sql[stop:]


def _name(name: str) -> str:
    return re.escape(backquote(name))


MISSING: dict[str, tuple[str, Callable[[str], str]]] = {
    "table": (
        PLAIN,
        lambda sql: _cut(
            sql, rf"^--\n-- Table structure for table {_name(PLAIN)}", "UNLOCK TABLES;\n"
        ),
    ),
    "view": (
        VIEW,
        lambda sql: _cut(sql, r"^/\*!50001 CREATE ALGORITHM", f"VIEW {backquote(VIEW)} AS"),
    ),
    "trigger": (
        TRIGGER_SECOND,
        lambda sql: _cut(sql, rf"^/\*!50003 CREATE\*/.*TRIGGER `?{TRIGGER_SECOND}`? ", "*/;;\n"),
    ),
    "procedure": (
        PROCEDURE,
        lambda sql: _cut(sql, rf"^CREATE DEFINER=\S+ PROCEDURE {_name(PROCEDURE)}", ";;\n"),
    ),
    "function": (
        FUNCTION,
        lambda sql: _cut(sql, rf"^CREATE DEFINER=\S+ FUNCTION {_name(FUNCTION)}", ";;\n"),
    ),
    "event": (
        EVENT,
        lambda sql: _cut(sql, rf"^/\*!50106 CREATE\*/.*EVENT {_name(EVENT)} ", "*/ ;;\n"),
    ),
    "sequence": (
        SEQUENCE,
        lambda sql: _cut(sql, rf"^CREATE SEQUENCE {_name(SEQUENCE)}", "\n"),
    ),
}


def _drop_rest_of_view(sql: str) -> str:
    # The view's CREATE spans three comment lines: drop the `VIEW ... AS select ...` tail too.
    return re.sub(r"^ select [^\n]*\*/;\n", "", sql, count=1, flags=re.MULTILINE)


@pytest.mark.parametrize("kind", list(MISSING))
def test_drill_fails_when_one_object_is_missing_naming_its_kind_and_name(
    kind: str, backup: Regions, source_db: str, server_block: str, mysql_root: MySQLConnection
) -> None:
    name, edit = MISSING[kind]
    if kind == "sequence":
        setval = re.compile(rf"^DO SETVAL\({_name(SEQUENCE)}[^\n]*\n", re.MULTILINE)
        backup.tamper_sql(lambda sql: setval.sub("", edit(sql)))
    elif kind == "view":
        backup.tamper_sql(lambda sql: _drop_rest_of_view(edit(sql)))
    else:
        backup.tamper_sql(edit)
    state = drill(backup, source_db, server_block)
    assert state.is_failed(), state
    message = f"{kind} {backquote(name)}: missing after restore"
    assert message in str(failure_of(state))
    report = report_of(state)
    assert f"| {kind} | {markdown_code(name)} | missing after restore ❌ |" in report
    prefix = f"drill_{source_db.lower()}"
    assert [n for n in read_drill_markers(mysql_root) if n.startswith(prefix)] == []


# -- a stored program restored with another sql_mode or collation -----------------------------


def _trigger_sql_mode_lost(sql: str) -> str:
    """The sql_mode line right before `danach` (what mydumper did on Sakila) set to ''."""
    at = re.search(rf"TRIGGER `?{TRIGGER_SECOND}`? ", sql)
    assert at
    line = sql.rindex("SET sql_mode              = 'STRICT", 0, at.start())
    end = sql.index("*/ ;", line)
    return sql[:line] + "SET sql_mode              = '' " + sql[end:]


def _function_collation_changed(sql: str) -> str:
    """The function re-created under another connection collation."""
    at = re.search(rf"FUNCTION {_name(FUNCTION)}", sql)
    assert at
    old = "SET collation_connection  = utf8mb4_general_ci"
    line = sql.rindex(old, 0, at.start())
    return sql[:line] + "SET collation_connection  = utf8mb4_bin" + sql[line + len(old) :]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_trigger_sql_mode_lost, f"trigger {TRIGGER_SECOND}: sql_mode '' != 'STRICT_TRANS_TABLES"),
        (
            _function_collation_changed,
            f"function {FUNCTION}: collation_connection 'utf8mb4_bin' != 'utf8mb4_general_ci'",
        ),
    ],
    ids=["trigger-sql_mode", "function-collation"],
)
def test_a_stored_program_restored_with_another_context_fails_the_drill_naming_it(
    edit: Callable[[str], str], expected: str, backup: Regions, source_db: str, server_block: str
) -> None:
    backup.tamper_sql(edit)
    state = drill(backup, source_db, server_block)
    assert state.is_failed(), state
    kind, rest = expected.split(" ", 1)
    name, what = rest.split(": ", 1)
    assert f"{kind} {backquote(name)}: {what}" in str(failure_of(state))
    assert f"| {kind} | {markdown_code(name)} | {what}" in report_of(state)


def test_an_old_manifest_without_a_catalog_still_drills_and_says_what_it_did_not_check(
    backup: Regions, source_db: str, server_block: str
) -> None:
    backup.rewrite_manifest(catalog=None)
    state = drill(backup, source_db, server_block)
    assert state.is_completed(), state
    report = report_of(state)
    assert "Not checked: this backup's manifest records no object catalog" in report
    assert "triggers, events, sequences, definitions, sql_mode" in report
