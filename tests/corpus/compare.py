"""Object-by-object and checksum-by-checksum comparison of a database and its restored copy.

Test helper, independent of the product's own catalog (tasks.*): it reads the server with
plain SQL so that a bug in the product cannot hide itself from the test.

`catalog()` maps one key per object ("table:t", "rows:t", "trigger:x", ...) to a normalised
description: SHOW CREATE output (the database's own name replaced by `DB`), the sql_mode,
client character set, connection collation and database collation of each stored program
and view, trigger order, CHECKSUM TABLE and COUNT(*) of each table, the history of
system-versioned tables and the state of sequences. `differences()` names every key that is
missing, extra or changed.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pymysql

from blocks.mysql import MySQLConnection
from tasks.mysql import defaults_file

CORPUS_DIR = Path(__file__).parent / "mysql"
CORPUS = CORPUS_DIR / "corpus.sql"
HOSTILE_NAMES = CORPUS_DIR / "hostile_names.sql"


def q(name: str) -> str:
    """Backtick-quote any identifier (doubling backticks): the test's own quoting."""
    return "`" + name.replace("`", "``") + "`"


@contextmanager
def _connect(conn: MySQLConnection, database: str | None = None) -> Iterator[Any]:
    connection = pymysql.connect(**conn.pymysql_kwargs(database))
    try:
        yield connection.cursor()
    finally:
        connection.close()


def load_sql(conn: MySQLConnection, database: str, path: Path) -> None:
    """Run an SQL fixture with the `mariadb` client (it handles DELIMITER) in `database`."""
    with defaults_file(conn) as cnf:
        done = subprocess.run(
            ["mariadb", f"--defaults-extra-file={cnf}", "--binary-mode", f"--database={database}"],
            stdin=path.open("rb"),
            capture_output=True,
            timeout=300,
        )
    if done.returncode != 0:
        raise AssertionError(f"loading {path.name} failed: {done.stderr.decode()[-1000:]}")


def create_database(
    conn: MySQLConnection,
    database: str,
    charset: str = "latin1",
    collation: str = "latin1_swedish_ci",
) -> None:
    with _connect(conn) as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {q(database)}")
        cur.execute(f"CREATE DATABASE {q(database)} CHARACTER SET {charset} COLLATE {collation}")


def _normalise(text: str, database: str) -> str:
    return text.replace(q(database) + ".", "`DB`.").replace(q(database), "`DB`")


def _digest(rows: list[tuple[Any, ...]]) -> str:
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:16]


def catalog(conn: MySQLConnection, database: str) -> dict[str, str]:
    """One normalised entry per object and per table's data (see the module docstring)."""
    out: dict[str, str] = {}
    norm = lambda text: _normalise(str(text), database)  # noqa: E731
    with _connect(conn, database) as cur:
        cur.execute(
            "SELECT default_character_set_name, default_collation_name"
            " FROM information_schema.schemata WHERE schema_name = %s",
            (database,),
        )
        out["database"] = repr(cur.fetchone())
        cur.execute(
            "SELECT table_name, table_type FROM information_schema.tables"
            " WHERE table_schema = %s ORDER BY table_name",
            (database,),
        )
        objects = [(str(n), str(t)) for n, t in cur.fetchall()]
        for name, kind in objects:
            if kind == "VIEW":
                cur.execute(f"SHOW CREATE VIEW {q(name)}")
                _, create, client, collation = cur.fetchone()
                out[f"view:{name}"] = f"{norm(create)} | client={client} | conn={collation}"
                continue
            if kind == "SEQUENCE":
                cur.execute(f"SHOW CREATE SEQUENCE {q(name)}")
                out[f"sequence:{name}"] = norm(cur.fetchone()[1])
                cur.execute(f"SELECT * FROM {q(name)}")
                out[f"sequence-state:{name}"] = repr(cur.fetchall())
                continue
            cur.execute(f"SHOW CREATE TABLE {q(name)}")
            out[f"table:{name}"] = norm(cur.fetchone()[1])
            cur.execute(f"CHECKSUM TABLE {q(name)}")
            checksum = cur.fetchone()[1]
            cur.execute(f"SELECT COUNT(*) FROM {q(name)}")
            out[f"rows:{name}"] = f"count={cur.fetchone()[0]} checksum={checksum}"
            if kind == "SYSTEM VERSIONED":
                cur.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
                    (database, name),
                )
                columns = ", ".join(q(str(r[0])) for r in cur.fetchall())
                cur.execute(
                    f"SELECT {columns} FROM {q(name)} FOR SYSTEM_TIME ALL ORDER BY {columns}"
                )
                history = list(cur.fetchall())
                out[f"history:{name}"] = f"rows={len(history)} digest={_digest(history)}"
        cur.execute(
            "SELECT trigger_name, event_object_table, action_timing, event_manipulation,"
            " action_order FROM information_schema.triggers WHERE trigger_schema = %s",
            (database,),
        )
        for name, table, timing, event, order in cur.fetchall():
            cur.execute(f"SHOW CREATE TRIGGER {q(str(name))}")
            row = cur.fetchone()
            _, mode, create, client, collation, db_collation = row[:6]
            out[f"trigger:{name}"] = (
                f"{norm(create)} | on={table} {timing} {event} order={order} | sql_mode={mode}"
                f" | client={client} | conn={collation} | db={db_collation}"
            )
        cur.execute(
            "SELECT routine_name, routine_type FROM information_schema.routines"
            " WHERE routine_schema = %s",
            (database,),
        )
        for name, kind in cur.fetchall():
            cur.execute(f"SHOW CREATE {kind} {q(str(name))}")
            _, mode, create, client, collation, db_collation = cur.fetchone()[:6]
            out[f"{str(kind).lower()}:{name}"] = (
                f"{norm(create)} | sql_mode={mode} | client={client} | conn={collation}"
                f" | db={db_collation}"
            )
        # mysql.event, not SHOW CREATE EVENT: a drill's throwaway server runs with
        # event_scheduler=DISABLED, under which the server refuses SHOW CREATE EVENT.
        cur.execute(
            "SELECT name, definer, body, interval_value, interval_field, execute_at, starts,"
            " ends, status, on_completion, comment, sql_mode, time_zone, character_set_client,"
            " collation_connection, db_collation FROM mysql.event WHERE db = %s",
            (database,),
        )
        for row in cur.fetchall():
            name, definer, body, *rest = row
            mode, zone, client, collation, db_collation = rest[-5:]
            out[f"event:{name}"] = (
                f"DEFINER={definer} DO {norm(bytes(body).decode())} | {rest[:-5]!r}"
                f" | sql_mode={mode} | tz={zone} | client={client} | conn={collation}"
                f" | db={db_collation}"
            )
    return out


def differences(
    source: dict[str, str], restored: dict[str, str], ignore: set[str] = frozenset()
) -> list[str]:  # type: ignore[assignment]
    """Every key missing from, extra in or changed in `restored`, with both values."""
    found = []
    for key in sorted(set(source) | set(restored)):
        if key in ignore or key.split(":", 1)[-1] in ignore:
            continue
        if key not in restored:
            found.append(f"missing {key}: {source[key]}")
        elif key not in source:
            found.append(f"extra {key}: {restored[key]}")
        elif source[key] != restored[key]:
            found.append(f"changed {key}:\n  source:   {source[key]}\n  restored: {restored[key]}")
    return found
