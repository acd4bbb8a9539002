"""Identifier quoting against the real (private) MariaDB, property-tested with hypothesis.

Any name MariaDB accepts (spaces, backticks, quotes, reserved words, unicode, 64 characters)
must survive `quote_identifier` in SQL we run and come back unchanged from the catalog reader;
the catalog of the same objects digests the same whatever its database is called.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pymysql
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blocks import MySQLConnection
from tasks.mysql import identifier_problem, quote_identifier
from tasks.mysql_objects import read_object_catalog
from tasks.object_diff import compare_catalogs

pytestmark = pytest.mark.mysql

RESERVED = ["select", "from", "table", "order", "group", "key", "index", "where", "`", "``"]
TRICKY = [
    " leading space",
    "it's",
    'say "hi"',
    "a`b``c",
    "semi;colon -- comment",
    "/* c */",
    "a.b",
    "a/b\\c",
    "new\nline",
    "x" * 64,
    "é" * 64,
    "Bestellungen für Kunden",
    "東京",
    "\u00a0nbsp\u00a0x",
]
BMP = st.characters(min_codepoint=1, max_codepoint=0xFFFF, exclude_categories=("Cs",))
NAMES = st.one_of(st.sampled_from(RESERVED + TRICKY), st.text(BMP, min_size=1, max_size=64)).filter(
    lambda name: identifier_problem(name) is None
)


def fits_a_file_name(name: str) -> bool:
    """Tables, views and triggers are files: MariaDB encodes other characters as @xxxx, and
    a file name is at most 255 bytes (a filesystem limit the server reports itself)."""
    return sum(1 if c.isascii() and (c.isalnum() or c == "_") else 5 for c in name) <= 240


@pytest.fixture(scope="module")
def cursor(mysql_root: MySQLConnection) -> Iterator[pymysql.cursors.Cursor]:
    connection = pymysql.connect(**mysql_root.pymysql_kwargs())
    with connection.cursor() as cur:
        yield cur
    connection.close()


@pytest.fixture(scope="module")
def scratch(cursor: pymysql.cursors.Cursor) -> Iterator[str]:
    name = f"ids_{uuid.uuid4().hex[:8]}"
    cursor.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    yield name
    cursor.execute(f"DROP DATABASE IF EXISTS {name}")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=NAMES)
def test_any_name_mariadb_accepts_round_trips_through_sql_and_the_catalog(
    name: str, cursor: pymysql.cursors.Cursor, scratch: str, mysql_root: MySQLConnection
) -> None:
    table = name if fits_a_file_name(name) else "t"
    quoted_table, quoted_column = quote_identifier(table), quote_identifier(name)
    cursor.execute(f"USE {scratch}")
    cursor.execute(f"CREATE TABLE {quoted_table} ({quoted_column} VARCHAR(64), id INT)")
    try:
        # With parameters pymysql %-formats the statement: a '%' in a name is written '%%'.
        insert = f"INSERT INTO {quoted_table} ({quoted_column}, id)".replace("%", "%%")
        cursor.execute(insert + " VALUES (%s, 1)", (name,))
        cursor.execute(f"SELECT {quoted_column} FROM {quoted_table} WHERE id = 1")
        assert cursor.fetchone() == (name,)
        cursor.execute(
            f"CREATE TRIGGER {quoted_table} BEFORE INSERT ON {quoted_table}"
            f" FOR EACH ROW SET NEW.{quoted_column} = UPPER(NEW.{quoted_column})"
        )
        cursor.execute(f"CHECKSUM TABLE {quoted_table}")
        catalog = read_object_catalog(mysql_root, scratch)
        assert list(catalog.tables) == [table]
        [trigger] = catalog.of_kind("trigger")
        assert (trigger.name, trigger.table) == (table, table)
    finally:
        cursor.execute(f"DROP TABLE {quoted_table}")


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=NAMES.filter(fits_a_file_name))
def test_the_same_objects_digest_the_same_in_a_database_of_any_name(
    name: str, cursor: pymysql.cursors.Cursor, scratch: str, mysql_root: MySQLConnection
) -> None:
    database = quote_identifier(name)
    cursor.execute(f"DROP DATABASE IF EXISTS {database}")
    cursor.execute(f"CREATE DATABASE {database} CHARACTER SET utf8mb4")
    try:
        for db in (database, scratch):
            cursor.execute(f"CREATE TABLE {db}.`t` (id INT AUTO_INCREMENT PRIMARY KEY)")
            cursor.execute(f"CREATE VIEW {db}.`v` AS SELECT id FROM {db}.`t` WHERE id > 1")
            cursor.execute(f"CREATE SEQUENCE {db}.`s`")
        differences = compare_catalogs(
            read_object_catalog(mysql_root, name), read_object_catalog(mysql_root, scratch)
        )
        assert [d.message for d in differences if d.kind != "database"] == []
    finally:
        cursor.execute(f"DROP DATABASE {database}")
        for drop in ("VIEW `v`", "TABLE `t`", "SEQUENCE `s`"):
            cursor.execute(f"DROP {drop.split()[0]} IF EXISTS {scratch}.{drop.split()[1]}")


@pytest.mark.parametrize("name", ["trailing ", "tab\t", "x" * 65, "emoji 😀"])
def test_names_quote_identifier_refuses_are_refused_by_mariadb_too(
    name: str, cursor: pymysql.cursors.Cursor, scratch: str
) -> None:
    assert identifier_problem(name) is not None
    raw = "`" + name.replace("`", "``") + "`"
    with pytest.raises(pymysql.err.MySQLError):
        cursor.execute(f"CREATE TABLE {scratch}.{raw} (x INT)")
