"""Point-in-time replay of archived binary logs onto a throwaway server (no Prefect here).

    fetch every segment (sha256 of stored and raw bytes; a corrupt copy -> the next region)
    -> check the chain on the downloaded bytes (each file's Gtid_list == the previous file's
       last GTID state; the first file holds the base's GTID) BEFORE anything is replayed
    -> resolve `to` (a time) to the last transaction that began before it (binlog timestamps
       are whole seconds) and stop exactly there with a GTID `--stop-position`
    -> mariadb-binlog --disable-log-bin --start-position=<base GTID> ... | mariadb

Replay always runs on a throwaway server holding the database under its ORIGINAL name
(`--database=<name>` keeps other databases' changes out). Rewriting the name with
`--rewrite-db` misses DDL that names the database explicitly, which would hit the live
source; a renamed copy is dumped from the throwaway server afterwards instead.
A Query event run from another default database that names the replayed database is
refused before replay, since `--database` would silently drop it.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from blocks.mysql import MySQLConnection
from tasks.binlog_events import (
    BinlogFormatError,
    BinlogSummary,
    format_gtid_list,
    gtid_covered,
    gtid_position,
    parse_gtid_list,
    read_binlog_summary,
)
from tasks.binlog_io import download_segment
from tasks.binlog_manifest import SegmentManifest
from tasks.errors import (
    BackupVerificationError,
    ConfigurationError,
    ExternalCommandError,
    RecoveryChainBroken,
    StorageError,
)
from tasks.mysql import defaults_file, find_tool, quote_identifier
from tasks.storage import ObjectStore

STDERR_TAIL = 4000
QUERY_EVENT = 2
_HEADER = 19


# -- fetching ----------------------------------------------------------------------------------


@dataclass
class FetchedSegment:
    """One segment on local disk, where it came from, and which regions failed first."""

    segment: SegmentManifest
    path: Path
    region: str
    failed: dict[str, str] = field(default_factory=dict)  # region -> why
    summary: BinlogSummary | None = None


def fetch_segments(
    stores: dict[str, ObjectStore],
    order: Sequence[str],
    segments: Sequence[SegmentManifest],
    dest_dir: Path,
) -> list[FetchedSegment]:
    """Download every segment, each from the first region whose copy verifies.

    Raises:
        BackupVerificationError: no region holds a good copy of one segment (named).
    """
    fetched = []
    for segment in segments:
        failed: dict[str, str] = {}
        for region in order:
            try:
                path = download_segment(stores[region], segment, dest_dir)
            except (BackupVerificationError, StorageError) as exc:
                failed[region] = f"{type(exc).__name__}: {exc}"[:500]
                continue
            fetched.append(FetchedSegment(segment, path, region, failed))
            break
        else:
            raise BackupVerificationError(
                f"no region holds a good copy of segment {segment.sequence}/{segment.file}: "
                + "; ".join(failed.values())
            )
    return fetched


# -- the chain, checked on the downloaded bytes -----------------------------------------------


def check_fetched_chain(base_gtid: str, fetched: Sequence[FetchedSegment]) -> None:
    """Read each file and refuse a chain with a hole, before anything is replayed.

    mariadb-binlog replays a chain with a missing middle file without complaint (exit 0), so
    each file's Gtid_list must equal the previous file's last GTID state, and the first file
    must hold the base's GTID.

    Raises:
        RecoveryChainBroken: naming the two files that do not join and what to do.
    """
    base = parse_gtid_list(base_gtid)
    previous: FetchedSegment | None = None
    for item in fetched:
        try:
            with open(item.path, "rb") as handle:
                item.summary = read_binlog_summary(handle)
        except BinlogFormatError as exc:
            raise RecoveryChainBroken(
                f"{item.segment.file} (from {item.region}) is not a readable binary log: {exc}"
            ) from None
        summary = item.summary
        if previous is None:
            start = gtid_position(summary.gtid_list_start)
            if not (gtid_covered(base, start) and gtid_covered(summary.gtid_last, base)):
                raise RecoveryChainBroken(
                    f"the base's GTID {base_gtid} is not inside {item.segment.file} (GTIDs "
                    f"{format_gtid_list(summary.gtid_list_start) or '-'} .. "
                    f"{format_gtid_list(summary.gtid_last) or '-'}): the segment holding the "
                    "base's position is missing. Restore the base alone, or take a new base backup."
                )
        else:
            assert previous.summary is not None
            if summary.gtid_list_start != previous.summary.gtid_last:
                raise RecoveryChainBroken(
                    f"{item.segment.file} starts at GTID state "
                    f"{format_gtid_list(summary.gtid_list_start)!r} but {previous.segment.file} "
                    f"ends at {format_gtid_list(previous.summary.gtid_last)!r}: a segment between "
                    "them is missing, and mariadb-binlog would replay past the hole silently. "
                    f"Restore only up to {previous.segment.last_event_at or previous.segment.file}, "
                    "or find the missing segment."
                )
        previous = item


# -- where to stop -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayPlan:
    """What a replay will apply: base GTID (exclusive) to stop GTID (inclusive)."""

    start_gtid: str
    stop_gtid: str | None  # None: nothing to replay after the base
    point_at: datetime | None  # commit time (whole seconds) of the last replayed transaction
    transactions: int
    files: list[Path]


def plan_replay(
    base_gtid: str,
    fetched: Sequence[FetchedSegment],
    to: datetime | None = None,
    until_gtid: str | None = None,
) -> ReplayPlan:
    """The transactions after the base, up to the last one that began before `to` (or up to
    and including `until_gtid`, e.g. a newer base's position; None/None = everything).

    Binlog timestamps are whole seconds (when the statement began), so a transaction is taken
    when its second lies wholly before `to`: nothing committed after `to` is replayed, and a
    sub-second `to` reaches the last transaction of the previous whole second.
    """
    base = parse_gtid_list(base_gtid)
    until = parse_gtid_list(until_gtid) if until_gtid else None
    cutoff = to.astimezone(UTC).replace(microsecond=0) if to is not None else None
    stop: str | None = None
    point_at: datetime | None = None
    count = 0
    files: list[Path] = []
    done = False
    for item in fetched:
        assert item.summary is not None, "check_fetched_chain reads the summaries first"
        for _end, committed_at, state_text in item.summary.commits:
            position = gtid_position(parse_gtid_list(state_text))
            if gtid_covered(base, position):
                continue  # already in the base
            if cutoff is not None and committed_at + timedelta(seconds=1) > cutoff:
                done = True
                break
            if until is not None and not gtid_covered(until, position):
                done = True
                break
            stop, point_at = format_gtid_list(position), committed_at
            count += 1
            if not files or files[-1] != item.path:
                files.append(item.path)
        if done:
            break
    # Files before the one holding the first replayed transaction are still needed by
    # mariadb-binlog only for their Gtid_list; passing from the first file keeps it simple.
    if files:
        first = next(i for i, f in enumerate(fetched) if f.path == files[0])
        last = next(i for i, f in enumerate(fetched) if f.path == files[-1])
        files = [f.path for f in fetched[first : last + 1]]
    return ReplayPlan(base_gtid, stop, point_at, count, files)


# -- the rename trap ---------------------------------------------------------------------------


def _query_events(path: Path) -> list[tuple[str, str]]:
    """(default database, statement) of every Query event in a raw binlog file."""
    data = path.read_bytes()
    found = []
    position = 4
    while position + _HEADER <= len(data):
        kind = data[position + 4]
        size = int.from_bytes(data[position + 9 : position + 13], "little")
        if size < _HEADER:
            break
        if kind == QUERY_EVENT:
            body = data[position + _HEADER : position + size]
            db_len = body[8]
            status_len = int.from_bytes(body[11:13], "little")
            db_at = 13 + status_len
            db = body[db_at : db_at + db_len].decode(errors="replace")
            statement = body[db_at + db_len + 1 :]
            found.append((db, statement.decode(errors="replace")))
        position += size
    return found


def cross_database_statements(paths: Sequence[Path], database: str) -> list[str]:
    """Statements run from another default database that name `database` explicitly.

    `mariadb-binlog --database=<name>` filters statements by their default database, so it
    would drop these silently; replay refuses them instead.
    """
    pattern = re.compile(rf"(`{re.escape(database)}`|\b{re.escape(database)})\s*\.", re.I)
    hits = []
    for path in paths:
        for db, statement in _query_events(path):
            if db.lower() != database.lower() and pattern.search(statement):
                hits.append(f"{path.name}: (from {db or 'no database'}) {statement[:160]}")
    return hits


# -- the replay itself -------------------------------------------------------------------------


def replay_command(binary: str, plan: ReplayPlan, database: str) -> list[str]:
    """argv of the binlog reader (local files only: no credentials)."""
    assert plan.stop_gtid is not None
    return [
        binary,
        "--no-defaults",
        "--disable-log-bin",
        f"--start-position={plan.start_gtid}",
        f"--stop-position={plan.stop_gtid}",
        f"--database={database}",
        *[str(p) for p in plan.files],
    ]


def client_command(binary: str, defaults: Path) -> list[str]:
    """argv of the SQL client the replay is piped into (credentials in the defaults file)."""
    return [
        binary,
        f"--defaults-extra-file={defaults}",  # must be first
        "--binary-mode",
        "--batch",
        "--max-allowed-packet=1G",
    ]


@dataclass(frozen=True)
class ReplayResult:
    """What a replay applied and how long it took."""

    transactions: int
    point_at: datetime | None
    stop_gtid: str | None
    seconds: float
    binlog_bytes: int


def replay(
    plan: ReplayPlan,
    target: MySQLConnection,
    database: str,
    timeout_s: float = 6 * 3600,
) -> ReplayResult:
    """Pipe `mariadb-binlog` over the plan's files into the target server.

    `target` must be a throwaway server that holds `database` under its original name.

    Raises:
        RecoveryChainBroken: a statement the database filter would drop silently.
        ExternalCommandError: the reader or the client failed (stderr tail inside).
    """
    quote_identifier(database)
    if plan.stop_gtid is None or not plan.files:
        return ReplayResult(0, None, None, 0.0, 0)
    trapped = cross_database_statements(plan.files, database)
    if trapped:
        raise RecoveryChainBroken(
            f"{len(trapped)} statement(s) change {database!r} from another default database; "
            "`mariadb-binlog --database` would drop them silently: "
            + " | ".join(trapped[:3])
            + ". Restore to a point before them, or replay this range by hand."
        )
    reader = find_tool("mariadb-binlog", "mysqlbinlog", package="mariadb-client")
    client = find_tool("mariadb", "mysql", package="mariadb-client")
    started = time.perf_counter()
    with defaults_file(target) as defaults, tempfile.TemporaryFile() as reader_err:
        source = subprocess.Popen(
            replay_command(reader, plan, database), stdout=subprocess.PIPE, stderr=reader_err
        )
        sink = subprocess.Popen(
            client_command(client, defaults),
            stdin=source.stdout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert source.stdout is not None
        source.stdout.close()  # the client holds the read end now
        errors: list[bytes] = []
        drain = threading.Thread(target=_read_tail, args=(sink.stderr, errors), daemon=True)
        drain.start()
        try:
            sink_code = sink.wait(timeout=timeout_s)
            source_code = source.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise ExternalCommandError(f"replay did not finish within {timeout_s:.0f}s") from None
        finally:
            for process in (source, sink):
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=30)
            drain.join(timeout=10)
        if source_code != 0 or sink_code != 0:
            reader_err.seek(0)
            text = (reader_err.read()[-STDERR_TAIL:] + b" " + b"".join(errors)).decode(
                errors="replace"
            )
            raise ExternalCommandError(
                f"replay failed (mariadb-binlog exit {source_code}, mariadb exit {sink_code}): "
                f"{text.strip()[-STDERR_TAIL:]}"
            )
    return ReplayResult(
        transactions=plan.transactions,
        point_at=plan.point_at,
        stop_gtid=plan.stop_gtid,
        seconds=time.perf_counter() - started,
        binlog_bytes=sum(p.stat().st_size for p in plan.files),
    )


def _read_tail(stream: IO[bytes] | None, into: list[bytes]) -> None:
    if stream is None:
        return
    data = stream.read()
    into.append(data[-STDERR_TAIL:])


def base_gtid_of(gtid: str | None, backup_id: str) -> str:
    """The base's GTID position, or ConfigurationError saying why it cannot be replayed from."""
    if not gtid:
        raise ConfigurationError(
            f"base backup {backup_id} records no GTID: it can only be restored to its own "
            "consistent point (enable log_bin on the source and take a new base backup)"
        )
    return format_gtid_list(gtid_position(parse_gtid_list(gtid)))
