"""Restore a base backup on a throwaway server, then replay archived binlogs up to a point.

Shared by restore-drill and restore-mysql. The throwaway server has its own folder, port and
socket and no binary log; the database keeps its ORIGINAL name there, so replayed statements
that name it explicitly land in the copy and nowhere else (see tasks/binlog_replay.py).
Physical bases start the server on their prepared datadir; logical bases are loaded into a
freshly initialised one (the extra cost over a scratch database is `mariadb-install-db` plus
a server start, measured in the `server` phase).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.mysql import MySQLConnection
from tasks.binlog_catalog import ChainGap, list_segments, recovery_chain
from tasks.binlog_events import gtid_covered, parse_gtid_list
from tasks.binlog_manifest import SegmentManifest
from tasks.binlog_replay import (
    FetchedSegment,
    ReplayPlan,
    ReplayResult,
    base_gtid_of,
    check_fetched_chain,
    fetch_segments,
    plan_replay,
    replay,
)
from tasks.catalog import committed_backups
from tasks.drill import TableParity, compare_tables
from tasks.engines import require
from tasks.errors import (
    BackupVerificationError,
    ConfigurationError,
    RestoreLoadError,
    StorageError,
)
from tasks.manifest import BackupManifest
from tasks.mysql import connect, dump_command, quote_identifier
from tasks.physical import ScratchServer, create_scratch_server, restore_physical
from tasks.restore import RestoreStats, database_defaults_sql, restorer_for
from tasks.storage import ObjectStore
from tasks.validation import inspect_restored

SERVER_START_TIMEOUT_S = 300


# -- the throwaway server ----------------------------------------------------------------------


def start_empty_server(scratch: ScratchServer, timeout_s: float = SERVER_START_TIMEOUT_S) -> None:
    """Initialise an empty datadir in the scratch folder and start a server on it."""
    install = require(
        ("mariadb-install-db", "mysql_install_db"), "mariadb-server", "the throwaway server"
    )
    server = require(("mariadbd", "mysqld"), "mariadb-server", "the throwaway server", sbin=True)
    scratch.datadir.mkdir(mode=0o700, parents=True, exist_ok=True)
    argv = [
        install,
        "--no-defaults",
        f"--datadir={scratch.datadir}",
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
    ]
    if os.geteuid() == 0:
        argv.append("--user=root")
    # OFF (not DISABLED): events stay off but dumpable, for the copy to a live server.
    scratch.innodb.setdefault("event-scheduler", "OFF")
    done = subprocess.run(argv, capture_output=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RestoreLoadError(
            "initialising the throwaway server failed: "
            + done.stderr.decode(errors="replace")[-800:]
        )
    scratch.start(server, timeout_s)


@dataclass
class BaseOnServer:
    """A base backup restored on a throwaway server."""

    manifest: BackupManifest
    server: ScratchServer
    region: str
    stats: RestoreStats
    failed: dict[str, str] = field(default_factory=dict)  # region -> why its copy failed
    server_s: float = 0.0

    @property
    def connection(self) -> MySQLConnection:
        return self.server.connection(self.manifest.database)


def restore_base_on_server(
    manifest: BackupManifest,
    stores: dict[str, ObjectStore],
    order: Sequence[str],
    name: str,
    protected_ports: Sequence[int],
    connections: int = 2,
) -> BaseOnServer:
    """Restore `manifest` under its own database name on a new throwaway server.

    Each region is tried in `order`; a corrupt or unreadable copy moves on to the next one.
    The caller removes the server (`.server.remove()`) when done.

    Raises:
        BackupVerificationError / StorageError: no region's copy could be used.
        RestoreLoadError: a verified copy did not load.
    """
    failed: dict[str, str] = {}
    database = manifest.database
    quote_identifier(database)
    for region in order:
        scratch = create_scratch_server(name, protected_ports=list(protected_ports))
        clock = time.perf_counter()
        try:
            if manifest.engine == "physical":
                stats = restore_physical(
                    manifest,
                    stores[region],
                    scratch.connection(database),
                    database,
                    scratch_server=scratch,
                )
                server_s = 0.0
            else:
                start_empty_server(scratch)
                with connect(scratch.connection()) as conn, conn.cursor() as cur:
                    # Tables created later by replayed DDL take the database's default
                    # character set and collation, so the database gets the source's (from the
                    # manifest's catalog); utf8mb4 only for old manifests that lack them, not
                    # the throwaway server's latin1 default. Replayed events carry their own
                    # session character sets (collation_server included), so the server-level
                    # default does not matter for replay.
                    defaults = database_defaults_sql(
                        manifest.database_charset, manifest.database_collation
                    )
                    cur.execute(f"CREATE DATABASE {quote_identifier(database)} {defaults}")
                server_s = time.perf_counter() - clock
                stats = restorer_for(manifest)(
                    manifest,
                    stores[region],
                    scratch.connection(),
                    database,
                    connections=connections,
                )
        except (BackupVerificationError, StorageError) as exc:
            failed[region] = f"{type(exc).__name__}: {exc}"[:600]
            scratch.remove()
            continue
        except BaseException:
            scratch.remove()
            raise
        return BaseOnServer(manifest, scratch, region, stats, failed, server_s)
    raise BackupVerificationError(
        f"no region's copy of {manifest.backup_id} could be restored: " + "; ".join(failed.values())
    )


# -- segments ----------------------------------------------------------------------------------


@dataclass
class SegmentChoice:
    """The archived segments that follow a base, and where the chain breaks (if it does)."""

    segments: list[SegmentManifest]
    gap: ChainGap | None
    unreachable: dict[str, str] = field(default_factory=dict)


def choose_segments(
    stores: dict[str, ObjectStore], order: Sequence[str], base: BackupManifest
) -> SegmentChoice:
    """Committed segments of the base's source over every region, chained after the base."""
    seen: dict[tuple[str, str], SegmentManifest] = {}
    unreachable: dict[str, str] = {}
    for region in order:
        try:
            for segment in list_segments(stores[region], base.source):
                seen.setdefault((segment.sequence, segment.file), segment)
        except Exception as exc:
            unreachable[region] = f"{type(exc).__name__}: {exc}"[:400]
    chain = recovery_chain(base, list(seen.values()))
    return SegmentChoice(chain.segments, chain.gap, unreachable)


