"""MySQL/MariaDB: connections, server facts, consistent snapshots and the dump tool.

The only module that talks to MySQL for backups. Credentials come from a MySQLConnection
block; command-line tools get them through a 0600 `--defaults-extra-file`, never argv.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

import pymysql
import pymysql.cursors

from blocks.mysql import MySQLConnection
from tasks.child_process import StderrTail, spawn, stop
from tasks.child_process import run as run_tool
from tasks.errors import (
    ConfigurationError,
    DatabaseAuthError,
    DatabaseNotFound,
    DatabaseUnreachable,
    ExternalCommandError,
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
    out = run_tool([binary, "--version"], capture_output=True, text=True, timeout=30)
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
    binlog_warning: str | None = None


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
        cur.execute("SELECT @@GLOBAL.log_bin, @@GLOBAL.binlog_format")
        log_bin, binlog_format = one_row(cur)
    binlog = BinlogState(bool(int(log_bin or 0)), str(binlog_format or ""))
    tables = [str(r[0]) for r in rows if r[1] == "BASE TABLE"]
    views = [str(r[0]) for r in rows if r[1] == "VIEW"]
    return SourceFacts(
        server_version=version,
        tables=tables,
        views=views,
        routines=routines,
        data_bytes=sum(int(r[2]) for r in rows),
        binlog_warning=binlog.warning(f"{conn.host}:{conn.port}"),
    )


@dataclass(frozen=True)
class BinlogCoordinates:
    """A point in the server's binary log: file, position and the GTID state there."""

    file: str
    position: int
    gtid: str | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.position}" + (f" (GTID {self.gtid})" if self.gtid else "")


@dataclass
class SnapshotFacts:
    """Row counts, checksums and binlog coordinates at the dump's consistent point.

    `exact_by` says what proves that the facts describe exactly the dumped data:
    `binlog-coordinates` (the dump tool recorded the same coordinates as the facts'
    snapshot), `global-lock` (log_bin off: the tool opened its snapshot while our lock held
    every commit back) or `none` (then `inexact_reason` says why).
    """

    consistent_at: datetime
    binlog_file: str | None = None
    binlog_position: int | None = None
    gtid: str | None = None
    exact: bool = True
    rows: dict[str, int] = field(default_factory=dict)
    checksums: dict[str, int | None] = field(default_factory=dict)
    longest_rows: dict[str, int] = field(default_factory=dict)

    exact_by: str = "none"
    inexact_reason: str | None = None
    global_lock_ms: int = 0
    attempts: int = 1

    @property
    def coordinates(self) -> BinlogCoordinates | None:
        if self.binlog_file is None or self.binlog_position is None:
            return None
        return BinlogCoordinates(self.binlog_file, self.binlog_position, self.gtid)

    def prove(self, ours: BinlogCoordinates | None, theirs: BinlogCoordinates) -> None:
        """Exact when the tool's snapshot (`theirs`) is at our snapshot's file/position.

        The tool's coordinates become the record (the base for point-in-time recovery).
        """
        if ours is not None and (ours.file, ours.position) == (theirs.file, theirs.position):
            self.exact, self.exact_by, self.inexact_reason = True, "binlog-coordinates", None
        else:
            self.mark_inexact(
                f"the dump's snapshot is at {theirs}, the facts' at {ours}: transactions "
                "committed between the two snapshots"
            )
        self.binlog_file, self.binlog_position = theirs.file, theirs.position
        self.gtid = theirs.gtid or (ours.gtid if ours is not None else None)

    def mark_inexact(self, reason: str) -> None:
        self.exact, self.exact_by, self.inexact_reason = False, "none", reason

    def proof_hints(self) -> dict[str, str | int]:
        """What the manifest's restore_hints record about this proof."""
        hints: dict[str, str | int] = {
            "exact_snapshot": int(self.exact),
            "exact_by": self.exact_by,
            "global_lock_ms": self.global_lock_ms,
            "snapshot_attempts": self.attempts,
        }
        if self.inexact_reason:
            hints["inexact_reason"] = self.inexact_reason[:500]
        return hints


