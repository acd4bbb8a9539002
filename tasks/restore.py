"""Restoring a backup into a scratch target: stream download -> sha256 -> decompress -> load.

One region's copy is read once, in a background thread that hashes every byte; the main
thread decompresses and splits the SQL into statements; one or more `mariadb`/`mysql`
client processes (credentials in a 0600 `--defaults-extra-file`, never argv) load them into
a scratch database. When the hash or size differs from the manifest at the end of the
stream (or the stream breaks earlier and the rest of the object proves corrupt), the load is
abandoned with BackupVerificationError and the caller drops the scratch database.

Parallel load: INSERT statements are spread over N client connections; every other
statement (DDL, triggers, views, routines) runs on connection 0 in dump order, with
barriers so that a table exists before rows go to it and no trigger or view is created
while other connections still insert. Session settings (`SET ...`) go to every connection.

Engines: `RESTORERS` maps `manifest.engine` to a restore function. `mysqldump` is built
here; `mydumper` and `physical` plug in by adding a restorer (a physical restore returns a
`RestoreTarget` on a throwaway server instead of a scratch database).
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import re
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, Protocol

import pymysql
import zstandard
from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff
from prefect.transactions import get_transaction

from blocks.mysql import MySQLConnection
from tasks.backup import retry_transient
from tasks.catalog import scan_backups
from tasks.child_process import run as run_tool
from tasks.child_process import spawn
from tasks.compression import TruncatedStream, new_decompressor
from tasks.drill import (
    MARKER_TABLE,
    BackupChoice,
    DrillMarker,
    check_scratch_target,
    select_backup,
)
from tasks.errors import (
    BackupVerificationError,
    ConfigurationError,
    RestoreLoadError,
    RestoreTargetRefused,
    StorageError,
)
from tasks.manifest import BackupManifest, Engine, StoredObject
from tasks.mydumper import restore_mydumper
from tasks.mysql import (
    connect,
    defaults_file,
    find_tool,
    one_row,
    quote_composed_name,
    quote_identifier,
)
from tasks.packet_limit import fit_packet_limit
from tasks.physical import (
    ScratchServer,
    check_scratch_server,
    create_scratch_server,
    restore_physical,
)
from tasks.storage import READ_CHUNK, ObjectStore

READ_AHEAD = 4
CHARSET_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
LOADER_QUEUE = 8
BARRIER_TIMEOUT_S = 6 * 3600
_EOF = object()
_CLOSE = object()


# -- targets -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreTarget:
    """Where restored data can be validated; `scratch-server` is for physical restores."""

    kind: Literal["scratch-database", "scratch-server"]
    connection: MySQLConnection
    database: str
    scratch_server: ScratchServer | None = None


@dataclass
class RestoreStats:
    """What one restore of one region's copy did, and where its time went."""

    region: str
    objects: list[str]
    compressed_bytes: int = 0
    uncompressed_bytes: int = 0
    statements: int = 0
    connections: int = 1
    download_s: float = 0.0
    decompress_s: float = 0.0
    load_s: float = 0.0
    ignored_statements: list[str] = field(default_factory=list)
    binlog_skipped: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.download_s + self.decompress_s + self.load_s


# -- scratch databases -------------------------------------------------------------------------


def read_drill_markers(
    server: MySQLConnection, names: Sequence[str] | None = None
) -> dict[str, DrillMarker | None]:
    """Existing databases among `names` (default: every `drill_%`) with their drill marker."""
    with connect(server) as connection, connection.cursor() as cur:
        cur.execute("SELECT schema_name FROM information_schema.schemata")
        present = [str(row[0]) for row in cur.fetchall()]
        wanted = {n.lower() for n in names} if names is not None else None
        found = [
            n
            for n in present
            if (n.lower() in wanted if wanted is not None else n.lower().startswith("drill_"))
        ]
        result: dict[str, DrillMarker | None] = {}
        for name in found:
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.tables"
                " WHERE table_schema = %s AND table_name = %s",
                (name, MARKER_TABLE),
            )
            if not int(one_row(cur)[0]):
                result[name] = None
                continue
            cur.execute(
                f"SELECT drill_run, source, backup_id, created_at, keep_until, status"
                f" FROM {quote_identifier(name)}.{MARKER_TABLE} ORDER BY created_at DESC LIMIT 1"
            )
            row = cur.fetchone()
            result[name] = (
                DrillMarker(
                    drill_run=str(row[0]),
                    source=str(row[1]),
                    backup_id=str(row[2]),
                    created_at=row[3].replace(tzinfo=UTC),
                    keep_until=row[4].replace(tzinfo=UTC) if row[4] else None,
                    status=str(row[5]),
                )
                if row
                else None
            )
    return result


