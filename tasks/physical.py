"""Engine `physical`: a copy of the data files (mariadb-backup, or xtrabackup for MySQL 8).

Backup: `mariadb-backup --backup --stream=xbstream` of the database plus the `mysql` schema
(so a server can start on it) goes to stdout and through the usual compress + fan-out +
verification. The worker must be on the database host: the tool reads the datadir.
The manifest's row counts and checksums come from our own snapshot, opened while the tool
holds BACKUP STAGE BLOCK_COMMIT (no commit can happen then), so they describe the backup's
consistent point. That is *proven*, not assumed: with a binary log, our snapshot's binlog
position must equal the one the tool reports; without one, our snapshot must have opened
before the tool logged the release of that stage. Otherwise the facts are marked inexact.

Restore (drills): extract (`mbstream -x`) into a private datadir, `--prepare` it, and start
a throwaway server on it: its own folder, a free port, its own socket, events and
replication off, and a drill-only user with a random password created by `--init-file`.
Validation then runs against that server exactly as for logical restores; the server is
stopped and its folder deleted afterwards, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING

import pymysql
from pydantic import SecretStr

from blocks.mysql import MySQLConnection
from tasks.child_process import run as run_tool
from tasks.child_process import spawn
from tasks.engine_io import restore_object_into, tool_error
from tasks.engines import PhysicalTools, physical_tools, server_flavor, which
from tasks.errors import (
    ConfigurationError,
    ExternalCommandError,
    RestoreLoadError,
    RestoreTargetRefused,
)
from tasks.local_stack import free_port, port_open
from tasks.manifest import BackupManifest, PhysicalDetails
from tasks.mysql import (
    ConsistentDump,
    SnapshotFacts,
    connect,
    defaults_file,
    one_row,
    quote_identifier,
    snapshot_coordinates,
)
from tasks.storage import ObjectStore

if TYPE_CHECKING:
    from tasks.restore import RestoreStats

OBJECT_NAME = "backup.xbstream"
DRILL_USER = "vibeops_drill"
STDERR_TAIL = 16384
# Log lines that bracket the tool's consistent point (commits blocked in between).
CONSISTENT_MARKERS = {
    "mariadb-backup": ("Acquired locks for BACKUP STAGE BLOCK_COMMIT", "Finishing BACKUP STAGE"),
    "xtrabackup": ("Selecting LSN and binary log position", "Executing UNLOCK"),
}
_BINLOG = re.compile(
    r"MySQL binlog position: filename '([^']+)', position '(\d+)'"
    r"(?:, GTID of the last change '([^']*)')?"
)
_LSN = re.compile(
    r"Redo log \(from LSN (\d+) to (\d+)\) was copied|"
    r"Transaction log of lsn \((\d+)\) to \((\d+)\) was copied"
)
# Decompressors run as a process beside the extraction (argv; the binary is looked up).
DECODERS = {"zstd": ("zstd", "-dcq"), "gzip": ("gzip", "-dc")}
# backup-my.cnf settings a server must start with to read the copied files.
_INNODB_LAYOUT = (
    "innodb_page_size",
    "innodb_data_file_path",
    "innodb_undo_tablespaces",
    "innodb_undo_directory",
)


# -- backup ------------------------------------------------------------------------------------


@dataclass
class BackupLog:
    """What the backup tool's log says: its consistent point, binlog position and LSNs."""

    tool: str
    binlog_file: str | None = None
    binlog_position: int | None = None
    gtid: str | None = None
    from_lsn: int | None = None
    to_lsn: int | None = None
    consistent_seen: bool = False

    @property
    def release_marker(self) -> str:
        return CONSISTENT_MARKERS[self.tool][1]

    def feed(self, line: str) -> bool:
        """Parse one log line; True when it marks the start of the consistent point."""
        if match := _BINLOG.search(line):
            self.binlog_file, self.binlog_position = match.group(1), int(match.group(2))
            self.gtid = match.group(3) or None
        elif match := _LSN.search(line):
            numbers = [int(g) for g in match.groups() if g is not None]
            self.from_lsn, self.to_lsn = numbers
        elif CONSISTENT_MARKERS[self.tool][0] in line and not self.consistent_seen:
            self.consistent_seen = True
            return True
        return False