_DUMP_OPTIONS: dict[str, str] = {}


def dump_history_option(binary: str) -> list[str]:
    """`--dump-history` (history of system-versioned tables) when this mariadb-dump has it."""
    if binary not in _DUMP_OPTIONS:
        out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
        _DUMP_OPTIONS[binary] = out.stdout
    return ["--dump-history"] if "--dump-history" in _DUMP_OPTIONS[binary] else []


@dataclass(frozen=True)
class BinlogState:
    """Whether the server writes a binary log, and in which format."""

    log_bin: bool
    binlog_format: str

    def warning(self, where: str) -> str | None:
        """What an operator must know when the binlog is off or not in ROW format."""
        if not self.log_bin:
            return (
                f"log_bin is OFF on {where}: there are no binlog coordinates, so the exactness "
                "of a backup's row counts/checksums rests on a global lock of at most 1 s (and "
                "is marked inexact with the reason when that lock cannot be taken or held), and "
                "point-in-time recovery is impossible (restores go back to the last backup "
                "only). Turn it on in the server's config: log_bin=<basename>, "
                "binlog_format=ROW, server_id=<unique number>, then restart the server"
            )
        if self.binlog_format.upper() != "ROW":
            return (
                f"binlog_format is {self.binlog_format} on {where}: point-in-time recovery needs "
                "binlog_format=ROW (set it in the server's config and restart)"
            )
        return None


def snapshot_coordinates(cur: pymysql.cursors.Cursor) -> BinlogCoordinates | None:
    """The binlog coordinates of the consistent snapshot open on `cur` (MariaDB), or None.

    MariaDB clones the binlog position into `START TRANSACTION WITH CONSISTENT SNAPSHOT`
    without any lock; with log_bin off (or on MySQL) there is none.
    """
    try:
        cur.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
        status = {str(k): str(v) for k, v in cur.fetchall()}
    except pymysql.err.MySQLError:
        return None
    file = status.get("Binlog_snapshot_file")
    if not file:
        return None
    position = int(status.get("Binlog_snapshot_position", 0))
    gtid = None
    with contextlib.suppress(pymysql.err.MySQLError):
        cur.execute("SELECT BINLOG_GTID_POS(%s, %s)", (file, position))
        gtid = str(one_row(cur)[0] or "") or None
    return BinlogCoordinates(file, position, gtid)


def dump_command(
    binary: str, defaults_path: Path, database: str, coordinates: bool = False
) -> list[str]:
    """argv for a consistent, binary-safe logical dump of one database (no secrets).

    `-v` logs `-- Setting savepoint...` on stderr right after the dump's snapshot opened;
    with `coordinates`, the dump records its snapshot's binlog file/position near its start
    and the GTID state near its end (as comments).
    """
    command = [
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
        "--verbose",
    ]
    if coordinates:
        command += ["--master-data=2", "--gtid"]
    return [*command, database]


DUMP_SNAPSHOT_OPEN = "-- Setting savepoint"
_CHANGE_MASTER = re.compile(
    rb"-- CHANGE MASTER TO MASTER_LOG_FILE='([^']+)', MASTER_LOG_POS=(\d+);"
)
_GTID_MARK = b"\n-- SET GLOBAL gtid_slave_pos='"
HEADER_LIMIT = 1 << 20


