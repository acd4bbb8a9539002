"""Which table shapes each backup engine round-trips, and the preflight that refuses the rest.

An engine that cannot restore a shape exactly must say so before anything is written, naming
the table and the engines that can (docs/fidelity.md, "What each engine preserves"):

- system-versioned tables (timestamp-based): mysqldump keeps their history
  (`--dump-history`), physical copies it; mydumper 0.10 dumps only the current rows.
- system-versioned tables with transaction-id versioning: only physical (mariadb-dump's
  `--dump-history` handles timestamp-based versioning only).
- sequences: mysqldump (`CREATE SEQUENCE` + `SETVAL`) and physical; mydumper 0.10 restores
  a sequence as a plain table.
- a backtick in a table or column name: mydumper 0.10 does not escape it (its dump fails,
  or the tool crashes); mysqldump and physical handle it.
"""

from __future__ import annotations

from dataclasses import dataclass

from blocks.mysql import MySQLConnection
from tasks.errors import ConfigurationError
from tasks.manifest import Engine
from tasks.mysql import connect

# shape -> (what would be lost, the engines that round-trip it)
SHAPES: dict[str, tuple[str, tuple[Engine, ...]]] = {
    "system-versioned": (
        "a system-versioned table (its history rows and row_start/row_end times would be lost)",
        ("mysqldump", "physical"),
    ),
    "system-versioned-trx-id": (
        "a system-versioned table with transaction-id versioning (mariadb-dump's "
        "--dump-history handles timestamp versioning only, mydumper none)",
        ("physical",),
    ),
    "sequence": (
        "a sequence (it would come back as a plain table)",
        ("mysqldump", "physical"),
    ),
    "backtick-name": (
        "named with a backtick in the table or a column name (mydumper 0.10 does not "
        "escape it and fails or crashes)",
        ("mysqldump", "physical"),
    ),
}


@dataclass(frozen=True)
class TableShape:
    """One table and the shape that limits the engines able to back it up."""

    table: str
    shape: str


@dataclass(frozen=True)
class ShapeRefusal:
    """A table that `engine` cannot round-trip, and the engines that can."""

    table: str
    shape: str
    engine: Engine

    @property
    def alternatives(self) -> tuple[Engine, ...]:
        return SHAPES[self.shape][1]

    def message(self) -> str:
        what = SHAPES[self.shape][0]
        others = " or ".join(f"'{e}'" for e in self.alternatives)
        return f"table {self.table!r} is {what}; engine {self.engine!r} cannot restore it: use {others}"


def refusals(shapes: list[TableShape], engine: Engine) -> list[ShapeRefusal]:
    """The tables among `shapes` that `engine` cannot round-trip (pure)."""
    return [
        ShapeRefusal(s.table, s.shape, engine) for s in shapes if engine not in SHAPES[s.shape][1]
    ]


def read_table_shapes(conn: MySQLConnection, database: str) -> list[TableShape]:
    """Tables of `database` whose shape limits the engines (see SHAPES)."""
    with connect(conn) as connection, connection.cursor() as cur:
        cur.execute(
            "SELECT t.table_name, t.table_type,"
            " (SELECT c.data_type FROM information_schema.columns c"
            "   WHERE c.table_schema = t.table_schema AND c.table_name = t.table_name"
            "   AND c.generation_expression = 'ROW START' LIMIT 1)"
            " FROM information_schema.tables t WHERE t.table_schema = %s"
            " AND t.table_type IN ('SYSTEM VERSIONED', 'SEQUENCE') ORDER BY t.table_name",
            (database,),
        )
        rows = cur.fetchall()
        cur.execute(
            "SELECT DISTINCT table_name FROM information_schema.columns WHERE table_schema = %s"
            " AND (table_name LIKE '%%`%%' OR column_name LIKE '%%`%%') ORDER BY table_name",
            (database,),
        )
        backticks = [TableShape(str(r[0]), "backtick-name") for r in cur.fetchall()]
    shapes = []
    for name, kind, row_start_type in rows:
        if kind == "SEQUENCE":
            shapes.append(TableShape(str(name), "sequence"))
        elif str(row_start_type or "").lower() == "bigint":
            shapes.append(TableShape(str(name), "system-versioned-trx-id"))
        else:
            shapes.append(TableShape(str(name), "system-versioned"))
    return shapes + backticks


def check_engine_shapes(conn: MySQLConnection, database: str, engine: Engine) -> None:
    """Raise ConfigurationError naming every table `engine` cannot round-trip."""
    if engine == "physical" and any(ch.isspace() for ch in database):
        raise ConfigurationError(
            f"engine 'physical' cannot back up database {database!r}, so nothing was written: "
            "mariadb-backup's --databases list is separated by spaces and would split the "
            "name; use 'mysqldump'"
        )
    refused = refusals(read_table_shapes(conn, database), engine)
    if refused:
        raise ConfigurationError(
            f"engine {engine!r} cannot back up database {database!r} exactly, so nothing was "
            "written: " + "; ".join(r.message() for r in refused)
        )
