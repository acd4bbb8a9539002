"""restore-mysql: the seed's Recovery Procedure as steps (refusals, plan, swap, report).

refuse first (nothing changed): bad `to`, non-empty target in mode `new`,
    `confirm` != the target database in mode `replace`
-> choose the base (newest committed base at or before `to`) and its segment chain
-> [replace] final backup of the target (backup-mysql)
-> base on a throwaway server + replay up to `to` (tasks/pitr_restore.py)
-> logical: dump from the throwaway server into the new database
   (mode replace: `<target>__restore_<stamp>`, then one RENAME TABLE swaps the tables and
   keeps the old ones in `<target>__before_<stamp>`)
   physical: the throwaway server keeps running in its folder; the report says how to switch
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.mysql import MySQLConnection
from tasks.binlog_catalog import ChainGap
from tasks.catalog import committed_backups
from tasks.drill import format_duration
from tasks.errors import ConfigurationError, RestoreRefused, StorageError
from tasks.manifest import BACKUP_ID, BackupManifest
from tasks.mysql import connect, quote_identifier
from tasks.restore import database_defaults_sql
from tasks.storage import ObjectStore

Mode = Literal["new", "replace"]
MAX_NAME = 64


# -- parameters --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestorePoint:
    """What `to` asked for: the newest point, a moment, or one base backup alone."""

    kind: Literal["latest", "time", "backup"]
    at: datetime | None = None
    backup_id: str | None = None

    def describe(self) -> str:
        if self.kind == "time" and self.at is not None:
            return f"{self.at:%Y-%m-%d %H:%M:%S} UTC"
        return self.backup_id or "latest"


def parse_restore_to(text: str) -> RestorePoint:
    """`latest`, an ISO-8601 time (UTC if no offset) or a backup id.

    Raises:
        ConfigurationError: naming `to` and the accepted forms.
    """
    value = text.strip()
    if value.lower() == "latest":
        return RestorePoint("latest")
    if BACKUP_ID.match(value):
        return RestorePoint("backup", backup_id=value)
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigurationError(
            f"to={text!r} is not 'latest', an ISO-8601 time (2026-12-02T14:05:00Z) or a backup "
            "id (20261202T020000Z-a1b2c3)"
        ) from None
    return RestorePoint("time", at=at if at.tzinfo else at.replace(tzinfo=UTC))


def stamp(at: datetime) -> str:
    return f"{at.astimezone(UTC):%Y%m%dT%H%M%S}"


def side_names(target: str, at: datetime) -> tuple[str, str]:
    """(database the restore is loaded into, database the replaced tables are kept in)."""
    suffix = stamp(at)
    restore, before = f"{target}__restore_{suffix}", f"{target}__before_{suffix}"
    if len(before) > MAX_NAME:
        raise ConfigurationError(
            f"target_database {target!r} is too long for mode 'replace': the old tables are "
            f"kept in {before!r}, longer than {MAX_NAME} characters"
        )
    return restore, before


# -- refusals ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetState:
    """The target database as found before anything changed."""

    exists: bool
    tables: list[str]


def read_target(conn: MySQLConnection, database: str) -> TargetState:
    quote_identifier(database)
    with connect(conn) as connection, connection.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = %s", (database,)
        )
        exists = bool(cur.fetchone()[0])  # type: ignore[index]
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
            " ORDER BY table_name",
            (database,),
        )
        tables = [str(r[0]) for r in cur.fetchall()]
    return TargetState(exists, tables)


def check_request(mode: Mode, target_database: str, confirm: str, state: TargetState) -> None:
    """Refuse before anything is changed.

    Raises:
        RestoreRefused: a non-empty target in mode `new`, a `confirm` that is not the target
            database's name in mode `replace`, or nothing to replace.
    """
    if mode == "new":
        if state.tables:
            raise RestoreRefused(
                f"target_database {target_database!r} exists and holds {len(state.tables)} "
                f"table(s) ({', '.join(state.tables[:5])}): mode 'new' only restores into a new "
                "or empty database. Choose another target_database, or mode 'replace' with "
                f"confirm={target_database!r} to replace it (a final backup is taken first)."
            )
        return
    if confirm != target_database:
        raise RestoreRefused(
            f"mode 'replace' replaces the live database {target_database!r}: type its name "
            f"exactly into `confirm` (got {confirm!r}). Nothing was changed."
        )
    if not state.exists:
        raise RestoreRefused(
            f"mode 'replace': database {target_database!r} does not exist; use mode 'new'"
        )


# -- choosing the base -------------------------------------------------------------------------


def committed_bases(
    stores: dict[str, ObjectStore], order: list[str], source: str
) -> list[BackupManifest]:
    """Committed base backups of `source` over every readable region (one per backup id)."""
    seen: dict[str, BackupManifest] = {}
    errors = []
    for region in order:
        try:
            for manifest in committed_backups(stores[region], source, "mysql"):
                seen.setdefault(manifest.backup_id, manifest)
        except Exception as exc:
            errors.append(f"{region}: {exc}")
    if errors and len(errors) == len(order):
        raise StorageError("no backup region could be listed: " + "; ".join(errors))
    return sorted(seen.values(), key=lambda m: m.consistent_at)


def choose_base(bases: list[BackupManifest], point: RestorePoint) -> BackupManifest:
    """The base a restore to `point` starts from.

    Raises:
        ConfigurationError: no committed base fits (naming what exists).
    """
    mysql = [b for b in bases if b.kind == "mysql"]
    if point.kind == "backup":
        found = [b for b in mysql if b.backup_id == point.backup_id]
        if not found:
            raise ConfigurationError(
                f"to={point.backup_id!r}: no committed backup with that id; newest are "
                + ", ".join(b.backup_id for b in mysql[-3:])
            )
        return found[0]
    if point.kind == "time":
        assert point.at is not None
        fitting = [b for b in mysql if b.consistent_at <= point.at]
        if not fitting:
            raise ConfigurationError(
                f"to={point.at.isoformat()} is older than every committed base backup (oldest: "
                f"{mysql[0].consistent_at.isoformat() if mysql else 'none'})"
            )
        return fitting[-1]
    if not mysql:
        raise ConfigurationError("no committed base backup of this source: run backup-mysql first")
    return mysql[-1]


# -- the swap ----------------------------------------------------------------------------------


def swap_tables(conn: MySQLConnection, live: str, restored: str, keep: str) -> list[str]:
    """One RENAME TABLE: live tables -> `keep`, restored tables -> live. Returns the tables moved.

    Atomic: readers see either every old table or every restored one. `restored` is dropped
    when empty afterwards.
    """
    q_live, q_restored, q_keep = (quote_identifier(n) for n in (live, restored, keep))
    old = read_target(conn, live).tables
    new = read_target(conn, restored).tables
    moves = [f"{q_live}.{quote_identifier(t)} TO {q_keep}.{quote_identifier(t)}" for t in old]
    moves += [f"{q_restored}.{quote_identifier(t)} TO {q_live}.{quote_identifier(t)}" for t in new]
    with connect(conn) as connection, connection.cursor() as cur:
        cur.execute(f"CREATE DATABASE {q_keep}")
        if moves:
            cur.execute("RENAME TABLE " + ", ".join(moves))
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = %s", (restored,)
        )
        if not cur.fetchone()[0]:  # type: ignore[index]
            cur.execute(f"DROP DATABASE {q_restored}")
    return new


def database_defaults(conn: MySQLConnection, database: str) -> tuple[str | None, str | None]:
    """`database`'s default character set and collation (None, None when it does not exist)."""
    with connect(conn) as connection, connection.cursor() as cur:
        cur.execute(
            "SELECT default_character_set_name, default_collation_name"
            " FROM information_schema.schemata WHERE schema_name = %s",
            (database,),
        )
        row = cur.fetchone()
    return (str(row[0]), str(row[1])) if row else (None, None)


