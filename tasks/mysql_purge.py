"""MySQL side of retention: schema checks, expiry counts and the chunked, resumable purge.

The purge deletes by primary-key ranges (`DELETE ... WHERE pk >= lo AND pk < hi AND
time < cutoff`), one short autocommitted transaction per chunk, with a pause between chunks
so writers are not blocked and replicas keep up. Each chunk is idempotent, so a stopped purge
resumes by simply running again (or from the cursor it reported). Tables without a single
integer primary key fall back to `ORDER BY time LIMIT n` batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pymysql
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from blocks.mysql import MySQLConnection
from tasks.backup import retry_transient
from tasks.errors import RetentionPolicyInvalid
from tasks.mysql import connect, quote_identifier, translate_error
from tasks.retention import TableFacts

TIME_TYPES = ("date", "datetime", "timestamp")
INTEGER_TYPES = ("tinyint", "smallint", "mediumint", "int", "bigint")
_RETRY_CHUNK_CODES = {1205, 1213}  # lock wait timeout, deadlock: the chunk is simply retried


def _session(cursor: pymysql.cursors.Cursor) -> None:
    # UTC for TIMESTAMP columns; READ COMMITTED so a chunk locks only the rows it deletes;
    # a bounded lock wait so nothing hangs.
    cursor.execute("SET SESSION time_zone = '+00:00'")
    cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    cursor.execute("SET SESSION innodb_lock_wait_timeout = 10")


def _naive_utc(at: datetime) -> datetime:
    """MySQL DATETIME values are naive; retention stores and compares them as UTC."""
    return at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo else at


@dataclass(frozen=True)
class TableShape:
    """The columns a purge needs, as the server reports them."""

    database: str
    table: str
    time_column: str
    time_type: str
    pk_column: str | None
    """The single integer primary-key column, or None (then LIMIT batches are used)."""


def check_table_rules(
    conn: MySQLConnection, targets: list[tuple[str, str, str, str]]
) -> dict[str, TableShape]:
    """Check every (rule, database, table, time_column) against the server, before any delete.

    Returns:
        The shape of each rule's table, by rule name.

    Raises:
        RetentionPolicyInvalid: listing every unknown database, table or column, or a time
            column that is not DATE/DATETIME/TIMESTAMP.
    """
    problems: list[str] = []
    shapes: dict[str, TableShape] = {}
    where = f"{conn.host}:{conn.port}"
    with connect(conn) as connection, connection.cursor() as cursor:
        for rule, database, table, column in targets:
            cursor.execute(
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_KEY FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                (database, table),
            )
            columns = {name.lower(): (name, kind.lower(), key) for name, kind, key in cursor}
            if not columns:
                problems.append(
                    f"rule {rule!r}: table {database}.{table} does not exist on {where}; fix the "
                    "rule's table (or 'database.table') or set enabled: false"
                )
                continue
            found = columns.get(column.lower())
            if found is None:
                problems.append(
                    f"rule {rule!r}: column {column!r} does not exist in {database}.{table}; "
                    f"fix time_column (columns: {', '.join(sorted(c[0] for c in columns.values()))})"
                )
                continue
            if found[1] not in TIME_TYPES:
                problems.append(
                    f"rule {rule!r}: column {database}.{table}.{found[0]} is {found[1]}, not a "
                    "DATE/DATETIME/TIMESTAMP; point time_column at a time column"
                )
                continue
            pk = [c for c in columns.values() if c[2] == "PRI"]
            cursor.execute(
                "SELECT COUNT(*) FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = %s "
                "AND TABLE_NAME = %s AND CONSTRAINT_NAME = 'PRIMARY'",
                (database, table),
            )
            (pk_width,) = cursor.fetchone()  # type: ignore[misc]
            single_int_pk = (
                pk[0][0] if len(pk) == 1 and pk_width == 1 and pk[0][1] in INTEGER_TYPES else None
            )
            shapes[rule] = TableShape(database, table, found[0], found[1], single_int_pk)
    if problems:
        raise RetentionPolicyInvalid(
            "retention policy refused, nothing was changed:\n- " + "\n- ".join(problems)
        )
    return shapes


@task(
    cache_policy=NO_CACHE,
    name="count-expired-rows",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
)
def count_expired_rows(conn: MySQLConnection, shape: TableShape, cutoff: datetime) -> TableFacts:
    """How many rows of a table are older than `cutoff`, of how many, and their key range."""
    table = f"{quote_identifier(shape.database)}.{quote_identifier(shape.table)}"
    column = quote_identifier(shape.time_column)
    pk = quote_identifier(shape.pk_column) if shape.pk_column else "NULL"
    try:
        with connect(conn) as connection, connection.cursor() as cursor:
            _session(cursor)
            cursor.execute(
                f"SELECT COUNT(*), MIN({pk}), MAX({pk}) FROM {table} WHERE {column} < %s",
                (_naive_utc(cutoff),),
            )
            matching, min_pk, max_pk = cursor.fetchone()  # type: ignore[misc]
            cursor.execute(f"SELECT COUNT(*) FROM {table}")
            (total,) = cursor.fetchone()  # type: ignore[misc]
            cursor.execute(
                "SELECT AVG_ROW_LENGTH FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                (shape.database, shape.table),
            )
            (avg_row_length,) = cursor.fetchone()  # type: ignore[misc]
    except pymysql.err.MySQLError as exc:
        raise translate_error(exc, conn, shape.database) from exc
    return TableFacts(
        database=shape.database,
        table=shape.table,
        matching_rows=int(matching),
        total_rows=int(total),
        avg_row_length=int(avg_row_length or 0),
        min_pk=None if min_pk is None else int(min_pk),
        max_pk=None if max_pk is None else int(max_pk),
    )


@dataclass(frozen=True)
class PurgeProgress:
    """Reported after every chunk; `cursor` is where a resumed purge may start after."""

    deleted: int
    chunks: int
    cursor: int | None
    fraction: float
    elapsed_seconds: float


@dataclass(frozen=True)
class PurgeResult:
    """What a purge did."""

    deleted: int
    chunks: int
    seconds: float
    cursor: int | None
    finished: bool
    """False when it stopped early (time budget or stop request); run it again to resume."""

    @property
    def rows_per_second(self) -> float:
        return self.deleted / self.seconds if self.seconds > 0 else 0.0


@task(
    cache_policy=NO_CACHE,
    name="purge-expired-rows",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
)
def purge_expired_rows(
    conn: MySQLConnection,
    shape: TableShape,
    cutoff: datetime,
    *,
    from_pk: int | None = None,
    upto_pk: int | None = None,
    chunk_rows: int = 5000,
    pause_seconds: float = 0.05,
    time_budget_seconds: float | None = None,
    on_progress: Callable[[PurgeProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> PurgeResult:
    """Delete rows older than `cutoff` in chunks of `chunk_rows`, pausing between chunks.

    Args:
        conn: The server.
        shape: The table (from `check_table_rules`).
        cutoff: Rows whose time column is before this go.
        from_pk: First key to look at: the plan's lowest expired key, or a reported cursor + 1
            to resume. None: found with a scan.
        upto_pk: Highest key the plan saw; rows inserted later are never scanned.
        chunk_rows: Rows per DELETE (one short transaction each).
        pause_seconds: Sleep between chunks (lets writers and replicas catch up).
        time_budget_seconds: Stop cleanly after this long; the next run resumes.
        on_progress: Called after every chunk.
        should_stop: Polled between chunks; True stops cleanly.

    Returns:
        Rows deleted, chunks, the last cursor and whether the purge reached the end.
    """
    started = time.monotonic()
    table = f"{quote_identifier(shape.database)}.{quote_identifier(shape.table)}"
    column = quote_identifier(shape.time_column)
    when = _naive_utc(cutoff)
    deleted = chunks = 0
    cursor_pk = None if from_pk is None else from_pk - 1
    finished = False
    try:
        with connect(conn) as connection, connection.cursor() as cursor:
            _session(cursor)
            if shape.pk_column is None:
                step = _limit_batches(cursor, table, column, when, chunk_rows)
            else:
                step = _pk_ranges(
                    cursor, table, quote_identifier(shape.pk_column), column, when,
                    chunk_rows, from_pk, upto_pk,
                )  # fmt: skip
            low = high = None
            for count, cursor_pk, low, high in step:
                deleted += count
                chunks += 1
                if on_progress is not None:
                    done = 0.0
                    if high is not None and low is not None and cursor_pk is not None:
                        done = (cursor_pk - low + 1) / max(high - low + 1, 1)
                    on_progress(
                        PurgeProgress(
                            deleted, chunks, cursor_pk, min(1.0, max(0.0, done)),
                            time.monotonic() - started,
                        )
                    )  # fmt: skip
                over_budget = (
                    time_budget_seconds is not None
                    and time.monotonic() - started >= time_budget_seconds
                )
                if over_budget or (should_stop is not None and should_stop()):
                    break
                time.sleep(pause_seconds)
            else:
                finished = True
    except pymysql.err.MySQLError as exc:
        raise translate_error(exc, conn, shape.database) from exc
    return PurgeResult(deleted, chunks, time.monotonic() - started, cursor_pk, finished)


def _execute_chunk(cursor: pymysql.cursors.Cursor, sql: str, args: tuple[object, ...]) -> int:
    for attempt in range(5):
        try:
            return int(cursor.execute(sql, args))
        except pymysql.err.OperationalError as exc:
            if exc.args[0] not in _RETRY_CHUNK_CODES or attempt == 4:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def _pk_ranges(
    cursor: pymysql.cursors.Cursor,
    table: str,
    pk: str,
    column: str,
    when: datetime,
    chunk_rows: int,
    from_pk: int | None,
    upto_pk: int | None,
) -> Iterator[tuple[int, int | None, int | None, int | None]]:
    """Yield (deleted, cursor, first, last) per chunk of `chunk_rows` keys."""
    first, last = from_pk, upto_pk
    if first is None or last is None:
        cursor.execute(
            f"SELECT MIN({pk}), MAX({pk}) FROM {table} WHERE {column} < %s"
            + (f" AND {pk} >= %s" if first is not None else ""),
            (when, first) if first is not None else (when,),
        )
        found_first, found_last = cursor.fetchone()  # type: ignore[misc]
        if found_first is None:
            return
        first = found_first if first is None else max(first, found_first)
        last = found_last if last is None else min(last, found_last)
    low = first
    while low <= last:
        cursor.execute(
            f"SELECT {pk} FROM {table} WHERE {pk} >= %s ORDER BY {pk} LIMIT 1 OFFSET %s",
            (low, chunk_rows),
        )
        row = cursor.fetchone()
        high = row[0] if row is not None and row[0] <= last else last + 1
        count = _execute_chunk(
            cursor,
            f"DELETE FROM {table} WHERE {pk} >= %s AND {pk} < %s AND {column} < %s",
            (low, high, when),
        )
        yield count, high - 1, first, last
        low = high


def _limit_batches(
    cursor: pymysql.cursors.Cursor, table: str, column: str, when: datetime, chunk_rows: int
) -> Iterator[tuple[int, int | None, int | None, int | None]]:
    """Yield (deleted, None, None, None) per `LIMIT` batch until nothing is left."""
    while True:
        count = _execute_chunk(
            cursor,
            f"DELETE FROM {table} WHERE {column} < %s ORDER BY {column} LIMIT %s",
            (when, chunk_rows),
        )
        if count == 0:
            return
        yield count, None, None, None
