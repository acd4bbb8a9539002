"""MySQL/MariaDB: connections, server facts, consistent snapshots and the dump tool.

The only module that talks to MySQL for backups. Credentials come from a MySQLConnection
block; command-line tools get them through a 0600 `--defaults-extra-file`, never argv.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymysql
import pymysql.cursors

from blocks.mysql import MySQLConnection
from tasks.errors import (
    ConfigurationError,
    DatabaseAuthError,
    DatabaseNotFound,
    DatabaseUnreachable,
    VibeOpsError,
)
from tasks.object_diff import ObjectCatalog

_PRE_SNAPSHOT = re.compile(r"^\s*(/\*[!M]?\d+\s+)?(SET|START TRANSACTION)\b", re.IGNORECASE)
# Names we compose ourselves (scratch databases, tenants, sample data) stay this narrow.
COMPOSED_NAME = re.compile(r"^[A-Za-z0-9_$-]{1,64}$")
MAX_IDENTIFIER_CHARS = 64
TRAILING_WHITESPACE = " \t\n\r\x0b\x0c"
# MySQL client error codes mapped to what an operator must do about them.
_UNREACHABLE_CODES = {2002, 2003, 2005, 2006, 2013, 1040, 1205}
_AUTH_CODES = {1044, 1045, 1698}
_UNKNOWN_DB = 1049


def identifier_problem(name: str) -> str | None:
    """Why MariaDB would refuse `name` as a database/table/column/... name, or None.

    MariaDB accepts 1-64 characters of the Basic Multilingual Plane except NUL, not ending
    in ASCII whitespace (space, tab, newline, CR, VT, FF); backticks, quotes, dots, slashes,
    reserved words and leading spaces are all legal once quoted.
    """
    if not name:
        return "it is empty"
    if len(name) > MAX_IDENTIFIER_CHARS:
        return f"it is {len(name)} characters long (MariaDB allows {MAX_IDENTIFIER_CHARS})"
    if "\x00" in name:
        return "it contains a NUL character"
    if name[-1] in TRAILING_WHITESPACE:
        return f"it ends with whitespace ({name[-1]!r})"
    if any(ord(ch) > 0xFFFF for ch in name):
        return "it contains a character outside the Basic Multilingual Plane (e.g. an emoji)"
    return None


def quote_identifier(name: str) -> str:
    """Backtick-quote any identifier MariaDB accepts (backticks doubled).

    For names read from a server or given by an operator to name an existing object. In a
    statement run with parameters, pymysql %-formats the text: write a quoted '%' as '%%'.

    Raises:
        ConfigurationError: MariaDB itself would refuse the name (empty, too long, NUL, ...).
    """
    problem = identifier_problem(name)
    if problem is not None:
        raise ConfigurationError(f"{name!r} cannot be a MariaDB identifier: {problem}")
    return "`" + name.replace("`", "``") + "`"


def quote_composed_name(name: str, what: str = "name") -> str:
    """Validate a name we compose ourselves (scratch database, tenant) and backtick-quote it.

    Raises:
        ConfigurationError: the name is outside 1-64 letters, digits, '_', '$' or '-'.
    """
    if not COMPOSED_NAME.match(name):
        raise ConfigurationError(
            f"{what} {name!r} is not allowed: use 1-64 letters, digits, '_', '$' or '-'"
        )
    return f"`{name}`"


def translate_error(
    exc: pymysql.err.MySQLError, conn: MySQLConnection, database: str | None
) -> VibeOpsError:
    """Map a driver error to the project's typed errors, with a message that says what to fix."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    where = f"{conn.host}:{conn.port}"
    if code in _AUTH_CODES:
        return DatabaseAuthError(
            f"MySQL at {where} refused user {conn.user!r} (error {code}); fix the user/password "
            "in the MySQL connection block"
        )
    if code == _UNKNOWN_DB:
        return DatabaseNotFound(
            f"database {database!r} does not exist on {where}; fix the `database` parameter "
            "or the connection block's database"
        )
    if code in _UNREACHABLE_CODES or isinstance(exc, pymysql.err.OperationalError):
        return DatabaseUnreachable(
            f"cannot reach MySQL at {where} (error {code}); check host/port in the connection "
            "block and that the server is up"
        )
    return VibeOpsError(f"MySQL error on {where}: {exc}")