@dataclass
class ReplayOutcome:
    """What the replay stage did."""

    fetched: list[FetchedSegment]
    plan: ReplayPlan
    result: ReplayResult
    fetch_s: float
    check_s: float

    @property
    def fallbacks(self) -> dict[str, dict[str, str]]:
        """segment file -> {region: why its copy was not used} (corrupt or unreadable copies)."""
        return {f.segment.file: f.failed for f in self.fetched if f.failed}


def replay_to(
    base: BackupManifest,
    segments: Sequence[SegmentManifest],
    stores: dict[str, ObjectStore],
    order: Sequence[str],
    target: MySQLConnection,
    to: datetime | None = None,
    until_gtid: str | None = None,
    workdir: Path | None = None,
) -> ReplayOutcome:
    """Fetch, check and replay `segments` after `base` on the throwaway `target` server.

    Raises:
        BackupVerificationError: a segment has no good copy in any region.
        RecoveryChainBroken: the downloaded files do not join up (nothing was replayed).
        ExternalCommandError: the replay itself failed.
    """
    start_gtid = base_gtid_of(base.gtid, base.backup_id)
    folder = Path(tempfile.mkdtemp(prefix="vibeops-binlogs-", dir=workdir))
    try:
        clock = time.perf_counter()
        fetched = fetch_segments(stores, order, segments, folder)
        fetch_s = time.perf_counter() - clock
        clock = time.perf_counter()
        check_fetched_chain(start_gtid, fetched)
        plan = plan_replay(start_gtid, fetched, to=to, until_gtid=until_gtid)
        check_s = time.perf_counter() - clock
        result = replay(plan, target, base.database)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return ReplayOutcome(fetched, plan, result, fetch_s, check_s)


def replay_lines(outcome: ReplayOutcome | None, gap: ChainGap | None) -> list[str]:
    """Report lines about the replay stage (empty when nothing was replayed)."""
    lines = []
    if outcome is not None:
        result = outcome.result
        reached = f"{result.point_at:%Y-%m-%d %H:%M:%S} UTC" if result.point_at else "the base"
        lines.append(
            f"Replayed {result.transactions:,} transaction(s) from {len(outcome.fetched)} archived "
            f"segment(s) ({result.binlog_bytes / 1e6:,.1f} MB of binlog) in {result.seconds:.1f}s, "
            f"up to {reached} (GTID {result.stop_gtid or '-'}), binary logging off on the target."
        )
        for file, failures in outcome.fallbacks.items():
            lines.append(
                f"- segment {file}: skipped copies in {', '.join(failures)} (corrupt or unreadable)"
            )
    if gap is not None:
        lines.append(f"**The archived chain stops early:** {gap}")
    return [*lines, ""] if lines else []