def physical_backup_command(
    tools: PhysicalTools,
    binary: str,
    defaults: Path,
    datadir: Path,
    workdir: Path,
    database: str,
    threads: int,
) -> list[str]:
    """argv of a streamed physical backup (credentials in the defaults file, never here)."""
    command = [
        binary,
        f"--defaults-extra-file={defaults}",  # must come first
        "--backup",
        "--stream=xbstream",
        f"--datadir={datadir}",  # explicit: the worker's own my.cnf may name another one
        f"--target-dir={workdir}",
        f"--parallel={threads}",
    ]
    if tools.flavor == "mariadb":
        # The database and the system schema a server needs to start; not other databases.
        command.append(f"--databases={database} mysql")
    return command


def source_datadir(conn: MySQLConnection, database: str) -> Path:
    """The server's datadir, if this worker can read it; ConfigurationError otherwise."""
    with connect(conn) as connection, connection.cursor() as cur:
        cur.execute("SELECT @@datadir")
        datadir = Path(str(one_row(cur)[0]))
    if not (datadir / database).is_dir() or not os.access(datadir / database, os.R_OK | os.X_OK):
        raise ConfigurationError(
            f"engine 'physical' copies the data files, but {datadir}/{database} of the server at "
            f"{conn.host}:{conn.port} is not readable on this worker: run the backup on the "
            "database host as a user that may read the datadir, or choose engine 'mydumper' "
            "(parallel logical, works remotely)"
        )
    return datadir