def one_row(cursor: pymysql.cursors.Cursor) -> tuple[Any, ...]:
    """The row a single-row query (COUNT, VERSION(), CHECKSUM TABLE ...) returned."""
    row = cursor.fetchone()
    if row is None:
        raise RuntimeError("the server returned no row for a single-row query")
    return tuple(row)


@contextlib.contextmanager
def connect(
    conn: MySQLConnection, database: str | None = None, **extra: object
) -> Iterator[pymysql.connections.Connection]:
    """Open a pymysql connection, raising typed errors."""
    try:
        connection = pymysql.connect(**{**conn.pymysql_kwargs(database), **extra})  # type: ignore[arg-type]
    except pymysql.err.MySQLError as exc:
        raise translate_error(exc, conn, database) from None
    try:
        yield connection
    finally:
        with contextlib.suppress(Exception):
            connection.close()


@contextlib.contextmanager
def defaults_file(conn: MySQLConnection) -> Iterator[Path]:
    """A `--defaults-extra-file` holding the credentials, mode 0600, deleted afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="vibeops-my-"))
    path = folder / "client.cnf"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(conn.defaults_file_text())
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def find_tool(*names: str, package: str) -> str:
    """Resolve a command-line tool, or say which package installs it."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise ConfigurationError(
        f"{' / '.join(names)} is not installed on this worker: apt-get install -y {package}"
    )


def tool_version(binary: str) -> str:
    """First line of `<tool> --version`."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


@dataclass
class SourceFacts:
    """What a backup records about the source before it starts."""

    server_version: str
    tables: list[str]
    views: list[str]
    routines: list[str]
    data_bytes: int
    catalog: ObjectCatalog | None = None


def read_source_facts(conn: MySQLConnection, database: str) -> SourceFacts:
    """Version, tables, views, routines and approximate data size of `database`."""
    quote_identifier(database)
    with connect(conn, database) as connection, connection.cursor() as cur:
        cur.execute("SELECT VERSION()")
        version = str(one_row(cur)[0])
        cur.execute(
            "SELECT table_name, table_type, COALESCE(data_length, 0) FROM information_schema.tables"
            " WHERE table_schema = %s ORDER BY table_name",
            (database,),
        )
        rows = cur.fetchall()
        cur.execute(
            "SELECT routine_name FROM information_schema.routines WHERE routine_schema = %s"
            " ORDER BY routine_name",
            (database,),
        )
        routines = [str(r[0]) for r in cur.fetchall()]
    tables = [str(r[0]) for r in rows if r[1] == "BASE TABLE"]
    views = [str(r[0]) for r in rows if r[1] == "VIEW"]
    return SourceFacts(
        server_version=version,
        tables=tables,
        views=views,
        routines=routines,
        data_bytes=sum(int(r[2]) for r in rows),
    )


@dataclass
class SnapshotFacts:
    """Row counts, checksums and binlog position at the dump's consistent point."""

    consistent_at: datetime
    binlog_file: str | None = None
    binlog_position: int | None = None
    gtid: str | None = None
    exact: bool = True
    rows: dict[str, int] = field(default_factory=dict)
    checksums: dict[str, int | None] = field(default_factory=dict)
    longest_rows: dict[str, int] = field(default_factory=dict)


_DUMP_OPTIONS: dict[str, str] = {}


def dump_history_option(binary: str) -> list[str]:
    """`--dump-history` (history of system-versioned tables) when this mariadb-dump has it."""
    if binary not in _DUMP_OPTIONS:
        out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
        _DUMP_OPTIONS[binary] = out.stdout
    return ["--dump-history"] if "--dump-history" in _DUMP_OPTIONS[binary] else []


def dump_command(binary: str, defaults_path: Path, database: str) -> list[str]:
    """argv for a consistent, binary-safe logical dump of one database (no secrets)."""
    return [
        binary,
        f"--defaults-extra-file={defaults_path}",
        "--single-transaction",
        "--quick",
        "--routines",
        "--triggers",
        "--events",
        "--hex-blob",
        "--default-character-set=utf8mb4",
        "--skip-dump-date",
        "--max-allowed-packet=256M",
        *dump_history_option(binary),
        database,
    ]