class DumpStream(io.RawIOBase):
    """The dump's stdout (the header already read, then the pipe), read as it passes.

    Spots the `-- CHANGE MASTER TO MASTER_LOG_FILE=..., MASTER_LOG_POS=...;` comment in the
    first MiB and the deferred `-- SET GLOBAL gtid_slave_pos='...'` comment after the last
    row; a dump escapes newlines inside values, so neither marker can occur inside data.
    """

    def __init__(self, header: bytes, pipe: IO[bytes], scan: bool) -> None:
        super().__init__()
        self._header = header
        self._pipe = pipe
        self._scan = scan
        self._carry = b""
        self._seen = 0
        self.position: BinlogCoordinates | None = None
        self.gtid: str | None = None
        if scan:
            self._look(header)

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._pipe.fileno()

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        if self._header:
            data, self._header = self._header, b""
            return data
        data = self._pipe.read(size)
        if data and self._scan:
            self._look(data)
        return data

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def,override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _look(self, data: bytes) -> None:
        window = self._carry + data
        header = self.position is None and self._seen < HEADER_LIMIT
        if header and (match := _CHANGE_MASTER.search(window)):
            self.position = BinlogCoordinates(match.group(1).decode(), int(match.group(2)))
        self._seen += len(data)
        start = window.rfind(_GTID_MARK)
        if start >= 0:
            end = window.find(b"'", start + len(_GTID_MARK))
            if end < 0:  # the value continues in the next read
                self._carry = window[start:]
                return
            self.gtid = window[start + len(_GTID_MARK) : end].decode() or None
        self._carry = window[-(len(_GTID_MARK) + 4096) :]


