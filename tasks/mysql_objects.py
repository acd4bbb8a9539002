"""Read the object catalog of a MySQL/MariaDB database (information_schema + SHOW CREATE ...).

Metadata only: no row is read, so this stays cheap however big the tables are. The result is
the pure `ObjectCatalog` of tasks.object_diff, which a backup stores in its manifest and a
drill compares with the restored copy's.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pymysql
import pymysql.cursors

from blocks.mysql import MySQLConnection
from tasks.mysql import connect, quote_identifier
from tasks.object_diff import (
    ObjectCatalog,
    ObjectKind,
    SchemaObject,
    TableShape,
    backquote,
    digest,
    normalise_program,
    normalise_table,
    normalise_view,
)

TABLE_TYPES = ("BASE TABLE", "SYSTEM VERSIONED")
ER_EVENTS_DB_ERROR = 1577  # "Cannot proceed, because event scheduler is disabled"
_SHOW_CREATE: dict[ObjectKind, tuple[str, int]] = {
    # kind: (SHOW CREATE <what>, column of the statement)
    "procedure": ("PROCEDURE", 2),
    "function": ("FUNCTION", 2),
    "event": ("EVENT", 3),
}


def read_object_catalog(
    conn: MySQLConnection, database: str, ignore_tables: Collection[str] = ()
) -> ObjectCatalog:
    """The catalog of `database`: its defaults, every table's shape and every object's digest.

    Args:
        conn: a connection block for the server holding `database`.
        database: the database (any name MariaDB accepts).
        ignore_tables: tables to leave out (a drill's marker table).
    """
    quote_identifier(database)
    with connect(conn) as connection, connection.cursor() as cur:
        catalog = _read_defaults(cur, database)
        cur.execute(f"USE {quote_identifier(database)}")  # SHOW CREATE names unqualified
        catalog.tables = _read_tables(cur, database, set(ignore_tables))
        objects = _read_views_and_sequences(cur, database)
        objects += _read_triggers(cur, database)
        objects += _read_routines(cur, database)
        try:
            objects += _read_events(cur, database)
        except pymysql.err.OperationalError as exc:
            if exc.args[0] != ER_EVENTS_DB_ERROR:
                raise
            catalog.unread["event"] = f"error {exc.args[0]}: {exc.args[1]}"
    catalog.objects = sorted(objects, key=lambda o: (o.kind, o.name))
    return catalog


def _rows(cur: pymysql.cursors.Cursor, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    cur.execute(sql, args)
    return [tuple(row) for row in cur.fetchall()]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _read_defaults(cur: pymysql.cursors.Cursor, database: str) -> ObjectCatalog:
    rows = _rows(
        cur,
        "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME"
        " FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
        database,
    )
    charset, collation = rows[0] if rows else (None, None)
    return ObjectCatalog(charset=_text(charset), collation=_text(collation))


def _show_create(cur: pymysql.cursors.Cursor, what: str, name: str, column: int = 1) -> str:
    return _show_create_or_hidden(cur, what, name, column) or ""


def _show_create_or_hidden(
    cur: pymysql.cursors.Cursor, what: str, name: str, column: int = 1
) -> str | None:
    """The CREATE statement, or None when the server hides it from this user.

    The server answers NULL in the statement column (the row itself is there) for a routine
    the user neither defined nor may read (MariaDB: SELECT on mysql.proc; 11.x: SHOW CREATE
    ROUTINE).
    """
    cur.execute(f"SHOW CREATE {what} {quote_identifier(name)}")
    row = cur.fetchone()
    if not row:
        return ""
    return _text(row[column])


def _hidden_reason(cur: pymysql.cursors.Cursor, kind: ObjectKind, database: str) -> str:
    """Why SHOW CREATE hid a `kind`'s body, and the grant that would show it."""
    cur.execute("SELECT CURRENT_USER()")
    row = cur.fetchone()
    user, _, host = ((_text(row[0]) if row else None) or "").rpartition("@")
    account = f"{backquote(user)}@{backquote(host)}" if user else "the drill user"
    if kind in ("procedure", "function"):
        return (
            f"SHOW CREATE {kind.upper()} returned no body: {account} is not its definer and "
            f"may not read routine bodies; GRANT SELECT ON mysql.proc TO {account} (MariaDB "
            f"11.x: GRANT SHOW CREATE ROUTINE ON {backquote(database)}.* TO {account})"
        )
    return (
        f"SHOW CREATE {kind.upper()} returned no definition to {account}; "
        f"GRANT EVENT ON {backquote(database)}.* TO {account}"
    )


def _read_tables(
    cur: pymysql.cursors.Cursor, database: str, ignore: set[str]
) -> dict[str, TableShape]:
    rows = _rows(
        cur,
        "SELECT TABLE_NAME, ENGINE, ROW_FORMAT, TABLE_COLLATION, AUTO_INCREMENT"
        " FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_TYPE IN (%s, %s)"
        " ORDER BY TABLE_NAME",
        database,
        *TABLE_TYPES,
    )
    partitions: dict[str, list[str]] = {}
    for table, partition, subpartition in _rows(
        cur,
        "SELECT TABLE_NAME, PARTITION_NAME, SUBPARTITION_NAME FROM information_schema.PARTITIONS"
        " WHERE TABLE_SCHEMA = %s AND PARTITION_NAME IS NOT NULL"
        " ORDER BY TABLE_NAME, PARTITION_ORDINAL_POSITION, SUBPARTITION_ORDINAL_POSITION",
        database,
    ):
        label = str(partition) + (f"/{subpartition}" if subpartition else "")
        partitions.setdefault(str(table), []).append(label)
    tables: dict[str, TableShape] = {}
    for name, engine, row_format, collation, auto_increment in rows:
        table = str(name)
        if table in ignore:
            continue
        create = _show_create(cur, "TABLE", table)
        tables[table] = TableShape(
            engine=_text(engine),
            row_format=_text(row_format),
            collation=_text(collation),
            auto_increment=int(auto_increment) if auto_increment is not None else None,
            partitions=partitions.get(table, []),
            digest=digest(normalise_table(create, database)),
        )
    return tables


def _read_views_and_sequences(cur: pymysql.cursors.Cursor, database: str) -> list[SchemaObject]:
    views = {
        str(name): (_text(client), _text(connection))
        for name, client, connection in _rows(
            cur,
            "SELECT TABLE_NAME, CHARACTER_SET_CLIENT, COLLATION_CONNECTION"
            " FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %s",
            database,
        )
    }
    sequences = [
        str(row[0])
        for row in _rows(
            cur,
            "SELECT TABLE_NAME FROM information_schema.TABLES"
            " WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'SEQUENCE'",
            database,
        )
    ]
    objects = []
    for view, (client, collation) in views.items():
        create = _show_create(cur, "VIEW", view)
        objects.append(
            SchemaObject(
                kind="view",
                name=view,
                digest=digest(normalise_view(create, database)),
                character_set_client=client,
                collation_connection=collation,
            )
        )
    for sequence in sequences:
        create = _show_create(cur, "SEQUENCE", sequence)
        objects.append(
            SchemaObject(
                kind="sequence", name=sequence, digest=digest(normalise_table(create, database))
            )
        )
    return objects


def _read_triggers(cur: pymysql.cursors.Cursor, database: str) -> list[SchemaObject]:
    objects = []
    for row in _rows(
        cur,
        "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_ORDER, ACTION_TIMING,"
        " EVENT_MANIPULATION, ACTION_ORIENTATION, ACTION_STATEMENT, SQL_MODE, DEFINER,"
        " CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DATABASE_COLLATION"
        " FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s",
        database,
    ):
        name, table, order, timing, event, orientation, body = (_text(v) for v in row[:7])
        definition = f"{timing} {event} ON {table} FOR EACH {orientation}\n{body}"
        objects.append(
            SchemaObject(
                kind="trigger",
                name=str(name),
                digest=digest(normalise_program(definition)),
                table=table,
                action_order=int(order) if order is not None else None,
                sql_mode=_text(row[7]),
                definer=_text(row[8]),
                character_set_client=_text(row[9]),
                collation_connection=_text(row[10]),
                database_collation=_text(row[11]),
            )
        )
    return objects


_PROGRAM_CONTEXT = (
    "SQL_MODE, DEFINER, CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DATABASE_COLLATION"
)


def _stored_program(
    cur: pymysql.cursors.Cursor,
    database: str,
    kind: ObjectKind,
    name: Any,
    context: tuple[Any, ...],
    **extra: Any,
) -> SchemaObject:
    """A routine or event: SHOW CREATE digest plus the context columns of _PROGRAM_CONTEXT."""
    what, column = _SHOW_CREATE[kind]
    create = _show_create_or_hidden(cur, what, str(name), column)
    sql_mode, definer, client, collation, db_collation = (_text(v) for v in context)
    return SchemaObject(
        kind=kind,
        name=str(name),
        digest=digest(normalise_program(create)) if create is not None else None,
        unreadable=_hidden_reason(cur, kind, database) if create is None else None,
        sql_mode=sql_mode,
        definer=definer,
        character_set_client=client,
        collation_connection=collation,
        database_collation=db_collation,
        **extra,
    )


def _read_routines(cur: pymysql.cursors.Cursor, database: str) -> list[SchemaObject]:
    rows = _rows(
        cur,
        f"SELECT ROUTINE_NAME, ROUTINE_TYPE, {_PROGRAM_CONTEXT} FROM information_schema.ROUTINES"
        " WHERE ROUTINE_SCHEMA = %s AND ROUTINE_TYPE IN ('PROCEDURE', 'FUNCTION')",
        database,
    )
    return [
        _stored_program(
            cur, database, "procedure" if row[1] == "PROCEDURE" else "function", row[0], row[2:]
        )
        for row in rows
    ]


def _read_events(cur: pymysql.cursors.Cursor, database: str) -> list[SchemaObject]:
    rows = _rows(
        cur,
        f"SELECT EVENT_NAME, TIME_ZONE, {_PROGRAM_CONTEXT} FROM information_schema.EVENTS"
        " WHERE EVENT_SCHEMA = %s",
        database,
    )
    return [
        _stored_program(cur, database, "event", row[0], row[2:], time_zone=_text(row[1]))
        for row in rows
    ]