def create_database(
    conn: MySQLConnection,
    database: str,
    charset: str | None = None,
    collation: str | None = None,
) -> bool:
    """Create `database` if missing, with `charset`/`collation` (utf8mb4 when not given).

    True when this call created it.
    """
    defaults = database_defaults_sql(charset, collation)
    with connect(conn) as connection, connection.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)} {defaults}")
        return bool(cur.rowcount)


def drop_database(conn: MySQLConnection, database: str) -> None:
    with connect(conn) as connection, connection.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {quote_identifier(database)}")


# -- report ------------------------------------------------------------------------------------


@dataclass
class RestoreReport:
    """What a restore-mysql run did, for the artifact, the events and the caller."""

    source: str
    target: str
    target_database: str
    mode: Mode
    to: str
    dry_run: bool
    started_at: datetime
    base_id: str | None = None
    base_engine: str | None = None
    base_consistent_at: datetime | None = None
    base_region: str | None = None
    segments: int = 0
    gap: str | None = None
    final_backup_id: str | None = None
    point_reached: datetime | None = None
    gtid_reached: str | None = None
    transactions_replayed: int = 0
    kept_as: str | None = None
    restored_into: str | None = None
    switch_hint: str | None = None
    fallbacks: list[str] = field(default_factory=list)
    timeline: list[tuple[datetime, str]] = field(default_factory=list)
    finished_at: datetime | None = None
    outcome: Literal["planned", "restored", "failed", "refused"] = "planned"
    error: str | None = None

    def step(self, what: str) -> None:
        self.timeline.append((datetime.now(UTC), what))

    @property
    def rto(self) -> timedelta | None:
        return self.finished_at - self.started_at if self.finished_at else None

    def payload(self) -> dict[str, object]:
        return {
            "source": self.source,
            "target": self.target,
            "target_database": self.target_database,
            "mode": self.mode,
            "to": self.to,
            "dry_run": self.dry_run,
            "base_id": self.base_id,
            "final_backup_id": self.final_backup_id,
            "point_reached": self.point_reached.isoformat() if self.point_reached else None,
            "gtid_reached": self.gtid_reached,
            "transactions_replayed": self.transactions_replayed,
            "kept_as": self.kept_as,
            "rto_seconds": round(self.rto.total_seconds(), 1) if self.rto else None,
            "outcome": self.outcome,
            "error": (self.error or "")[:500] or None,
        }