class ConsistentDump:
    """A mysqldump process plus our own snapshot at the same consistent point.

    With RELOAD privilege, writes are held by FLUSH TABLES WITH READ LOCK for the instant
    it takes both our snapshot and mysqldump's to open, so the row counts and checksums
    recorded in the manifest describe exactly the data in the dump. Without it (managed
    servers), the facts are taken right before the dump and marked `exact=False`.
    """

    def __init__(
        self,
        conn: MySQLConnection,
        database: str,
        record_checksums: bool = True,
        lock_timeout_seconds: int = 30,
        binary: str | None = None,
        snapshot_wait_seconds: float = 10,
    ) -> None:
        self.conn = conn
        self.database = database
        self.record_checksums = record_checksums
        self.lock_timeout_seconds = lock_timeout_seconds
        self.snapshot_wait_seconds = snapshot_wait_seconds
        self.snapshot_note: str | None = None
        self.binary = binary or find_tool("mariadb-dump", "mysqldump", package="mariadb-client")
        self.process: subprocess.Popen[bytes] | None = None
        self._stack = contextlib.ExitStack()
        self._snapshot: pymysql.connections.Connection | None = None
        self.facts: SnapshotFacts | None = None

    def __enter__(self) -> ConsistentDump:
        try:
            self._start()
        except BaseException:
            self.kill()
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()
        self._stack.close()

    def _start(self) -> None:
        quote_identifier(self.database)
        lock = self._stack.enter_context(connect(self.conn))
        snapshot = self._stack.enter_context(connect(self.conn, self.database))
        self._snapshot = snapshot
        exact = True
        with lock.cursor() as cur:
            cur.execute(f"SET SESSION lock_wait_timeout = {int(self.lock_timeout_seconds)}")
            try:
                cur.execute("FLUSH TABLES WITH READ LOCK")
            except pymysql.err.MySQLError:
                exact = False
        try:
            with snapshot.cursor() as cur:
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                consistent_at = datetime.now(UTC)
                facts = SnapshotFacts(consistent_at=consistent_at, exact=exact)
                self._read_binlog_position(cur, facts)
                # Thread ids are reused, so remember who was there rather than the max id.
                cur.execute("SELECT ID FROM information_schema.processlist")
                existing = {int(row[0]) for row in cur.fetchall()}
            defaults = self._stack.enter_context(defaults_file(self.conn))
            self.process = self._launch(defaults)
            if exact and not self._wait_for_dump_snapshot(lock, existing):
                facts.exact = False
        finally:
            if exact:
                with lock.cursor() as cur:
                    cur.execute("UNLOCK TABLES")
        self.facts = facts

    def _launch(self, defaults: Path) -> subprocess.Popen[bytes]:
        """Start the dump tool (tasks.mydumper runs another tool through this hook)."""
        return subprocess.Popen(
            dump_command(self.binary, defaults, self.database),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=1 << 20,  # full 1 MiB reads: raw pipe reads return 64 KiB at most
        )

    @staticmethod
    def _read_binlog_position(cur: pymysql.cursors.Cursor, facts: SnapshotFacts) -> None:
        with contextlib.suppress(pymysql.err.MySQLError):
            cur.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
            status = {str(k): str(v) for k, v in cur.fetchall()}
            if status.get("Binlog_snapshot_file"):
                facts.binlog_file = status["Binlog_snapshot_file"]
                facts.binlog_position = int(status.get("Binlog_snapshot_position", 0))
        with contextlib.suppress(pymysql.err.MySQLError):
            cur.execute("SELECT @@GLOBAL.gtid_binlog_pos")
            facts.gtid = str(one_row(cur)[0] or "") or None

    def _wait_for_dump_snapshot(
        self, lock: pymysql.connections.Connection, existing: set[int]
    ) -> bool:
        """Hold the lock until mysqldump's own transaction (a newer thread) has its snapshot.

        Returns False when it did not show up in time: the backup goes on, but its facts
        are then marked inexact rather than holding writes any longer.
        """
        deadline = time.monotonic() + self.snapshot_wait_seconds
        with lock.cursor() as cur:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    return True  # it failed early; the caller reports its stderr
                # A new connection running anything past its SET / START TRANSACTION
                # preamble (mysqldump's next statements read tables) has its snapshot.
                cur.execute(
                    "SELECT ID, INFO FROM information_schema.processlist WHERE INFO IS NOT NULL"
                )
                if any(
                    int(thread) not in existing and not _PRE_SNAPSHOT.match(str(info))
                    for thread, info in cur.fetchall()
                ):
                    return True
                time.sleep(0.005)
            cur.execute(
                "SELECT ID, COMMAND, STATE, LEFT(INFO, 80) FROM information_schema.processlist"
            )
            self.snapshot_note = (
                f"dump snapshot not seen within {self.snapshot_wait_seconds}s: {cur.fetchall()}"
            )
        return False

    def record_table_facts(self, tables: list[str]) -> SnapshotFacts:
        """Row counts (and checksums) of `tables` inside our snapshot; ends the snapshot."""
        assert self._snapshot is not None and self.facts is not None
        with self._snapshot.cursor() as cur:
            for table in tables:
                quoted = quote_identifier(table)
                cur.execute(f"SELECT COUNT(*) FROM {quoted}")
                self.facts.rows[table] = int(one_row(cur)[0])
                if self.record_checksums:
                    cur.execute(f"CHECKSUM TABLE {quoted}")
                    value = one_row(cur)[1]
                    self.facts.checksums[table] = int(value) if value is not None else None
            self.facts.longest_rows = longest_lob_rows(cur, self.database, tables)
            cur.execute("COMMIT")
        return self.facts

    def kill(self) -> None:
        """Stop mysqldump if it still runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)


LOB_TYPES = (
    "tinyblob",
    "blob",
    "mediumblob",
    "longblob",
    "tinytext",
    "text",
    "mediumtext",
    "longtext",
    "json",
    "geometry",
    "point",
    "linestring",
    "polygon",
    "multipoint",
    "multilinestring",
    "multipolygon",
    "geometrycollection",
)


def longest_lob_rows(
    cur: pymysql.cursors.Cursor, database: str, tables: list[str]
) -> dict[str, int]:
    """Per table with BLOB/TEXT/JSON/spatial columns: the most bytes those hold in one row.

    The other columns add at most 64 KiB to a row, so this is what decides whether a row's
    INSERT fits the restore server's max_allowed_packet. One scan of each such table.
    """
    cur.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = %s AND data_type IN %s ORDER BY table_name, ordinal_position",
        (database, LOB_TYPES),
    )
    columns: dict[str, list[str]] = {}
    for table, column in cur.fetchall():
        columns.setdefault(str(table), []).append(str(column))
    result: dict[str, int] = {}
    for table in tables:
        if table in columns:
            total = " + ".join(
                f"COALESCE(LENGTH({quote_identifier(c)}), 0)" for c in columns[table]
            )
            cur.execute(f"SELECT COALESCE(MAX({total}), 0) FROM {quote_identifier(table)}")
            result[table] = int(one_row(cur)[0])
    return result


def table_checksums(
    conn: MySQLConnection, database: str, tables: list[str]
) -> dict[str, int | None]:
    """CHECKSUM TABLE for each table of `database` (used by drills and tests)."""
    result: dict[str, int | None] = {}
    with connect(conn, database) as connection, connection.cursor() as cur:
        for table in tables:
            cur.execute(f"CHECKSUM TABLE {quote_identifier(table)}")
            value = one_row(cur)[1]
            result[table] = int(value) if value is not None else None
    return result


def table_row_counts(conn: MySQLConnection, database: str, tables: list[str]) -> dict[str, int]:
    """Exact COUNT(*) per table."""
    result: dict[str, int] = {}
    with connect(conn, database) as connection, connection.cursor() as cur:
        for table in tables:
            cur.execute(f"SELECT COUNT(*) FROM {quote_identifier(table)}")
            result[table] = int(one_row(cur)[0])
    return result