def create_scratch_database(
    server: MySQLConnection,
    name: str,
    marker: DrillMarker,
    protected: Sequence[str],
    charset: str | None = None,
    collation: str | None = None,
) -> None:
    """Create `name` with its marker table; refuse (RestoreTargetRefused) a database not ours.

    The database gets the source's default `charset` and `collation` (utf8mb4 when the
    manifest does not record them), so restored objects keep the database collation they
    were created with. A previous drill's database of the same name (marked, keep window
    over) is replaced.
    """
    existing = read_drill_markers(server, [name])
    check_scratch_target(name, protected, existing, marker.created_at)
    quoted = quote_composed_name(name, "scratch_database")
    with connect(server) as connection, connection.cursor() as cur:
        if existing:
            cur.execute(f"DROP DATABASE {quoted}")
        cur.execute(f"CREATE DATABASE {quoted} {database_defaults_sql(charset, collation)}")
        cur.execute(
            f"CREATE TABLE {quoted}.{MARKER_TABLE} (drill_run VARCHAR(64) NOT NULL,"
            " source VARCHAR(64) NOT NULL, backup_id VARCHAR(64) NOT NULL,"
            " created_at DATETIME(6) NOT NULL, keep_until DATETIME(6) NULL,"
            " status VARCHAR(16) NOT NULL) ENGINE=InnoDB"
            " COMMENT='created by vibeops restore-drill; dropped by the drill or cleanup-drills'"
        )
        cur.execute(
            f"INSERT INTO {quoted}.{MARKER_TABLE} VALUES (%s, %s, %s, %s, %s, %s)",
            (
                marker.drill_run,
                marker.source,
                marker.backup_id,
                marker.created_at.astimezone(UTC).replace(tzinfo=None),
                marker.keep_until.astimezone(UTC).replace(tzinfo=None)
                if marker.keep_until
                else None,
                marker.status,
            ),
        )


def database_defaults_sql(charset: str | None, collation: str | None) -> str:
    """`CHARACTER SET x COLLATE y` for CREATE DATABASE; names checked (they come from a file)."""
    for what, value in (("character set", charset), ("collation", collation)):
        if value is not None and not CHARSET_NAME.match(value):
            raise ConfigurationError(
                f"the manifest's database {what} {value!r} is not a character set or collation "
                "name (letters, digits, '_'): the manifest is damaged"
            )
    clause = f"CHARACTER SET {charset or 'utf8mb4'}"
    return clause + (f" COLLATE {collation}" if collation else "")


def update_marker(
    server: MySQLConnection, name: str, status: str, keep_until: datetime | None = None
) -> None:
    """Record the drill's outcome (and keep window) in the scratch database's marker."""
    with connect(server) as connection, connection.cursor() as cur:
        cur.execute(
            f"UPDATE {quote_identifier(name)}.{MARKER_TABLE} SET status = %s, keep_until = %s",
            (status, keep_until.astimezone(UTC).replace(tzinfo=None) if keep_until else None),
        )


def drop_scratch_database(server: MySQLConnection, name: str, owned: bool = False) -> bool:
    """Drop a drill's scratch database; returns whether it existed.

    Args:
        owned: this run created it (dropped even if a tampered dump removed the marker).

    Raises:
        RestoreTargetRefused: it exists, carries no drill marker and this run did not create it.
    """
    existing = read_drill_markers(server, [name])
    if not existing:
        return False
    if not owned and next(iter(existing.values())) is None:
        raise RestoreTargetRefused(
            f"will not drop {name!r}: it has no drill marker table, so a drill did not create it"
        )
    with connect(server) as connection, connection.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {quote_identifier(name)}")
    return True