class ConsistentDump:
    """A mariadb-dump process plus our own snapshot at the same consistent point.

    The facts (row counts, checksums) are read in our `START TRANSACTION WITH CONSISTENT
    SNAPSHOT`. They are exact when that snapshot and the tool's hold the same data, proven
    without timed guesses:

    - log_bin on (MariaDB): the dump records its snapshot's binlog file/position; exact when
      they equal ours (`exact_by="binlog-coordinates"`).
    - log_bin off: exact when the tool reported its snapshot open (its own output, not the
      processlist) while our FLUSH TABLES WITH READ LOCK held every commit back
      (`exact_by="global-lock"`).

    To make equal coordinates likely on a busy server, commits are held back by a global
    read lock from just before our snapshot until the tool reports its snapshot, for at most
    `lock_limit_seconds` (1 s) from the moment the lock is requested. An attempt that does
    not prove exactness is discarded (tool killed before anything is stored) and retried;
    after `attempts` the backup goes on, marked inexact with the reason.
    """

    coordinates_in_header = True  # the tool prints its coordinates before any data
    gated = True  # the tool starts before the lock and waits on a FIFO for its credentials
    snapshot_marker = DUMP_SNAPSHOT_OPEN

    def __init__(
        self,
        conn: MySQLConnection,
        database: str,
        record_checksums: bool = True,
        binary: str | None = None,
        lock_limit_seconds: float = 1.0,
        attempts: int = 3,
        header_timeout_seconds: float = 300,
    ) -> None:
        self.conn = conn
        self.database = database
        self.record_checksums = record_checksums
        self.lock_limit_seconds = lock_limit_seconds
        self.attempts = attempts
        self.header_timeout_seconds = header_timeout_seconds
        self.binary = binary or find_tool("mariadb-dump", "mysqldump", package="mariadb-client")
        self.process: subprocess.Popen[bytes] | None = None
        self.stderr: StderrTail | None = None
        self.stream: DumpStream | None = None
        self._stack = contextlib.ExitStack()
        self._attempt_stack = contextlib.ExitStack()
        self._snapshot: pymysql.connections.Connection | None = None
        self._ours: BinlogCoordinates | None = None
        self._retry = True
        self._with_coordinates = False
        self._gate: Path | None = None
        self.facts: SnapshotFacts | None = None

    @property
    def snapshot_note(self) -> str | None:
        """Why the facts are not exact (None when they are)."""
        return self.facts.inexact_reason if self.facts is not None else None

    def __enter__(self) -> ConsistentDump:
        try:
            self._start()
        except BaseException:
            self.kill()
            self._attempt_stack.close()
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()
        self._attempt_stack.close()
        self._stack.close()

    def _start(self) -> None:
        quote_identifier(self.database)
        lock = self._stack.enter_context(connect(self.conn))
        with lock.cursor() as cur:
            cur.execute("SELECT @@GLOBAL.log_bin, VERSION()")
            log_bin, version = one_row(cur)
        self._with_coordinates = bool(int(log_bin or 0)) and "mariadb" in str(version).lower()
        defaults = self._stack.enter_context(defaults_file(self.conn))
        lock_ms = 0
        for attempt in range(1, self.attempts + 1):
            facts = self._attempt(lock, defaults)
            lock_ms = max(lock_ms, facts.global_lock_ms)
            facts.global_lock_ms, facts.attempts = lock_ms, attempt
            self.facts = facts
            if facts.exact or attempt == self.attempts or self._exited_early() or not self._retry:
                return
            self.kill()
            self._attempt_stack.close()

    def _exited_early(self) -> bool:
        return self.process is not None and self.process.poll() not in (None, 0)

    def _attempt(self, lock: pymysql.connections.Connection, defaults: Path) -> SnapshotFacts:
        """One try: lock (<= 1 s), our snapshot, the tool's snapshot, unlock, judge."""
        self._attempt_stack = contextlib.ExitStack()
        snapshot = self._attempt_stack.enter_context(connect(self.conn, self.database))
        self._snapshot = snapshot
        with snapshot.cursor() as cur:
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        if self.gated:  # started, and waiting for its credentials, before the lock
            self.process = self._launch(defaults)
            gate = self._open_gate()
        requested = time.monotonic()
        lock_error = self._lock(lock)
        locked = lock_error is None
        opened_under_lock = False
        try:
            with snapshot.cursor() as cur:
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                facts = SnapshotFacts(consistent_at=datetime.now(UTC))
                self._ours = snapshot_coordinates(cur)
            if self._ours is not None:
                facts.binlog_file, facts.binlog_position = self._ours.file, self._ours.position
                facts.gtid = self._ours.gtid
            if self.gated:
                self._release_gate(gate)
            else:
                self.process = self._launch(defaults)
            if locked:
                opened_under_lock = self._wait_snapshot_opened(requested + self.lock_limit_seconds)
        finally:
            if locked:
                with lock.cursor() as cur:
                    cur.execute("UNLOCK TABLES")
        facts.global_lock_ms = round(1000 * (time.monotonic() - requested)) if locked else 0
        self._judge(facts, locked, lock_error, opened_under_lock)
        return facts

    def _lock(self, lock: pymysql.connections.Connection) -> str | None:
        """FLUSH TABLES WITH READ LOCK, waiting at most 1 s; the error text when refused."""
        with lock.cursor() as cur:
            cur.execute("SET SESSION lock_wait_timeout = 1")
            try:
                cur.execute("FLUSH TABLES WITH READ LOCK")
            except pymysql.err.MySQLError as exc:
                return f"FLUSH TABLES WITH READ LOCK failed: {exc.args[-1]}"
        return None

    def _wait_snapshot_opened(self, deadline: float) -> bool:
        """True when the tool reported its snapshot open before `deadline`."""
        assert self.process is not None and self.stderr is not None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self.stderr.seen.wait(timeout=min(remaining, 0.005)):
                return True
            if self.process.poll() is not None:
                return self.stderr.seen.is_set()

    def _judge(
        self, facts: SnapshotFacts, locked: bool, lock_error: str | None, opened: bool
    ) -> None:
        """Decide whether this attempt's facts are exact (see the class docstring)."""
        if opened:  # confirm() checks the tool's coordinates too, when there are any
            facts.exact, facts.exact_by = True, "global-lock"
            return
        if self._ours is not None and self.coordinates_in_header:
            theirs = self._read_header()
            if theirs is not None:
                facts.prove(self._ours, theirs)
            elif self.process is not None and self.process.poll() is None:
                self._retry = False  # a slow dump: its coordinates are compared at the end
                facts.mark_inexact(
                    f"the dump's coordinates did not arrive within {self.header_timeout_seconds:g}"
                    " s (it is compared when the dump finishes)"
                )
            else:
                facts.mark_inexact("the dump recorded no binlog coordinates")
            return
        if self._ours is None:
            cause = (
                lock_error
                if lock_error
                else f"the dump did not open its snapshot within the {self.lock_limit_seconds:g} "
                "s lock window"
            )
            facts.mark_inexact(
                f"log_bin is OFF, so only a global lock can prove the snapshot, and {cause}"
            )
        else:
            facts.mark_inexact(
                f"{lock_error or 'the tool did not open its snapshot within the lock window'};"
                " the tool's coordinates are compared when it finishes"
            )

    def _launch(self, defaults: Path) -> subprocess.Popen[bytes]:
        """Start the dump tool (tasks.mydumper runs another tool through this hook).

        mariadb-dump reads its credentials from a FIFO (`--defaults-extra-file`): it starts,
        then waits there until `_release_gate`, so its start-up is not inside the lock.
        """
        gate = defaults.parent / f"gate-{time.monotonic_ns()}.cnf"
        os.mkfifo(gate, 0o600)
        self._attempt_stack.callback(gate.unlink, missing_ok=True)
        self._gate = gate
        process = spawn(
            dump_command(self.binary, gate, self.database, self._with_coordinates),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=1 << 20,  # full 1 MiB reads: raw pipe reads return 64 KiB at most
        )
        self._attempt_stack.callback(stop, process)
        assert process.stderr is not None
        self.stderr = StderrTail(process.stderr, self.snapshot_marker)
        self.stderr.start()
        return process

    def _open_gate(self, timeout_s: float = 120) -> int | None:
        """The FIFO's write end, once the tool has opened it (None if the tool exited)."""
        assert self.process is not None and self._gate is not None
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return os.open(self._gate, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                    raise
            if self.process.poll() is not None:
                return None
            if time.monotonic() > deadline:
                raise ExternalCommandError(
                    f"{Path(self.binary).name} did not start within {timeout_s:.0f} s"
                )
            time.sleep(0.002)

    def _release_gate(self, gate: int | None) -> None:
        """Hand the waiting tool its credentials: it connects and opens its snapshot."""
        if gate is None:
            return
        data = self.conn.defaults_file_text().encode()
        try:
            os.set_blocking(gate, True)
            while data:
                data = data[os.write(gate, data) :]
        except BrokenPipeError:
            pass  # the tool exited; its stderr says why
        finally:
            os.close(gate)

    def _read_header(self) -> BinlogCoordinates | None:
        """Read the dump's first bytes up to its `CHANGE MASTER` comment (kept for the stream)."""
        assert self.process is not None and self.process.stdout is not None
        fd = self.process.stdout.fileno()
        header = bytearray()
        deadline = time.monotonic() + self.header_timeout_seconds
        while len(header) < HEADER_LIMIT and time.monotonic() < deadline:
            if not select.select([fd], [], [], 0.5)[0]:
                continue
            data = os.read(fd, 65536)
            if not data:
                break
            header += data
            if _CHANGE_MASTER.search(header):
                break
        self.stream = DumpStream(bytes(header), self.process.stdout, scan=True)
        return self.stream.position

    def output(self) -> IO[bytes]:
        """The dump's stdout (with the header this object already read)."""
        if self.stream is None:
            assert self.process is not None and self.process.stdout is not None
            self.stream = DumpStream(b"", self.process.stdout, scan=self._ours is not None)
        return cast(IO[bytes], self.stream)

    def confirm(self, theirs: BinlogCoordinates | None = None) -> SnapshotFacts:
        """After the tool succeeded, prove the facts by its recorded coordinates.

        `theirs` comes from the tool's metadata (mydumper); for mariadb-dump they are the
        header's file/position and the GTID from the end of the stream. Without any (log_bin
        off), the lock proof (or its absence) stands.
        """
        assert self.facts is not None
        if self._ours is None:
            return self.facts
        if theirs is None and self.stream is not None and self.stream.position is not None:
            theirs = dataclasses.replace(self.stream.position, gtid=self.stream.gtid)
        if theirs is not None:
            self.facts.prove(self._ours, theirs)
        return self.facts

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
        """Stop the tool if it still runs."""
        stop(self.process)


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