# -- chain proof -------------------------------------------------------------------------------


@dataclass
class ChainProof:
    """An older base replayed to a newer base's position, compared table by table."""

    older: str
    newer: str
    parity: list[TableParity]
    replay: ReplayOutcome | None
    gap: ChainGap | None

    @property
    def ok(self) -> bool:
        return self.gap is None and bool(self.parity) and all(p.ok for p in self.parity)

    @property
    def problems(self) -> list[str]:
        found = [f"table {p.table}: {p.problem}" for p in self.parity if not p.ok]
        return ([str(self.gap)] if self.gap else []) + found


def prove_chain(
    older: BackupManifest,
    newer: BackupManifest,
    stores: dict[str, ObjectStore],
    order: Sequence[str],
    name: str,
    protected_ports: Sequence[int],
) -> ChainProof:
    """Restore `older`, replay to `newer`'s GTID, compare every table with `newer`'s manifest.

    Row counts and CHECKSUM TABLE must match exactly: replay then lost nothing.
    """
    if not newer.gtid:
        raise ConfigurationError(f"base {newer.backup_id} records no GTID to replay up to")
    choice = choose_segments(stores, order, older)
    base = restore_base_on_server(older, stores, order, name, protected_ports)
    try:
        outcome = replay_to(
            older, choice.segments, stores, order, base.connection, until_gtid=newer.gtid
        )
        with_checksums = any(t.checksum is not None for t in newer.tables.values())
        restored = inspect_restored(base.connection, older.database, with_checksums)
        parity = compare_tables(newer.tables, restored)
    finally:
        base.server.remove()
    return ChainProof(older.backup_id, newer.backup_id, parity, outcome, choice.gap)


def older_base_for_proof(
    stores: dict[str, ObjectStore], order: Sequence[str], newer: BackupManifest
) -> BackupManifest | None:
    """The newest base older than `newer` whose archived chain reaches `newer`'s GTID."""
    if not newer.gtid:
        return None
    seen: dict[str, BackupManifest] = {}
    for region in order:
        with contextlib.suppress(Exception):
            for manifest in committed_backups(stores[region], newer.source, "mysql"):
                seen.setdefault(manifest.backup_id, manifest)
    target = parse_gtid_list(newer.gtid)
    for base in sorted(seen.values(), key=lambda m: m.consistent_at, reverse=True):
        if base.consistent_at >= newer.consistent_at or not base.gtid:
            continue
        chain = choose_segments(stores, order, base)
        reached = chain.segments[-1].gtid_last if chain.segments else ""
        if chain.segments and gtid_covered(parse_gtid_list(reached), target):
            return base
    return None


def proof_lines(proof: ChainProof | None) -> list[str]:
    """Report lines about the chain proof."""
    if proof is None:
        return []
    verdict = "passed ✅" if proof.ok else "FAILED ❌"
    lines = [
        f"Chain proof {verdict}: base `{proof.older}` replayed to `{proof.newer}`'s GTID "
        f"({proof.replay.result.transactions if proof.replay else 0:,} transactions), "
        f"{sum(p.ok for p in proof.parity)}/{len(proof.parity)} tables match its manifest "
        "(rows and CHECKSUM TABLE).",
    ]
    return [*lines, *[f"- {problem}" for problem in proof.problems[:10]], ""]


@task(cache_policy=NO_CACHE, name="prove-binlog-chain")
def prove_chain_task(
    newer: BackupManifest,
    stores: dict[str, ObjectStore],
    order: list[str],
    name: str,
    protected_ports: list[int],
) -> ChainProof | None:
    """Replay an older base to `newer`'s position and compare (None: no older base reaches it)."""
    older = older_base_for_proof(stores, order, newer)
    if older is None:
        get_run_logger().info(
            "chain proof skipped: no older base whose chain reaches %s", newer.backup_id
        )
        return None
    proof = prove_chain(older, newer, stores, order, name, protected_ports)
    get_run_logger().info(
        "chain proof %s -> %s: %s",
        older.backup_id,
        newer.backup_id,
        "ok" if proof.ok else proof.problems,
    )
    return proof


