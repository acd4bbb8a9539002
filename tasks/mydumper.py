"""Engine `mydumper`: a parallel, chunked logical dump, restored with `myloader -t N`.

Backup: our FLUSH TABLES WITH READ LOCK is held while our snapshot and mydumper's worker
transactions open (as for mysqldump, tasks.mysql.ConsistentDump), so the row counts and
checksums recorded in the manifest describe exactly the dumped data. mydumper writes its
directory (one file per schema object, tables split into `--rows` chunks) into a private
0700 folder; when it has exited cleanly, the folder goes as ONE tar stream through the
usual compress + fan-out + verification, and the manifest lists every file.

Restore: download + sha256 + decompress + extract the tar (only the files the manifest
lists, regular files, no paths) into a private folder, then `myloader -d <folder>
-s <source db> -B <scratch db> -t N` loads it. Credentials always go through a 0600
`--defaults-file`, never argv.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from blocks.mysql import MySQLConnection
from tasks.backup_stream import ChunkReader
from tasks.child_process import StderrTail, spawn, stop
from tasks.child_process import run as run_tool
from tasks.engine_io import restore_object_into, tool_error
from tasks.engines import mydumper_binary, myloader_binary
from tasks.errors import (
    ConfigurationError,
    ExternalCommandError,
    RestoreLoadError,
)
from tasks.manifest import BackupManifest, DumpFile, MydumperDetails
from tasks.mysql import (
    BinlogCoordinates,
    ConsistentDump,
    SnapshotFacts,
    defaults_file,
    quote_identifier,
)
from tasks.packet_limit import fit_packet_limit
from tasks.storage import ObjectStore
from tasks.stored_programs import PROGRAMS_FILE, dump_stored_programs, load_stored_programs

if TYPE_CHECKING:
    from tasks.restore import RestoreStats

OBJECT_NAME = "mydumper.tar"
SNAPSHOTS_OPEN = "Transactions started"  # mydumper -v 3, once every worker has its snapshot
_METADATA = re.compile(
    r"SHOW MASTER STATUS:\s*\n\s*Log: (\S+)\s*\n\s*Pos: (\d+)(?:\s*\n\s*GTID:(\S*))?"
)
# mydumper names files after the database and table as they are (`db.t a é-schema.sql`):
# any name but a path (no '/', NUL, '.' or '..').
_FILE_NAME = re.compile(r"^(?!\.\.?$)[^/\x00]{1,255}$")
STDERR_TAIL = 16384


def mydumper_command(
    binary: str, defaults: Path, database: str, outdir: Path, threads: int, rows: int
) -> list[str]:
    """argv of one mydumper run (no secrets: they are in the defaults file).

    Tables and views only: stored programs go through tasks.stored_programs (mydumper
    0.10 drops their sql_mode).
    """
    return [
        binary,
        f"--defaults-file={defaults}",
        f"--database={database}",
        f"--outputdir={outdir}",
        f"--threads={threads}",
        f"--rows={rows}",
        "--complete-insert",  # column lists: generated/invisible columns load correctly
        "--trx-consistency-only",
        "--verbose=3",
    ]


def parse_metadata(text: str) -> BinlogCoordinates | None:
    """The `SHOW MASTER STATUS` coordinates of a mydumper `metadata` file (None if absent)."""
    match = _METADATA.search(text)
    if match is None:
        return None
    return BinlogCoordinates(match.group(1), int(match.group(2)), match.group(3) or None)


def myloader_command(
    binary: str, defaults: Path, folder: Path, source_db: str, target_db: str, threads: int
) -> list[str]:
    """argv of myloader loading `source_db` from `folder` into `target_db`."""
    return [
        binary,
        f"--defaults-file={defaults}",
        f"--directory={folder}",
        f"--source-db={source_db}",
        f"--database={target_db}",
        f"--threads={threads}",
        "--verbose=2",
    ]


class MydumperDump(ConsistentDump):
    """mydumper into `outdir`, started under our lock like tasks.mysql.ConsistentDump.

    mydumper takes its own snapshots and coordinates under its own short read lock; our
    facts are proven by comparing those coordinates (its `metadata`) with our snapshot's
    once it has finished.
    """

    coordinates_in_header = False
    gated = False  # reads its --defaults-file with GLib: a regular file, started under the lock
    snapshot_marker = SNAPSHOTS_OPEN

    def __init__(
        self,
        conn: MySQLConnection,
        database: str,
        outdir: Path,
        threads: int,
        rows: int,
        record_checksums: bool = True,
    ) -> None:
        super().__init__(conn, database, record_checksums, binary=mydumper_binary())
        self.outdir = outdir
        self.threads = threads
        self.rows = rows

    def _launch(self, defaults: Path) -> subprocess.Popen[bytes]:
        shutil.rmtree(self.outdir, ignore_errors=True)  # an earlier attempt's files
        command = mydumper_command(
            self.binary, defaults, self.database, self.outdir, self.threads, self.rows
        )
        process = spawn(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._attempt_stack.callback(stop, process)
        assert process.stderr is not None
        self.stderr = StderrTail(process.stderr, SNAPSHOTS_OPEN)
        self.stderr.start()
        return process

    def recorded_coordinates(self) -> BinlogCoordinates | None:
        """The binlog coordinates mydumper recorded (under its own lock) in `metadata`."""
        try:
            text = (self.outdir / "metadata").read_text(errors="replace")
        except OSError:
            return None
        return parse_metadata(text)

    def wait(self, timeout_s: float, on_tick: Callable[[], None] | None = None) -> None:
        """Wait for mydumper to exit; raise its typed error when it failed."""
        assert self.process is not None and self.stderr is not None
        deadline = time.monotonic() + timeout_s
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                raise ExternalCommandError(f"mydumper did not finish within {timeout_s:.0f}s")
            if on_tick is not None:
                on_tick()
            time.sleep(0.2)
        self.stderr.join(timeout=30)
        if self.process.returncode != 0 or b"CRITICAL" in self.stderr.text:
            raise tool_error(
                "mydumper", bytes(self.stderr.text), self.process.returncode or 1, self.database
            )
        self.confirm(self.recorded_coordinates())


def _folder_size(folder: Path) -> int:
    total = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            with contextlib.suppress(OSError):
                total += entry.stat().st_size
    return total


class MydumperBackup:
    """The `mydumper` engine as a producer for tasks.engine_io.stream_engine_backup."""

    object_name = OBJECT_NAME

    def __init__(
        self,
        conn: MySQLConnection,
        database: str,
        tables: list[str],
        threads: int = 2,
        rows_per_chunk: int = 100_000,
        record_checksums: bool = True,
        on_progress: Callable[[int], None] | None = None,
        timeout_s: float = 6 * 3600,
    ) -> None:
        quote_identifier(database)
        self.binary = mydumper_binary()
        self.conn = conn
        self.database = database
        self.tables = tables
        self.threads = threads
        self.rows_per_chunk = rows_per_chunk
        self.record_checksums = record_checksums
        self.on_progress = on_progress
        self.timeout_s = timeout_s
        self.facts: SnapshotFacts | None = None
        self.files: list[DumpFile] = []
        self._stack = contextlib.ExitStack()
        self._dump: MydumperDump | None = None
        self._recorder: threading.Thread | None = None
        self._tar: threading.Thread | None = None
        self._errors: list[BaseException] = []

    def __enter__(self) -> MydumperBackup:
        try:
            folder = Path(tempfile.mkdtemp(prefix="vibeops-mydumper-"))
            self._stack.callback(shutil.rmtree, folder, ignore_errors=True)
            self.outdir = folder / "dump"
            dump = MydumperDump(
                self.conn,
                self.database,
                self.outdir,
                self.threads,
                self.rows_per_chunk,
                self.record_checksums,
            )
            self._stack.enter_context(dump)
            self._dump = dump
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def _record_facts(self) -> None:
        assert self._dump is not None
        try:
            self.facts = self._dump.record_table_facts(self.tables)
        except BaseException as exc:
            self._errors.append(exc)

    def start(self) -> IO[bytes]:
        """Dump into the private folder; then return a tar stream of it."""
        dump = self._dump
        assert dump is not None
        self._recorder = threading.Thread(target=self._record_facts, daemon=True)
        self._recorder.start()

        def tick() -> None:  # the dump is the first half of the work, archiving the second
            if self.on_progress is not None:
                self.on_progress(_folder_size(self.outdir) // 2)

        dump.wait(self.timeout_s, tick)
        dump_stored_programs(self.conn, self.database, self.outdir / PROGRAMS_FILE)
        names = sorted(entry.name for entry in os.scandir(self.outdir))
        self.files = [DumpFile(name=n, size=(self.outdir / n).stat().st_size) for n in names]
        read_fd, write_fd = os.pipe()
        reader = os.fdopen(read_fd, "rb")
        self._stack.callback(reader.close)
        self._tar = threading.Thread(
            target=self._write_tar, args=(os.fdopen(write_fd, "wb"),), daemon=True
        )
        self._tar.start()
        return reader

    def _write_tar(self, pipe: IO[bytes]) -> None:
        try:
            with pipe, tarfile.open(fileobj=pipe, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for item in self.files:
                    info = tar.gettarinfo(str(self.outdir / item.name), arcname=item.name)
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    with open(self.outdir / item.name, "rb") as handle:
                        tar.addfile(info, handle)
        except BaseException as exc:
            self._errors.append(exc)

    def stream_progress(self, archived: int) -> None:
        if self.on_progress is not None:
            self.on_progress((sum(f.size for f in self.files) + archived) // 2)

    def finish(self) -> None:
        """Raise unless the tar stream is complete and the table facts are recorded."""
        for thread, what in ((self._tar, "archiving"), (self._recorder, "row counts")):
            if thread is not None:
                thread.join(timeout=3600)
                if thread.is_alive():
                    raise ExternalCommandError(f"mydumper backup: {what} did not finish in 1 h")
        if self._errors:
            raise self._errors[0]

    def details(self) -> MydumperDetails:
        return MydumperDetails(
            files=self.files,
            threads=self.threads,
            rows_per_chunk=self.rows_per_chunk,
            source_database=self.database,
        )


# -- restore -----------------------------------------------------------------------------------


def _extract_listed(chunks: Iterator[bytes], folder: Path, details: MydumperDetails) -> None:
    """Extract the tar's regular files that the manifest lists into `folder` (nothing else)."""
    wanted = {f.name: f.size for f in details.files}
    seen: set[str] = set()
    with tarfile.open(fileobj=ChunkReader(chunks), mode="r|") as tar:  # type: ignore[call-overload]
        for member in tar:
            name = member.name
            if (
                not member.isreg()
                or name not in wanted
                or name in seen
                or not _FILE_NAME.match(name)
                or member.size != wanted[name]
            ):
                raise RestoreLoadError(
                    f"the archive holds {name!r}, which the manifest does not list"
                )
            seen.add(name)
            source = tar.extractfile(member)
            assert source is not None
            with open(folder / name, "xb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
    missing = sorted(set(wanted) - seen)
    if missing:
        raise RestoreLoadError(f"the archive lacks {len(missing)} listed file(s): {missing[:5]}")


def restore_mydumper(
    manifest: BackupManifest,
    store: ObjectStore,
    server: MySQLConnection,
    database: str,
    connections: int = 2,
    on_progress: Callable[[int, int], None] | None = None,
    load_timeout_s: float = 6 * 3600,
) -> RestoreStats:
    """Restore a mydumper backup from one region into `database` with myloader -t `connections`.

    Raises:
        BackupVerificationError: the copy's bytes differ from the manifest (corrupt copy).
        StorageError: the region could not be read.
        RestoreLoadError: the archive or myloader failed, although the copy matches.
    """
    from tasks.restore import RestoreStats, can_skip_binlog

    quote_identifier(database)
    details = manifest.mydumper
    if details is None or len(manifest.objects) != 1:
        raise ConfigurationError(
            f"backup {manifest.backup_id} is marked 'mydumper' but its manifest has no "
            "mydumper file list or not exactly one object"
        )
    binary = myloader_binary()
    obj = manifest.objects[0]
    stats = RestoreStats(
        region=store.region,
        objects=[store.uri(manifest.object_key(obj.name))],
        connections=connections,
        binlog_skipped=True,
    )
    folder = Path(tempfile.mkdtemp(prefix="vibeops-myloader-"))
    try:
        dump = folder / "dump"
        dump.mkdir(mode=0o700)
        restore_object_into(
            store,
            manifest,
            obj,
            lambda chunks: _extract_listed(chunks, dump, details),
            stats,
            on_progress,
        )
        stats.statements = len(details.files)
        started = time.perf_counter()
        with fit_packet_limit(server, manifest, stats.notes), defaults_file(server) as cnf:
            command = myloader_command(
                binary, cnf, dump, details.source_database, database, connections
            )
            try:
                done = run_tool(command, capture_output=True, timeout=load_timeout_s)
            except subprocess.TimeoutExpired:
                raise RestoreLoadError(
                    f"myloader did not finish within {load_timeout_s:.0f}s"
                ) from None
        output = (done.stderr + done.stdout).decode(errors="replace")
        if done.returncode != 0 or "CRITICAL" in output:
            raise RestoreLoadError(
                f"myloader failed (exit {done.returncode}): {output.strip()[-800:]}"
            )
        if any(f.name == PROGRAMS_FILE for f in details.files):
            load_stored_programs(
                server, database, dump / PROGRAMS_FILE, can_skip_binlog(server), load_timeout_s
            )
        stats.load_s = time.perf_counter() - started
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return stats