def render_report(report: RestoreReport) -> str:
    """The run's Markdown artifact: outcome, point reached, timeline, RTO."""
    title = {
        "planned": "plan (dry run: nothing changed)",
        "restored": "restored ✅",
        "failed": "FAILED ❌",
        "refused": "refused (nothing changed)",
    }[report.outcome]
    lines = [
        f"# restore-mysql `{report.source}` → `{report.target_database}` on {report.target}: {title}",
        "",
        "| | |",
        "|---|---|",
        f"| mode | `{report.mode}` |",
        f"| asked for (`to`) | {report.to} |",
        f"| base backup | `{report.base_id or '-'}` ({report.base_engine or '-'}), consistent at "
        f"{report.base_consistent_at:%Y-%m-%d %H:%M:%S} UTC, from {report.base_region or '-'} |"
        if report.base_consistent_at
        else f"| base backup | `{report.base_id or '-'}` |",
        f"| archived segments in the chain | {report.segments} |",
        f"| point reached | {report.point_reached:%Y-%m-%d %H:%M:%S} UTC (GTID {report.gtid_reached or '-'}) |"
        if report.point_reached
        else "| point reached | the base's consistent point |",
        f"| transactions replayed | {report.transactions_replayed:,} |",
        f"| final backup of the target | `{report.final_backup_id}` |"
        if report.final_backup_id
        else "| final backup of the target | - |",
        f"| restored into | `{report.restored_into or '-'}` |",
        f"| old tables kept in | `{report.kept_as}` |" if report.kept_as else "",
        f"| RTO (start to restored) | {format_duration(report.rto)} |" if report.rto else "",
    ]
    lines = [line for line in lines if line]
    if report.gap:
        lines += ["", f"**The chain stops early:** {report.gap}"]
    if report.error:
        lines += ["", f"**Error:** {report.error}"]
    if report.fallbacks:
        lines += [
            "",
            "**Corrupt or unreadable copies skipped:**",
            *[f"- {f}" for f in report.fallbacks],
        ]
    if report.switch_hint:
        lines += ["", "## How to switch", "", report.switch_hint]
    if report.timeline:
        lines += ["", "## Timeline", "", "| time (UTC) | +s | step |", "|---|---|---|"]
        for at, what in report.timeline:
            lines.append(
                f"| {at:%H:%M:%S} | {(at - report.started_at).total_seconds():.1f} | {what} |"
            )
    return "\n".join(lines) + "\n"


def physical_switch_hint(workdir: str, port: int, database: str) -> str:
    return (
        f"The restored server runs from `{workdir}` on 127.0.0.1:{port} (database `{database}`, "
        "binary log off). To switch: stop writes to the old server, point the application "
        f"(its connection block) at port {port}, or stop both servers and start the production "
        f"server with `datadir={workdir}/data`. The old server's datadir was not touched."
    )


def gap_text(gap: ChainGap | None) -> str | None:
    return str(gap) if gap else None


# -- Prefect tasks -----------------------------------------------------------------------------


@task(cache_policy=NO_CACHE, name="check-restore-target")
def check_restore_target(
    conn: MySQLConnection, mode: Mode, target_database: str, confirm: str
) -> TargetState:
    """Read the target and refuse (RestoreRefused) before anything changes."""
    state = read_target(conn, target_database)
    check_request(mode, target_database, confirm, state)
    return state


@task(cache_policy=NO_CACHE, name="load-restored-copy")
def load_copy_task(
    source: MySQLConnection, database: str, target: MySQLConnection, target_database: str
) -> None:
    """Dump the replayed database from the throwaway server into the target database."""
    from tasks.pitr_restore import copy_database

    # The target gets the restored database's defaults (the source's, from the manifest), so
    # tables created on it later match the source as the copied tables do.
    created = create_database(target, target_database, *database_defaults(source, database))
    try:
        copy_database(source, database, target, target_database)
    except BaseException:
        if created:
            drop_database(target, target_database)
        raise
    get_run_logger().info("loaded the restored copy into %s", target_database)


@task(cache_policy=NO_CACHE, name="swap-restored-tables")
def swap_task(conn: MySQLConnection, live: str, restored: str, keep: str) -> list[str]:
    """RENAME TABLE swap; the replaced tables stay in `keep`."""
    moved = swap_tables(conn, live, restored, keep)
    get_run_logger().info(
        "swapped %d table(s) into %s; old tables kept in %s", len(moved), live, keep
    )
    return moved


def valid_database_name(name: str, field_name: str) -> str:
    """A database name restore-mysql may create (letters, digits, _, $; 1-64)."""
    if not re.fullmatch(r"[A-Za-z0-9_$]{1,64}", name):
        raise ConfigurationError(
            f"{field_name} {name!r} is not a plain database name: use 1-64 letters, digits, '_' or '$'"
        )
    return name