# -- a renamed copy on another server ---------------------------------------------------------


def copy_database(
    source: MySQLConnection,
    database: str,
    target: MySQLConnection,
    target_database: str,
    timeout_s: float = 6 * 3600,
) -> None:
    """Dump `database` from the throwaway server and load it into `target_database`.

    A dump of finished data can be loaded under any name safely (no statement in it names
    the database); this is how a renamed copy reaches a live server, never a rewritten replay.
    """
    from tasks.mysql import defaults_file, find_tool

    quote_identifier(target_database)
    dump = find_tool("mariadb-dump", "mysqldump", package="mariadb-client")
    client = find_tool("mariadb", "mysql", package="mariadb-client")
    with (
        defaults_file(source) as source_cnf,
        defaults_file(target) as target_cnf,
        tempfile.TemporaryFile() as dump_err,
        tempfile.TemporaryFile() as load_err,
    ):
        producer = subprocess.Popen(
            dump_command(dump, source_cnf, database), stdout=subprocess.PIPE, stderr=dump_err
        )
        consumer = subprocess.Popen(
            [
                client,
                f"--defaults-extra-file={target_cnf}",
                "--binary-mode",
                "--batch",
                "--max-allowed-packet=1G",
                f"--database={target_database}",
            ],
            stdin=producer.stdout,
            stdout=subprocess.DEVNULL,
            stderr=load_err,
        )
        assert producer.stdout is not None
        producer.stdout.close()
        try:
            codes = (consumer.wait(timeout=timeout_s), producer.wait(timeout=60))
        finally:
            for process in (producer, consumer):
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=30)
        if codes != (0, 0):
            dump_err.seek(0)
            load_err.seek(0)
            raise RestoreLoadError(
                f"copying {database} to {target_database} failed (dump exit {codes[1]}, load "
                f"exit {codes[0]}): {(dump_err.read() + load_err.read()).decode(errors='replace')[-800:]}"
            )


# -- Prefect tasks -----------------------------------------------------------------------------


@task(cache_policy=NO_CACHE, name="restore-base-on-throwaway-server")
def restore_base_task(
    manifest: BackupManifest,
    stores: dict[str, ObjectStore],
    order: list[str],
    name: str,
    protected_ports: list[int],
    connections: int = 2,
) -> BaseOnServer:
    """Restore the base on a new throwaway server (region fallback inside)."""
    base = restore_base_on_server(manifest, stores, order, name, protected_ports, connections)
    get_run_logger().info(
        "restored %s from %s on a throwaway server (port %s)%s",
        manifest.backup_id,
        base.region,
        base.server.port,
        "; failed copies: " + "; ".join(base.failed.values()) if base.failed else "",
    )
    return base


@task(cache_policy=NO_CACHE, name="replay-archived-binlogs")
def replay_task(
    base: BackupManifest,
    segments: list[SegmentManifest],
    stores: dict[str, ObjectStore],
    order: list[str],
    target: MySQLConnection,
    to: datetime | None = None,
    until_gtid: str | None = None,
) -> ReplayOutcome:
    """Fetch, check and replay the archived segments after the base."""
    outcome = replay_to(base, segments, stores, order, target, to=to, until_gtid=until_gtid)
    logger = get_run_logger()
    for file, failures in outcome.fallbacks.items():
        logger.warning("segment %s: fell back past %s", file, "; ".join(failures.values()))
    logger.info(
        "replayed %d transaction(s) from %d segment(s) in %.1fs: reached %s (GTID %s)",
        outcome.result.transactions,
        len(outcome.fetched),
        outcome.result.seconds,
        outcome.result.point_at.isoformat() if outcome.result.point_at else "the base",
        outcome.result.stop_gtid or base.gtid,
    )
    return outcome


@task(cache_policy=NO_CACHE, name="stop-throwaway-server")
def remove_server_task(server: ScratchServer) -> str:
    """Stop the throwaway server and delete its folder."""
    with contextlib.suppress(Exception):
        server.remove()
    if server.running or server.workdir.exists():
        raise RestoreLoadError(f"throwaway server in {server.workdir} could not be removed")
    return f"throwaway server on port {server.port} stopped, {server.workdir} deleted"