class PhysicalBackup(ConsistentDump):
    """The `physical` engine as a producer for tasks.engine_io.stream_engine_backup."""

    object_name = OBJECT_NAME

    def __init__(
        self,
        conn: MySQLConnection,
        database: str,
        tables: list[str],
        server_version: str,
        threads: int = 2,
        record_checksums: bool = True,
        on_progress: Callable[[int], None] | None = None,
        timeout_s: float = 6 * 3600,
    ) -> None:
        self.tools = physical_tools(server_flavor(server_version), server_version)
        super().__init__(conn, database, record_checksums, binary=self.tools.backup_binary())
        self.tables = tables
        self.threads = threads
        self.on_progress = on_progress
        self.timeout_s = timeout_s
        self.log = BackupLog(self.tools.tool)
        self.stage_ordered = False
        self.exact_by = "none"
        self._tail = bytearray()
        self._errors: list[BaseException] = []
        self._reader: threading.Thread | None = None

    def _start(self) -> None:
        """No lock of ours: the tool's backup stages define the consistent point."""
        quote_identifier(self.database)
        datadir = source_datadir(self.conn, self.database)
        self._snapshot = self._stack.enter_context(connect(self.conn, self.database))
        with self._snapshot.cursor() as cur:
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        workdir = Path(tempfile.mkdtemp(prefix="vibeops-physical-"))
        self._stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        defaults = self._stack.enter_context(defaults_file(self.conn))
        command = physical_backup_command(
            self.tools, self.binary, defaults, datadir, workdir, self.database, self.threads
        )
        self.process = spawn(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=1 << 20
        )
        self._reader = threading.Thread(target=self._read_log, daemon=True, name="backup-log")
        self._reader.start()

    def _open_snapshot(self) -> None:
        assert self._snapshot is not None
        with self._snapshot.cursor() as cur:
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            facts = SnapshotFacts(consistent_at=datetime.now(UTC))
            self._ours = snapshot_coordinates(cur)
        if self._ours is not None:
            facts.binlog_file, facts.binlog_position = self._ours.file, self._ours.position
            facts.gtid = self._ours.gtid
        self.facts = facts

    def _read_log(self) -> None:
        """Read the tool's log; open our snapshot the moment commits are blocked."""
        assert self.process is not None and self.process.stderr is not None
        fd = self.process.stderr.fileno()
        buffer = bytearray()
        while True:
            newline = buffer.find(b"\n")
            if newline < 0:
                data = os.read(fd, 65536)
                if not data:
                    self._tail += buffer
                    return
                buffer += data
                continue
            line = bytes(buffer[: newline + 1])
            del buffer[: newline + 1]
            self._tail += line
            del self._tail[:-STDERR_TAIL]
            if self.log.feed(line.decode(errors="replace")) and self.facts is None:
                try:
                    self._open_snapshot()
                except BaseException as exc:
                    self._errors.append(exc)
                    continue
                # Whatever the tool logged before our snapshot opened is in the pipe now.
                while select.select([fd], [], [], 0)[0]:
                    data = os.read(fd, 65536)
                    if not data:
                        break
                    buffer += data
                self.stage_ordered = self.log.release_marker.encode() not in buffer

    def start(self) -> IO[bytes]:
        assert self.process is not None and self.process.stdout is not None
        return self.process.stdout

    def stream_progress(self, raw_bytes: int) -> None:
        if self.on_progress is not None:
            self.on_progress(raw_bytes)

    def finish(self) -> None:
        """Raise unless the tool succeeded; record the facts and prove they are exact."""
        assert self.process is not None and self._reader is not None
        try:
            returncode = self.process.wait(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ExternalCommandError(
                f"{self.tools.tool} did not finish within {self.timeout_s:.0f}s"
            ) from None
        self._reader.join(timeout=60)
        if returncode != 0 or b"completed OK!" not in self._tail:
            raise tool_error(self.tools.tool, bytes(self._tail), returncode or 1, self.database)
        if self._errors:
            raise self._errors[0]
        if self.facts is None:  # the tool never logged its consistent point (another version)
            self._open_snapshot()
            self.stage_ordered = False
        facts = self.facts
        assert facts is not None
        log = self.log
        if facts.binlog_file and log.binlog_file:
            facts.exact = (facts.binlog_file, facts.binlog_position) == (
                log.binlog_file,
                log.binlog_position,
            )
            self.exact_by = "binlog-position" if facts.exact else "none"
        else:
            facts.exact = self.stage_ordered
            self.exact_by = "backup-stage-order" if facts.exact else "none"
        facts.exact_by = self.exact_by
        if not facts.exact:
            facts.inexact_reason = (
                f"our snapshot ({facts.binlog_file}:{facts.binlog_position}) is not at the "
                f"{self.tools.tool} consistent point ({log.binlog_file}:{log.binlog_position})"
            )
        self.record_table_facts(self.tables)
        if log.binlog_file:  # the tool's own coordinates are the authoritative ones
            facts.binlog_file, facts.binlog_position = log.binlog_file, log.binlog_position
            facts.gtid = log.gtid or facts.gtid

    def details(self) -> PhysicalDetails:
        return PhysicalDetails(
            tool=self.tools.tool,
            flavor=self.tools.flavor,
            databases=[self.database, "mysql"] if self.tools.flavor == "mariadb" else ["*"],
            from_lsn=self.log.from_lsn,
            to_lsn=self.log.to_lsn,
            exact_by=self.exact_by,  # type: ignore[arg-type]
        )


# -- the throwaway server ----------------------------------------------------------------------


@dataclass
class ScratchServer:
    """A server started on a restored datadir, in its own folder, port and socket."""

    workdir: Path
    port: int
    password: SecretStr
    socket_dir: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: float | None = None
    innodb: dict[str, str] = field(default_factory=dict)

    @property
    def datadir(self) -> Path:
        return self.workdir / "data"

    @property
    def socket_path(self) -> Path:
        """In a short folder of its own: a socket path may not exceed 107 bytes."""
        return (self.socket_dir or self.workdir) / "mysqld.sock"

    @property
    def config_path(self) -> Path:
        return self.workdir / "my.cnf"

    @property
    def error_log(self) -> Path:
        return self.workdir / "error.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def connection(self, database: str = "") -> MySQLConnection:
        """The drill user's connection block (password generated for this server only)."""
        return MySQLConnection(
            host="127.0.0.1",
            port=self.port,
            user=DRILL_USER,
            password=self.password,
            database=database,
            connect_timeout_seconds=5,
        )

    def _write_files(self) -> Path:
        settings = {
            "datadir": self.datadir,
            "socket": self.socket_path,
            "port": self.port,
            "bind-address": "127.0.0.1",
            "pid-file": self.workdir / "mysqld.pid",
            "log-error": self.error_log,
            "init-file": self.workdir / "init.sql",
            # Its own tmpdir: at start a server deletes every `#sql*` file in its tmpdir,
            # which in a shared /tmp would include other servers' live temporary tables.
            "tmpdir": self.workdir / "tmp",
            "skip-name-resolve": None,
            "skip-slave-start": None,
            "event-scheduler": "DISABLED",
            "performance-schema": "OFF",
            "innodb-buffer-pool-size": "256M",
            "innodb-log-file-size": "64M",
            "innodb-flush-log-at-trx-commit": "2",
            **self.innodb,
        }
        if os.geteuid() == 0:
            settings["user"] = "root"
        lines = ["[mysqld]"] + [k if v is None else f"{k}={v}" for k, v in settings.items()]
        self.config_path.write_text("\n".join(lines) + "\n")
        (self.workdir / "tmp").mkdir(mode=0o700, exist_ok=True)
        init = self.workdir / "init.sql"
        fd = os.open(init, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        secret = self.password.get_secret_value()
        with os.fdopen(fd, "w") as handle:
            handle.write(
                f"DROP USER IF EXISTS '{DRILL_USER}'@'127.0.0.1';\n"
                f"CREATE USER '{DRILL_USER}'@'127.0.0.1' IDENTIFIED BY '{secret}';\n"
                f"GRANT ALL PRIVILEGES ON *.* TO '{DRILL_USER}'@'127.0.0.1';\n"
            )
        return init

    def start(self, binary: str, timeout_s: float = 300) -> None:
        """Start the server and wait until the drill user can log in."""
        init = self._write_files()
        self.process = subprocess.Popen(
            [binary, f"--defaults-file={self.config_path}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.started_at = time.monotonic()
        deadline = time.monotonic() + timeout_s
        kwargs = self.connection().pymysql_kwargs()
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RestoreLoadError(
                        f"the throwaway server on the restored datadir exited "
                        f"({self.process.returncode}): {self._log_tail()}"
                    )
                if port_open("127.0.0.1", self.port, timeout=0.2):
                    with contextlib.suppress(pymysql.err.MySQLError):
                        pymysql.connect(**kwargs).close()
                        return
                time.sleep(0.05)
            raise RestoreLoadError(
                f"the throwaway server did not accept the drill user within {timeout_s:.0f}s: "
                f"{self._log_tail()}"
            )
        finally:
            init.unlink(missing_ok=True)

    def _log_tail(self) -> str:
        try:
            return self.error_log.read_text(errors="replace")[-800:]
        except OSError:
            return "(no error log)"

    def stop(self, timeout_s: float = 20) -> None:
        """Stop the server (SIGTERM, then SIGKILL): its data is thrown away anyway."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def remove(self) -> None:
        """Stop the server and delete its folder (datadir, socket, logs)."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
            if self.socket_dir is not None:
                shutil.rmtree(self.socket_dir, ignore_errors=True)


def scratch_servers_root() -> Path:
    """Where drills put throwaway servers: `$VIBEOPS_HOME/drill-servers/`."""
    from blocks.defaults import vibeops_home

    return vibeops_home() / "drill-servers"


def create_scratch_server(
    name: str, protected_ports: list[int], root: Path | None = None
) -> ScratchServer:
    """A new, empty server folder (0700) and a free port that no protected server uses."""
    base = root or scratch_servers_root()
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
    port = free_port()
    while port in protected_ports:
        port = free_port()
    return ScratchServer(
        workdir=workdir,
        port=port,
        password=SecretStr(secrets.token_urlsafe(24)),
        socket_dir=Path(tempfile.mkdtemp(prefix="vibeops-sock-")),
    )


@dataclass(frozen=True)
class LeftoverServer:
    """A throwaway-server folder no drill removed (its worker died mid-drill)."""

    workdir: Path
    age: timedelta
    pid: int | None  # the server still running from this folder, if any

    def describe(self) -> str:
        running = f"server pid {self.pid} still running" if self.pid else "no server running"
        return f"{self.age.total_seconds() / 3600:.1f} h old, {running}"


def _server_pid(workdir: Path) -> int | None:
    """The live server started with this folder's my.cnf (never an unrelated process)."""
    try:
        pid = int((workdir / "mysqld.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    ours = f"--defaults-file={workdir / 'my.cnf'}".encode() in cmdline
    return pid if ours and state != "Z" else None


def find_leftover_servers(
    root: Path, now: datetime, stale_after: timedelta
) -> list[LeftoverServer]:
    """Server folders under `root` untouched for `stale_after` (drills always remove theirs)."""
    found = []
    for workdir in sorted(root.iterdir()) if root.is_dir() else []:
        if not workdir.is_dir() or not (workdir / "my.cnf").exists():
            continue  # not a drill server folder
        age = now - datetime.fromtimestamp(workdir.stat().st_mtime, UTC)
        if age >= stale_after:
            found.append(LeftoverServer(workdir, age, _server_pid(workdir)))
    return found


def _socket_dir(workdir: Path) -> Path | None:
    with contextlib.suppress(OSError):
        for line in (workdir / "my.cnf").read_text().splitlines():
            if line.startswith("socket="):
                folder = Path(line.partition("=")[2]).parent
                return folder if folder.name.startswith("vibeops-sock-") else None
    return None


def remove_leftover_server(leftover: LeftoverServer, timeout_s: float = 20) -> None:
    """Stop its server (SIGTERM, then SIGKILL after `timeout_s`) and delete its folders."""
    pid = _server_pid(leftover.workdir)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _server_pid(leftover.workdir) == pid and time.monotonic() < deadline:
            time.sleep(0.1)
        if _server_pid(leftover.workdir) == pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    socket_dir = _socket_dir(leftover.workdir)
    shutil.rmtree(leftover.workdir, ignore_errors=True)
    if socket_dir is not None:
        shutil.rmtree(socket_dir, ignore_errors=True)
    if leftover.workdir.exists():
        raise RestoreLoadError(f"could not delete the leftover server folder {leftover.workdir}")


def _innodb_layout(datadir: Path) -> dict[str, str]:
    """The InnoDB layout settings recorded in the backup's backup-my.cnf."""
    result: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in (datadir / "backup-my.cnf").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() in _INNODB_LAYOUT and value.strip():
                result[key.strip()] = value.strip()
    return result


def _run_step(argv: list[str], log: Path, what: str, timeout_s: float) -> None:
    with open(log, "wb") as output:
        try:
            done = run_tool(argv, stdout=output, stderr=subprocess.STDOUT, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RestoreLoadError(f"{what} did not finish within {timeout_s:.0f}s") from None
    if done.returncode != 0:
        text = log.read_text(errors="replace").strip()[-800:]
        raise RestoreLoadError(f"{what} failed (exit {done.returncode}): {text}")


def restore_physical(
    manifest: BackupManifest,
    store: ObjectStore,
    server: MySQLConnection,
    database: str,
    connections: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
    scratch_server: ScratchServer | None = None,
    load_timeout_s: float = 6 * 3600,
) -> RestoreStats:
    """Extract, prepare and start a physical backup from one region on `scratch_server`.

    `server` and `database` are the scratch server's connection and the restored database
    (the caller validates there); the drill server itself is never touched.

    Raises:
        BackupVerificationError: the copy's bytes differ from the manifest (corrupt copy).
        StorageError: the region could not be read.
        RestoreLoadError: extract, prepare or server start failed on a matching copy.
    """
    from tasks.restore import RestoreStats

    details = manifest.physical
    if details is None or len(manifest.objects) != 1:
        raise ConfigurationError(
            f"backup {manifest.backup_id} is marked 'physical' but its manifest has no "
            "physical details or not exactly one object"
        )
    if scratch_server is None:
        raise ConfigurationError("a physical restore needs a throwaway server (scratch_server)")
    tools = physical_tools(details.flavor, manifest.server_version)
    extract, prepare, server_binary = (
        tools.extract_binary(),
        tools.backup_binary(),
        tools.server_binary(),
    )
    obj = manifest.objects[0]
    stats = RestoreStats(
        region=store.region,
        objects=[store.uri(manifest.object_key(obj.name))],
        connections=1,
        binlog_skipped=True,
    )
    datadir = scratch_server.datadir
    if datadir.exists():
        shutil.rmtree(datadir)  # a previous region's attempt
    datadir.mkdir(mode=0o700, parents=True)
    extract_log = scratch_server.workdir / "extract.log"
    load_s = 0.0

    # Decompressing in its own process runs beside this one and mbstream: about 2x faster.
    decoder = which(*DECODERS[manifest.codec][:1])

    def consume(chunks: Iterator[bytes]) -> None:
        nonlocal load_s
        with open(extract_log, "wb") as log:
            unpack = (
                spawn(
                    [decoder, *DECODERS[manifest.codec][1:]],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                )
                if decoder
                else None
            )
            process = spawn(
                [extract, "-x", "-C", str(datadir)],
                stdin=unpack.stdout if unpack else subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            feed = unpack.stdin if unpack else process.stdin
            assert feed is not None
            if unpack is not None and unpack.stdout is not None:
                unpack.stdout.close()  # mbstream holds the read end now
            failures: list[str] = []
            try:
                for chunk in chunks:
                    started = time.perf_counter()
                    feed.write(chunk)
                    load_s += time.perf_counter() - started
                feed.close()
                started = time.perf_counter()
                for name, step in (("decompression", unpack), ("extraction", process)):
                    if step is not None and step.wait(timeout=load_timeout_s) != 0:
                        failures.append(f"{name} exit {step.returncode}")
                load_s += time.perf_counter() - started
            except BrokenPipeError:
                failures.append("the extraction stopped reading")
            finally:
                for step in (unpack, process):
                    if step is not None and step.poll() is None:
                        step.kill()
                        step.wait(timeout=30)
        if failures:
            text = extract_log.read_text(errors="replace").strip()[-600:]
            raise RestoreLoadError(f"extracting the backup failed ({'; '.join(failures)}): {text}")

    restore_object_into(
        store, manifest, obj, consume, stats, on_progress, decompress=decoder is None
    )
    started = time.perf_counter()
    _run_step(
        [prepare, "--no-defaults", "--prepare", f"--target-dir={datadir}", "--use-memory=256M"],
        scratch_server.workdir / "prepare.log",
        f"{tools.tool} --prepare",
        load_timeout_s,
    )
    scratch_server.innodb = _innodb_layout(datadir)
    scratch_server.start(server_binary)
    stats.load_s = load_s + time.perf_counter() - started
    return stats


def check_scratch_server(scratch: ScratchServer, drill_server: MySQLConnection) -> None:
    """Refuse a throwaway server that would share the drill server's port or datadir."""
    local = drill_server.host in ("127.0.0.1", "localhost", "::1")
    if local and scratch.port == drill_server.port:
        raise RestoreTargetRefused(f"port {scratch.port} is the drill server's own port")
    theirs: Path | None = None
    with (
        contextlib.suppress(Exception),
        connect(drill_server) as connection,
        connection.cursor() as cur,
    ):
        cur.execute("SELECT @@datadir")
        theirs = Path(str(one_row(cur)[0])).resolve()
    ours = scratch.datadir.resolve()
    if (
        local
        and theirs is not None
        and (ours == theirs or theirs in ours.parents or ours in theirs.parents)
    ):
        raise RestoreTargetRefused(
            f"the throwaway datadir {ours} overlaps the drill server's datadir {theirs}"
        )