def can_skip_binlog(server: MySQLConnection) -> bool:
    """True when the user may `SET SESSION sql_log_bin=0` (keeps a drill out of replicas)."""
    with connect(server) as connection, connection.cursor() as cur:
        try:
            cur.execute("SET SESSION sql_log_bin = 0")
        except pymysql.err.MySQLError:
            return False
    return True


# -- download ----------------------------------------------------------------------------------


class _Download(threading.Thread):
    """Reads one object in the background, hashing every byte; chunks come out of a queue."""

    def __init__(self, store: ObjectStore, key: str, chunk_size: int = READ_CHUNK) -> None:
        super().__init__(name=f"download-{store.region}", daemon=True)
        self.store = store
        self.key = key
        self.chunk_size = chunk_size
        self.chunks: queue.Queue[object] = queue.Queue(maxsize=READ_AHEAD)
        self.digest = hashlib.sha256()
        self.size = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.wait_s = 0.0

    def run(self) -> None:
        try:
            for chunk in self.store.iter_chunks(self.key, self.chunk_size):
                self.digest.update(chunk)
                self.size += len(chunk)
                while not self.stop.is_set():
                    try:
                        self.chunks.put(chunk, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if self.stop.is_set():
                    return
        except BaseException as exc:
            self.error = exc
        finally:
            with contextlib.suppress(queue.Full):
                self.chunks.put(_EOF, timeout=5)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            started = time.perf_counter()
            item = self.chunks.get(timeout=3600)
            self.wait_s += time.perf_counter() - started
            if item is _EOF:
                if self.error is not None:
                    raise StorageError(
                        f"region {self.store.region}: reading {self.store.uri(self.key)} failed:"
                        f" {self.error}"
                    ) from self.error
                return
            yield item  # type: ignore[misc]

    def drain(self) -> None:
        """Read the rest of the object only to finish its hash."""
        for _ in self:
            pass

    def cancel(self) -> None:
        self.stop.set()


def _check_object(download: _Download, obj: StoredObject) -> None:
    sha = download.digest.hexdigest()
    if download.size != obj.size or sha != obj.sha256:
        raise BackupVerificationError(
            f"{download.store.uri(download.key)}: sha256 {sha[:16]}… ({download.size} bytes) "
            f"differs from the manifest's {obj.sha256[:16]}… ({obj.size} bytes): this copy is "
            "corrupt"
        )


# -- loaders -----------------------------------------------------------------------------------


class _Client:
    """One `mariadb`/`mysql` client process, fed through a queue by a writer thread."""

    def __init__(self, argv: list[str], index: int) -> None:
        self.index = index
        self.process = spawn(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
        )
        self.queue: queue.Queue[object] = queue.Queue(maxsize=LOADER_QUEUE)
        self.broken = threading.Event()
        self.tokens: set[str] = set()
        self.cond = threading.Condition()
        self.stderr = bytearray()
        self._barriers = 0
        self._threads = [
            threading.Thread(target=self._write, daemon=True, name=f"load-{index}"),
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _write(self) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            while (item := self.queue.get()) is not _CLOSE:
                stdin.write(item)  # type: ignore[call-overload]
            stdin.close()
        except OSError:
            self.broken.set()
            while self.queue.get() is not _CLOSE:
                pass

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self.cond:
                self.tokens.add(line.strip().decode(errors="replace"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr += line
            del self.stderr[:-8192]

    def failed(self) -> bool:
        return self.broken.is_set() or self.process.poll() not in (None, 0)

    def error(self) -> RestoreLoadError:
        """The client's failure with the server's full message.

        A broken pipe is noticed before the client has printed its error and exited: wait
        for the exit and for the stderr reader to drain, so the cause (e.g. error 2006) is kept.
        """
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self._threads[2].join(timeout=10)
        code = self.process.poll()
        text = self.stderr.decode(errors="replace").strip()
        return RestoreLoadError(
            f"the SQL client on load connection {self.index} failed"
            + (f" (exit {code})" if code is not None else "")
            + (f": {text[-600:]}" if text else "")
        )

    def send(self, data: bytes) -> float:
        """Queue `data`; returns the seconds spent waiting for the client to catch up."""
        started = time.perf_counter()
        while True:
            if self.failed():
                raise self.error()
            try:
                self.queue.put(data, timeout=0.5)
                return time.perf_counter() - started
            except queue.Full:
                continue

    def barrier(self) -> float:
        """Wait until everything sent so far has been executed; returns the wait."""
        self._barriers += 1
        token = f"vibeops-barrier-{self.index}-{self._barriers}"
        started = time.perf_counter()
        self.send(f"SELECT '{token}';\n".encode())
        deadline = time.monotonic() + BARRIER_TIMEOUT_S
        with self.cond:
            while token not in self.tokens:
                if self.process.poll() is not None or self.broken.is_set():
                    raise self.error()
                if time.monotonic() > deadline:
                    raise RestoreLoadError(
                        f"load connection {self.index} did not finish its statements within "
                        f"{BARRIER_TIMEOUT_S}s"
                    )
                self.cond.wait(timeout=0.5)
            self.tokens.discard(token)
        return time.perf_counter() - started

    def close(self, timeout_s: float) -> None:
        """Send end-of-input and wait for the client to exit cleanly."""
        with contextlib.suppress(queue.Full):
            self.queue.put(_CLOSE, timeout=timeout_s)
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            self.kill()
            raise RestoreLoadError(
                f"load connection {self.index} did not finish within {timeout_s:.0f}s"
            ) from exc
        for thread in self._threads[1:]:
            thread.join(timeout=10)
        if code != 0 or self.broken.is_set():
            raise self.error()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(_CLOSE)


_INSERT = re.compile(rb"^(?:INSERT(?:\s+IGNORE)?|REPLACE)\s+INTO\s+`((?:[^`]|``)+)`", re.I)
_BROADCAST = re.compile(  # /*M!101100 SET ...system_versioning_insert_history... too
    rb"^(?:/\*M?!\d+\s+SET\s|SET\s|COMMIT\s*;|BEGIN\s*;|START\s+TRANSACTION)", re.I
)
_CLIENT_COMMAND = re.compile(rb"^/\*M!\d+\\")  # MariaDB's `/*M!999999\- enable the sandbox mode */`
_LOCKS = re.compile(rb"^(?:LOCK\s+TABLES\s|UNLOCK\s+TABLES\s*;)", re.I)
# Statements that would leave the scratch database or change the server (MySQL 8 dumps set
# @@GLOBAL.GTID_PURGED): dropped and reported.
# mysqldump brackets routines with `ALTER DATABASE `src` ...` (their database collation);
# without the name it alters the load's own default database, the scratch copy.
_ALTER_NAMED_DATABASE = re.compile(
    rb"^((?:/\*!\d+\s+)?ALTER\s+(?:DATABASE|SCHEMA))\s+`(?:[^`]|``)+`", re.I
)
_OTHER_DATABASE = re.compile(
    rb"^(?:/\*!\d+\s+)?(?:USE\s|CREATE\s+(?:DATABASE|SCHEMA)\b|DROP\s+(?:DATABASE|SCHEMA)\b"
    rb"|SET\s+(?:@@)?GLOBAL\b)",
    re.I,
)
_DELIMITER = re.compile(rb"^DELIMITER\s+(\S+)\s*$", re.I)


class StatementRouter:
    """Splits a mysqldump SQL stream into statements and sends them to the load clients.

    Never lets a statement switch or create databases (`USE`, `CREATE/DROP DATABASE`):
    they are dropped and listed in `ignored`, so a restore cannot leave its scratch database.
    """

    def __init__(self, clients: Sequence[_Client]) -> None:
        self.clients = list(clients)
        self.control = self.clients[0]
        self.buffer = bytearray()
        self.current: _Client | None = None  # receiving the rest of an INSERT
        self.delimiter = b";"
        self.in_statement = False  # a non-INSERT statement continues on the next line
        self.skipping = False  # inside a statement that is being dropped
        self.control_pending = False  # DDL sent to control since its last barrier
        self.dirty: set[int] = set()  # other clients given rows since the last barrier
        self.ignored: list[str] = []
        self.statements = 0
        self.load_wait = 0.0
        self._next = 0

    def feed(self, data: bytes) -> None:
        self.buffer += data
        self._route(final=False)

    def finish(self) -> None:
        if self.buffer and not self.buffer.endswith(b"\n"):
            self.buffer += b"\n"
        self._route(final=True)
        if self.current is not None or self.in_statement or self.delimiter != b";":
            raise RestoreLoadError("the dump ends inside a statement (truncated SQL)")

    # routing

    def _send(self, client: _Client, data: bytes) -> None:
        self.load_wait += client.send(data)

    def _pick(self) -> _Client:
        if len(self.clients) == 1:
            return self.control
        loads = [c.queue.qsize() for c in self.clients]
        best = min(loads)
        for offset in range(len(self.clients)):
            index = (self._next + offset) % len(self.clients)
            if loads[index] == best:
                self._next = index + 1
                return self.clients[index]
        return self.control

    def _before_ddl(self) -> None:
        if self.dirty:
            for index in sorted(self.dirty):
                self.load_wait += self.clients[index].barrier()
            self.dirty.clear()
        self.control_pending = True

    def _route(self, final: bool) -> None:
        buf = self.buffer
        pos = 0
        size = len(buf)
        while pos < size:
            if self.current is not None:
                end = buf.find(b";\n", pos)
                if end < 0:
                    cut = size - 1 if buf.endswith(b";") else size
                    if cut > pos:
                        self._send(self.current, bytes(buf[pos:cut]))
                    pos = cut
                    break
                self._send(self.current, bytes(buf[pos : end + 2]))
                self.current = None
                pos = end + 2
                continue
            newline = buf.find(b"\n", pos)
            if not self.in_statement and self.delimiter == b";":
                head = bytes(buf[pos : pos + 256])
                match = _INSERT.match(head)
                if match and (newline >= 0 or len(head) == 256):
                    target = self._pick()
                    if target is not self.control and self.control_pending:
                        self.load_wait += self.control.barrier()
                        self.control_pending = False
                    if target is not self.control:
                        self.dirty.add(target.index)
                    self.current = target
                    self.statements += 1
                    continue
            if newline < 0:
                break
            line = bytes(buf[pos : newline + 1])
            pos = newline + 1
            self._route_line(line)
        del buf[:pos]
        if final and buf:
            raise RestoreLoadError("the dump ends inside a statement (truncated SQL)")

    def _route_line(self, line: bytes) -> None:
        stripped = line.strip()
        if self.delimiter != b";":
            self.control_pending = True
            self._send(self.control, line)
            match = _DELIMITER.match(stripped)
            if match:
                self.delimiter = match.group(1)
            return
        if self.skipping:
            self.skipping = not stripped.endswith(b";")
            return
        if self.in_statement:
            self._send(self.control, line)
            self.in_statement = not stripped.endswith(b";")
            return
        if not stripped or stripped.startswith(b"--"):
            return
        if _CLIENT_COMMAND.match(stripped):
            for client in self.clients:
                self._send(client, line)
            return
        match = _DELIMITER.match(stripped)
        if match:
            self._before_ddl()
            self._send(self.control, line)
            self.delimiter = match.group(1)
            return
        self.statements += 1
        if _ALTER_NAMED_DATABASE.match(stripped):
            stripped = _ALTER_NAMED_DATABASE.sub(rb"\1", stripped)
            line = stripped + b"\n"
        if _OTHER_DATABASE.match(stripped):
            self.ignored.append(stripped[:120].decode(errors="replace"))
            self.skipping = not stripped.endswith(b";")
            return
        if len(self.clients) > 1 and _LOCKS.match(stripped):
            return  # LOCK TABLES would serialise the other connections
        if _BROADCAST.match(stripped) and stripped.endswith(b";"):
            for client in self.clients:
                self._send(client, line)
            return
        self._before_ddl()
        self._send(self.control, line)
        self.in_statement = not stripped.endswith(b";")


def client_command(
    binary: str, defaults_path: Path, database: str, skip_binlog: bool, sandbox: bool
) -> list[str]:
    """argv of one load client (no secrets: they are in the defaults file)."""
    argv = [
        binary,
        f"--defaults-extra-file={defaults_path}",
        "--batch",
        "--skip-column-names",
        "--unbuffered",
        "--binary-mode",
        "--max-allowed-packet=1G",
        "--default-character-set=utf8mb4",
        f"--database={database}",
    ]
    if sandbox:
        argv.append("--sandbox")
    if skip_binlog:
        argv.append("--init-command=SET SESSION sql_log_bin=0")
    return argv


_SANDBOX: dict[str, bool] = {}


def client_supports_sandbox(binary: str) -> bool:
    """MariaDB clients >= 10.5.25/10.11.8 refuse shell and file commands with --sandbox."""
    if binary not in _SANDBOX:
        out = run_tool([binary, "--help"], capture_output=True, text=True, timeout=30)
        _SANDBOX[binary] = "--sandbox" in out.stdout
    return _SANDBOX[binary]


class ProgressFn(Protocol):
    def __call__(self, done: int, total: int) -> None: ...


def restore_logical_dump(
    manifest: BackupManifest,
    store: ObjectStore,
    server: MySQLConnection,
    database: str,
    connections: int = 1,
    on_progress: ProgressFn | None = None,
    load_timeout_s: float = 6 * 3600,
) -> RestoreStats:
    """Stream a mysqldump backup from one region into `database` on `server`.

    Raises:
        BackupVerificationError: the copy's bytes differ from the manifest (corrupt copy).
        StorageError: the region could not be read.
        RestoreLoadError: the SQL did not load, although the copy matches the manifest.
    """
    quote_identifier(database)
    objects = [o for o in manifest.objects if ".sql" in o.name]
    if not objects:
        raise ConfigurationError(
            f"backup {manifest.backup_id} lists no .sql object to restore: {manifest.objects}"
        )
    binary = find_tool("mariadb", "mysql", package="mariadb-client")
    skip_binlog = can_skip_binlog(server)
    total = sum(o.size for o in objects)
    stats = RestoreStats(
        region=store.region,
        objects=[store.uri(manifest.object_key(o.name)) for o in objects],
        connections=connections,
        binlog_skipped=skip_binlog,
    )
    with fit_packet_limit(server, manifest, stats.notes), defaults_file(server) as cnf:
        argv = client_command(binary, cnf, database, skip_binlog, client_supports_sandbox(binary))
        clients = [_Client(argv, i) for i in range(connections)]
        try:
            router = StatementRouter(clients)
            for obj in objects:
                _restore_object(store, manifest, obj, router, stats, total, on_progress)
            router.finish()
            started = time.perf_counter()
            for client in clients:
                client.close(load_timeout_s)
            stats.load_s += router.load_wait + time.perf_counter() - started
            stats.statements = router.statements
            stats.ignored_statements = router.ignored
        finally:
            for client in clients:
                client.kill()
    return stats


def _restore_object(
    store: ObjectStore,
    manifest: BackupManifest,
    obj: StoredObject,
    router: StatementRouter,
    stats: RestoreStats,
    total: int,
    on_progress: ProgressFn | None,
) -> None:
    download = _Download(store, manifest.object_key(obj.name))
    download.start()
    decompressor = new_decompressor(manifest.codec)
    base = stats.compressed_bytes
    try:
        try:
            for chunk in download:
                started = time.perf_counter()
                out = decompressor.decompress(chunk)
                routed_wait = router.load_wait
                router.feed(out)
                stats.decompress_s += (
                    time.perf_counter() - started - (router.load_wait - routed_wait)
                )
                stats.compressed_bytes = base + download.size
                if on_progress is not None:
                    on_progress(stats.compressed_bytes, total)
            if not decompressor.complete:
                raise TruncatedStream(f"{manifest.codec} stream ends inside a frame")
        except (RestoreLoadError, zstandard.ZstdError, zlib.error, ValueError) as exc:
            # Is the copy corrupt (try the other region) or the backup itself bad?
            download.drain()
            _check_object(download, obj)
            if isinstance(exc, RestoreLoadError):
                raise
            raise RestoreLoadError(
                f"{download.store.uri(download.key)} matches the manifest but does not "
                f"decompress: {exc}"
            ) from exc
        _check_object(download, obj)
    finally:
        download.cancel()
        stats.download_s += download.wait_s
        stats.uncompressed_bytes += decompressor.bytes_out


Restorer = Callable[..., RestoreStats]
RESTORERS: dict[Engine, Restorer] = {
    "mysqldump": restore_logical_dump,
    "mydumper": restore_mydumper,
    "physical": restore_physical,
}


def restorer_for(manifest: BackupManifest) -> Restorer:
    """The restore function of the backup's engine, or ConfigurationError naming the gap."""
    try:
        return RESTORERS[manifest.engine]
    except KeyError:
        raise ConfigurationError(
            f"backup {manifest.backup_id} was taken with engine {manifest.engine!r}, which "
            f"restore-drill cannot restore yet (supported: {', '.join(RESTORERS)})"
        ) from None


# -- Prefect tasks -----------------------------------------------------------------------------


class _Progress:
    """A throttled Prefect progress artifact for one restore."""

    def __init__(self, description: str) -> None:
        self.artifact_id = create_progress_artifact(progress=0.0, description=description)
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last >= 1.0:
            self.last = now
            percent = min(99.0, 100.0 * done / max(total, 1))
            update_progress_artifact(artifact_id=self.artifact_id, progress=percent)  # type: ignore[arg-type]

    def close(self) -> None:
        update_progress_artifact(artifact_id=self.artifact_id, progress=100.0)  # type: ignore[arg-type]


@task(cache_policy=NO_CACHE, name="create-scratch-database")
def prepare_scratch_target(
    server: MySQLConnection,
    name: str,
    marker: DrillMarker,
    protected: list[str],
    engine: Engine = "mysqldump",
    database: str = "",
    charset: str | None = None,
    collation: str | None = None,
) -> RestoreTarget:
    """Create the scratch database (marked as the drill's); undone by the transaction's rollback.

    It gets the source database's `charset` and `collation` (from the manifest).

    For a `physical` backup: a throwaway server's folder and port instead (`database` is the
    backed-up database, which the server will hold); the server starts during the restore.
    """
    transaction = get_transaction()
    if engine == "physical":
        scratch = create_scratch_server(name, protected_ports=[server.port])
        try:
            check_scratch_server(scratch, server)
        except BaseException:
            scratch.remove()
            raise
        if transaction is not None:
            transaction.set("scratch_server", scratch)
        get_run_logger().info(
            "throwaway server for %s: %s, port %s", name, scratch.workdir, scratch.port
        )
        return RestoreTarget(
            kind="scratch-server",
            connection=scratch.connection(database),
            database=database,
            scratch_server=scratch,
        )
    create_scratch_database(server, name, marker, protected, charset, collation)
    if transaction is not None:
        transaction.set("scratch", (server, name))
    get_run_logger().info("created scratch database %s on %s:%s", name, server.host, server.port)
    return RestoreTarget(kind="scratch-database", connection=server, database=name)


@prepare_scratch_target.on_rollback
def _discard_scratch(transaction) -> None:  # type: ignore[no-untyped-def]
    scratch = transaction.get("scratch_server", None)
    if scratch is not None:
        scratch.remove()
        return
    server, name = transaction.get("scratch")
    drop_scratch_database(server, name, owned=True)


@task(cache_policy=NO_CACHE, name="restore-backup-copy")
def restore_copy(
    manifest: BackupManifest,
    store: ObjectStore,
    target: RestoreTarget,
    connections: int,
) -> RestoreStats:
    """Stream one region's copy into the scratch target (verifying its sha256 on the way)."""
    logger = get_run_logger()
    restore = restorer_for(manifest)
    progress = _Progress(f"Restoring {manifest.backup_id} from {store.region}")
    server = {"scratch_server": target.scratch_server} if target.scratch_server else {}
    try:
        stats = restore(
            manifest,
            store,
            target.connection,
            target.database,
            connections=connections,
            on_progress=progress,
            **server,
        )
    finally:
        progress.close()
    logger.info(
        "restored %s from %s: %.1f MB -> %.1f MB, %d statements over %d connection(s); "
        "download %.1fs, decompress %.1fs, load %.1fs%s",
        manifest.backup_id,
        store.region,
        stats.compressed_bytes / 1e6,
        stats.uncompressed_bytes / 1e6,
        stats.statements,
        stats.connections,
        stats.download_s,
        stats.decompress_s,
        stats.load_s,
        "; ignored " + "; ".join(stats.ignored_statements) if stats.ignored_statements else "",
    )
    for note in stats.notes:
        logger.info("%s", note)
    return stats


@task(cache_policy=NO_CACHE, name="mark-scratch-database")
def keep_scratch(server: MySQLConnection, name: str, status: str, keep_for: timedelta) -> datetime:
    """Mark the scratch database as kept until now + `keep_for` (cleanup-drills drops it)."""
    until = datetime.now(UTC) + keep_for
    update_marker(server, name, status, until)
    return until


@task(cache_policy=NO_CACHE, name="drop-scratch-database", retries=2, retry_delay_seconds=2)
def teardown_scratch(server: MySQLConnection, name: str, owned: bool) -> bool:
    """Drop the scratch database (only a drill's own); returns whether anything was dropped."""
    dropped = drop_scratch_database(server, name, owned=owned)
    if dropped:
        get_run_logger().info("dropped scratch database %s", name)
    return dropped


@task(cache_policy=NO_CACHE, name="stop-throwaway-server", retries=1, retry_delay_seconds=2)
def teardown_scratch_server(target: RestoreTarget) -> str:
    """Stop a physical drill's throwaway server and delete its folder; says what it did."""
    scratch = target.scratch_server
    if scratch is None:
        return "no throwaway server"
    was_running = scratch.running
    scratch.remove()
    if scratch.running or scratch.workdir.exists():
        raise RestoreLoadError(f"throwaway server in {scratch.workdir} could not be removed")
    done = (
        f"throwaway server on port {scratch.port} {'stopped' if was_running else 'not running'}"
        f", {scratch.workdir} deleted"
    )
    get_run_logger().info("%s", done)
    return done


@dataclass
class BackupSearch:
    """The backup a drill will restore, and what the regions looked like."""

    choice: BackupChoice | None
    unreachable: dict[str, str] = field(default_factory=dict)


@task(
    cache_policy=NO_CACHE,
    name="find-committed-backup",
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
)
def find_backup(
    stores: dict[str, ObjectStore],
    order: list[str],
    source: str,
    selector: str,
    kind: str = "mysql",
) -> BackupSearch:
    """Read every region's catalog; pick the backup (`latest`, an id or a day).

    A region that cannot be listed is recorded as unreachable; StorageError only when none can.
    """
    logger = get_run_logger()
    committed: dict[str, list[BackupManifest]] = {}
    uncommitted: set[str] = set()
    unreachable: dict[str, str] = {}
    for region in order:
        try:
            entries = scan_backups(stores[region], source, kind)
        except Exception as exc:
            unreachable[region] = f"{type(exc).__name__}: {exc}"[:400]
            logger.warning("region %s cannot be listed: %s", region, exc)
            continue
        committed[region] = [e.manifest for e in entries if e.manifest is not None]
        uncommitted |= {e.backup_id for e in entries if e.manifest is None}
    if len(unreachable) == len(order):
        raise StorageError("no backup region could be listed: " + "; ".join(unreachable.values()))
    choice = select_backup(committed, selector, order, uncommitted)
    if choice is not None:
        logger.info(
            "restoring %s (consistent at %s) from %s%s",
            choice.manifest.backup_id,
            choice.manifest.consistent_at.isoformat(),
            " then ".join(choice.regions),
            f"; skipped uncommitted {', '.join(choice.skipped)}" if choice.skipped else "",
        )
    return BackupSearch(choice=choice, unreachable=unreachable)


@task(cache_policy=NO_CACHE, name="list-drill-databases")
def list_drill_databases(server: MySQLConnection) -> dict[str, DrillMarker | None]:
    """Every `drill_*` database on the drill server with its marker (None: not a drill's)."""
    return read_drill_markers(server)
