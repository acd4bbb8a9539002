"""Restore-drill rules (pure: no I/O but the history file, no Prefect).

- which backup a drill restores (`select_backup`) and from which regions, in which order;
- the scratch database's name (`scratch_database_name`) and when a target is refused
  (`check_scratch_target`);
- parity of restored tables against the manifest (`compare_tables`);
- RTO/RPO arithmetic with a breakdown, and the verdict (`judge`);
- which leftover scratch databases a cleanup may drop (`plan_cleanup`);
- the drill history as JSON lines, one `DrillRecord` per drill (read by the metrics exporter).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from tasks.errors import BackupVerificationError, RestoreTargetRefused, StorageError
from tasks.form_fields import Duration, schema_pattern
from tasks.manifest import (
    BACKUP_ID,
    SOURCE_NAME,
    BackupManifest,
    TableFacts,
    validate_source_name,
)

DRILL_PREFIX = "drill_"
MAX_IDENTIFIER = 64
MARKER_TABLE = "_vibeops_drill"
SYSTEM_DATABASES = frozenset({"mysql", "information_schema", "performance_schema", "sys"})
SCRATCH_NAME = re.compile(r"^drill_[a-z0-9_]{1,58}$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# What `backup` accepts, as one pattern for the form (the day is checked again in Python).
BACKUP_SELECTOR = r"^(latest|[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}|[0-9]{4}-[0-9]{2}-[0-9]{2})$"


# -- which backup ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupChoice:
    """The backup a drill restores and the regions holding a committed copy, in try order."""

    manifest: BackupManifest
    regions: tuple[str, ...]
    skipped: tuple[str, ...] = ()
    """Newer backup ids passed over because no region had them committed."""


def validate_backup_selector(selector: str) -> str:
    """`latest`, a backup id (`YYYYmmddTHHMMSSZ-xxxxxx`) or a day (`YYYY-MM-DD`); else ValueError."""
    if selector == "latest" or BACKUP_ID.match(selector):
        return selector
    if DATE.match(selector):
        with contextlib.suppress(ValueError):
            date.fromisoformat(selector)
            return selector
    raise ValueError(
        f"backup {selector!r} is not 'latest', a backup id like 20250101T020000Z-a1b2c3 "
        "or a day like 2025-01-01"
    )


def select_backup(
    committed: Mapping[str, Sequence[BackupManifest]],
    selector: str,
    region_order: Sequence[str],
    uncommitted_ids: Iterable[str] = (),
) -> BackupChoice | None:
    """Pick the backup to restore.

    Args:
        committed: committed manifests per reachable region (any order).
        selector: `latest`, a backup id, or a day `YYYY-MM-DD` (newest backup of that UTC day).
        region_order: preferred region first; regions missing from `committed` are skipped.
        uncommitted_ids: backup ids seen without a readable manifest (reported as skipped).

    Returns:
        The choice, or None when no reachable region holds a matching committed backup.
    """
    by_id: dict[str, BackupManifest] = {}
    holders: dict[str, list[str]] = {}
    for region in region_order:
        for manifest in committed.get(region, ()):
            by_id.setdefault(manifest.backup_id, manifest)
            holders.setdefault(manifest.backup_id, []).append(region)
    candidates = sorted(by_id.values(), key=lambda m: (m.consistent_at, m.backup_id), reverse=True)
    if selector == "latest":
        chosen = candidates[0] if candidates else None
    elif DATE.match(selector):
        day = date.fromisoformat(selector)
        chosen = next(
            (m for m in candidates if m.consistent_at.astimezone(UTC).date() == day), None
        )
    else:
        chosen = by_id.get(selector)
    if chosen is None:
        return None
    skipped = tuple(sorted({i for i in uncommitted_ids if i > chosen.backup_id} - set(by_id)))
    return BackupChoice(manifest=chosen, regions=tuple(holders[chosen.backup_id]), skipped=skipped)


def region_try_order(regions: Sequence[str], prefer: str | None) -> list[str]:
    """The store's regions with `prefer` moved first (ValueError when it is not one of them)."""
    if prefer is None:
        return list(regions)
    if prefer not in regions:
        raise ValueError(f"prefer_region {prefer!r} is not a region of the backup store: {regions}")
    return [prefer, *[r for r in regions if r != prefer]]


class DrillSelection(BaseModel):
    """The parameters every restore drill shares: which backup, from where, against which targets.

    Each store's drill parameters extend it (and may override a default or a description).
    """

    source: str = Field(
        default="vibebench",
        description="Logical source name of the backups.",
        json_schema_extra=schema_pattern(SOURCE_NAME),
    )
    backup: str = Field(
        default="latest",
        description="'latest', a backup id (20250101T020000Z-a1b2c3) or a day (2025-01-01).",
        json_schema_extra=schema_pattern(BACKUP_SELECTOR),
    )
    store_block: str = Field(
        default="", description="Name of a 'VibeOps Backup Store' block; empty = local folders."
    )
    prefer_region: str = Field(
        default="", description="Region to restore from first; empty = the store's primary."
    )
    scratch_database: str = Field(
        default="",
        description="Scratch database name; empty = drill_{source}_{backup-id}. Never the source.",
    )
    rto_target: Duration = Field(
        default=timedelta(minutes=30), description="Recovery time objective (seed: 30 min)."
    )
    rpo_target: Duration = Field(
        default=timedelta(hours=1), description="Recovery point objective (seed: 1 h)."
    )

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        return validate_source_name(value)

    @field_validator("backup")
    @classmethod
    def _backup(cls, value: str) -> str:
        return validate_backup_selector(value.strip())

    @field_validator("rto_target", "rpo_target")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("targets must be longer than zero, e.g. 30m")
        return value


# -- the scratch target ------------------------------------------------------------------------


@dataclass(frozen=True)
class DrillMarker:
    """What a drill writes into its scratch database's marker table."""

    drill_run: str
    source: str
    backup_id: str
    created_at: datetime
    keep_until: datetime | None = None
    status: str = "restoring"


def _sanitise(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def scratch_database_name(source: str, backup_id: str) -> str:
    """`drill_{source}_{backup-id}`, lower case, `[a-z0-9_]` only, at most 64 characters."""
    name = f"{DRILL_PREFIX}{_sanitise(source)}_{_sanitise(backup_id)}"
    if len(name) <= MAX_IDENTIFIER:
        return name
    digest = hashlib.sha256(f"{source}/{backup_id}".encode()).hexdigest()[:8]
    return f"{name[: MAX_IDENTIFIER - 9]}_{digest}"


def check_scratch_target(
    target: str,
    protected: Iterable[str],
    existing: Mapping[str, DrillMarker | None] | None = None,
    now: datetime | None = None,
) -> str:
    """Return `target` if a drill may (re)create it, else raise RestoreTargetRefused.

    Args:
        target: the scratch database name.
        protected: databases a drill must never write into (the source database, ...).
        existing: databases on the drill server; the value is the drill marker, None if unmarked.
            Not given: only the name rules are checked (before any work).
        now: the current time, for a kept database's keep window.
    """
    lowered = target.lower()
    for name in protected:
        if name and lowered == name.lower():
            raise RestoreTargetRefused(
                f"scratch_database {target!r} is the source database; a drill restores only into "
                f"a database of its own: leave scratch_database empty (drill_<source>_<backup-id>)"
            )
    if lowered in SYSTEM_DATABASES or not SCRATCH_NAME.match(target):
        raise RestoreTargetRefused(
            f"scratch_database {target!r} is not a drill name: use 'drill_' followed by 1-58 "
            "lower-case letters, digits or '_' (or leave it empty)"
        )
    if existing is None:
        return target
    current = {name.lower(): marker for name, marker in existing.items()}
    if lowered not in current:
        return target
    marker = current[lowered]
    if marker is None:
        raise RestoreTargetRefused(
            f"scratch_database {target!r} already exists on the drill server and was not created "
            "by a drill (no marker table); choose another name or drop it by hand"
        )
    moment = now or datetime.now(UTC)
    if marker.keep_until is not None and marker.keep_until > moment:
        raise RestoreTargetRefused(
            f"scratch_database {target!r} is kept for inspection until "
            f"{marker.keep_until:%Y-%m-%d %H:%M} UTC (drill {marker.drill_run}); wait for "
            "cleanup-drills or run it with force_drop listing that name"
        )
    return target


@dataclass(frozen=True)
class CleanupItem:
    """One scratch database (or throwaway-server folder) a cleanup looked at."""

    database: str
    drop: bool
    reason: str
    what: str = "database"


def plan_cleanup(
    existing: Mapping[str, DrillMarker | None],
    now: datetime,
    stale_after: timedelta,
    force: Iterable[str] = (),
    what: str = "database",
) -> list[CleanupItem]:
    """Which `drill_*` databases to drop: expired keep windows, and stale unkept leftovers.

    A database without a marker is never dropped, whatever its name. `what` labels the items
    ("database", "mongodb database", "influxdb bucket").
    """
    forced = {name.lower() for name in force}
    plan = []
    for name in sorted(existing):
        if not name.lower().startswith(DRILL_PREFIX):
            continue
        marker = existing[name]
        if marker is None:
            reason = "no drill marker: not created by a drill, kept"
            plan.append(CleanupItem(name, False, reason, what))
        elif name.lower() in forced:
            plan.append(CleanupItem(name, True, "listed in force_drop", what))
        elif marker.keep_until is not None:
            ended = marker.keep_until <= now
            reason = f"{'keep window ended' if ended else 'kept until'} {marker.keep_until:%c}"
            plan.append(CleanupItem(name, ended, reason, what))
        elif now - marker.created_at >= stale_after:
            reason = f"left over by drill {marker.drill_run} ({marker.status})"
            plan.append(CleanupItem(name, True, reason, what))
        else:
            plan.append(CleanupItem(name, False, "a drill may still be using it", what))
    return plan


# -- parity ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoredTable:
    """What a restored table holds."""

    rows: int
    checksum: int | None = None


@dataclass(frozen=True)
class TableParity:
    """One table's comparison with the manifest."""

    table: str
    expected_rows: int | None
    actual_rows: int | None
    expected_checksum: int | None
    actual_checksum: int | None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def compare_tables(
    expected: Mapping[str, TableFacts], actual: Mapping[str, RestoredTable]
) -> list[TableParity]:
    """Row counts and CHECKSUM TABLE values, table by table (missing and extra tables too)."""
    result = []
    for table in sorted(set(expected) | set(actual)):
        want, got = expected.get(table), actual.get(table)
        problem = None
        if want is None:
            problem = "table not in the manifest"
        elif got is None:
            problem = "table missing after restore"
        elif got.rows != want.rows:
            problem = f"rows {got.rows} != {want.rows} in the manifest"
        elif want.checksum is not None and got.checksum != want.checksum:
            problem = f"CHECKSUM TABLE {got.checksum} != {want.checksum} in the manifest"
        result.append(
            TableParity(
                table=table,
                expected_rows=want.rows if want else None,
                actual_rows=got.rows if got else None,
                expected_checksum=want.checksum if want else None,
                actual_checksum=got.checksum if got else None,
                problem=problem,
            )
        )
    return result


# -- RTO, RPO, verdict -------------------------------------------------------------------------

PHASES = (
    "find",
    "failed_attempts",
    "prepare",
    "download",
    "decompress",
    "load",
    "validate",
    "replay",
)


@dataclass(frozen=True)
class DrillTargets:
    """The objectives a drill is judged against."""

    rto: timedelta = timedelta(minutes=30)
    rpo: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class RtoBreakdown:
    """Where the recovery time went; `other` is orchestration not inside a measured phase."""

    total: float
    phases: dict[str, float]

    @property
    def other(self) -> float:
        return max(0.0, self.total - sum(self.phases.values()))

    def rows(self) -> list[tuple[str, float, float]]:
        """(phase, seconds, share of the total) including `other`."""
        items = [*self.phases.items(), ("other", self.other)]
        return [(name, secs, secs / self.total if self.total else 0.0) for name, secs in items]


def rto_breakdown(
    started_at: datetime, validated_at: datetime, phases: Mapping[str, float]
) -> RtoBreakdown:
    """RTO = validated_at - started_at, with the measured phases (unknown names rejected)."""
    unknown = set(phases) - set(PHASES)
    if unknown:
        raise ValueError(f"unknown RTO phases {sorted(unknown)}; use {PHASES}")
    if validated_at < started_at:
        raise ValueError("validated_at is before started_at")
    total = (validated_at - started_at).total_seconds()
    return RtoBreakdown(total=total, phases={p: float(phases.get(p, 0.0)) for p in PHASES})


def rpo_of(started_at: datetime, consistent_at: datetime) -> timedelta:
    """RPO = drill start - the backup's consistent point (data lost if we restored now)."""
    return max(timedelta(0), started_at - consistent_at)


@dataclass(frozen=True)
class Verdict:
    """A drill's outcome and every reason it failed."""

    passed: bool
    reasons: tuple[str, ...] = ()

    @property
    def label(self) -> Literal["PASSED", "FAILED"]:
        return "PASSED" if self.passed else "FAILED"


def _fmt(delta: timedelta) -> str:
    if delta.total_seconds() < 60:
        return f"{delta.total_seconds():.1f}s"
    seconds = round(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def judge(
    targets: DrillTargets,
    rto: timedelta | None,
    rpo: timedelta | None,
    problems: Sequence[str] = (),
) -> Verdict:
    """Pass only when the restore validated (`rto` set, no problems) within both targets."""
    reasons = list(problems)
    if rto is None and not reasons:
        reasons.append("the restore did not complete, so there is no RTO")
    if rto is not None and rto > targets.rto:
        reasons.append(f"RTO {_fmt(rto)} exceeds the target {_fmt(targets.rto)}")
    if rpo is not None and rpo > targets.rpo:
        reasons.append(
            f"RPO {_fmt(rpo)} exceeds the target {_fmt(targets.rpo)}: the newest usable backup "
            "is too old"
        )
    return Verdict(passed=not reasons, reasons=tuple(reasons))


def format_duration(delta: timedelta | None) -> str:
    """`1h02m03s` / `4m05s`, or `-` when unknown."""
    return "-" if delta is None else _fmt(delta)


# -- history -----------------------------------------------------------------------------------


class DrillRecord(BaseModel):
    """One drill, as stored in the history file (one JSON object per line)."""

    source: str
    flow_run_id: str | None = None
    flow_run_name: str | None = None
    backup_id: str | None = None
    engine: str | None = None
    region: str | None = Field(default=None, description="Region the restore finally used.")
    corrupt_regions: list[str] = Field(default_factory=list)
    unreachable_regions: list[str] = Field(default_factory=list)
    started_at: datetime
    finished_at: datetime
    rto_seconds: float | None = None
    rpo_seconds: float | None = None
    rto_target_seconds: float
    rpo_target_seconds: float
    passed: bool
    reasons: list[str] = Field(default_factory=list)
    rows: int | None = None
    bytes: int | None = None
    phases: dict[str, float] = Field(default_factory=dict)


HISTORY_FILE = Path("drills") / "history.jsonl"


def history_file(home: Path) -> Path:
    """The drill history under the local state folder (`VIBEOPS_HOME`): drills/history.jsonl."""
    return home / HISTORY_FILE


def append_history(path: Path, record: DrillRecord) -> None:
    """Append one record to the JSON-lines history (created with its folder if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(record.model_dump_json() + "\n")


def read_history(
    path: Path, source: str | None = None, limit: int | None = None
) -> list[DrillRecord]:
    """Records from the history file, oldest first (unreadable lines are skipped).

    Args:
        path: the JSON-lines file; a missing file is an empty history.
        source: only this source's drills.
        limit: only the newest `limit` records.
    """
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = DrillRecord.model_validate(json.loads(line))
        except (ValueError, TypeError):
            continue
        if source is None or record.source == source:
            records.append(record)
    return records[-limit:] if limit else records


@dataclass
class CopyAttempt:
    """One try at restoring a region's copy."""

    region: str
    outcome: Literal["restored", "corrupt", "unreachable", "failed"]
    detail: str = ""
    objects: list[str] = field(default_factory=list)
    seconds: float = 0.0


def failed_copy_outcome(exc: Exception) -> Literal["corrupt", "unreachable", "failed"]:
    """How a region's copy failed: it did not verify, the storage did not answer, or else."""
    if isinstance(exc, BackupVerificationError):
        return "corrupt"
    if isinstance(exc, StorageError):
        return "unreachable"
    return "failed"


# -- the record of a finished drill (shared by the per-store drills) ---------------------------


@dataclass
class DrillFacts:
    """What a drill learned, in the terms every store shares."""

    source: str
    targets: DrillTargets
    started: datetime
    manifest: BackupManifest | None = None
    attempts: list[CopyAttempt] = field(default_factory=list)
    unreachable: Iterable[str] = ()
    validated_at: datetime | None = None
    problems: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    rows: int | None = None
    bytes: int | None = None
    engine: str | None = None  # when no manifest was found (else the manifest's engine)


def drill_record(
    facts: DrillFacts, finished: datetime, flow_run_id: str = "", flow_run_name: str | None = None
) -> tuple[DrillRecord, Verdict]:
    """The verdict and history record of a drill: RTO counts only a validated restore."""
    rto = facts.validated_at - facts.started if facts.validated_at and not facts.problems else None
    rpo = rpo_of(facts.started, facts.manifest.consistent_at) if facts.manifest else None
    verdict = judge(facts.targets, rto, rpo, facts.problems)
    record = DrillRecord(
        source=facts.source,
        flow_run_id=flow_run_id,
        flow_run_name=flow_run_name,
        backup_id=facts.manifest.backup_id if facts.manifest else None,
        engine=facts.manifest.engine if facts.manifest else facts.engine,
        region=next((a.region for a in facts.attempts if a.outcome == "restored"), None),
        corrupt_regions=[a.region for a in facts.attempts if a.outcome == "corrupt"],
        unreachable_regions=sorted(
            {a.region for a in facts.attempts if a.outcome == "unreachable"}
            | set(facts.unreachable)
        ),
        started_at=facts.started,
        finished_at=finished,
        rto_seconds=rto.total_seconds() if rto else None,
        rpo_seconds=rpo.total_seconds() if rpo is not None else None,
        rto_target_seconds=facts.targets.rto.total_seconds(),
        rpo_target_seconds=facts.targets.rpo.total_seconds(),
        passed=verdict.passed,
        reasons=list(verdict.reasons),
        rows=facts.rows,
        bytes=facts.bytes,
        phases={k: round(v, 3) for k, v in facts.phases.items()},
    )
    return record, verdict


def drill_event_payload(kind: str, record: DrillRecord) -> dict[str, object]:
    """The payload of `vibeops.drill.passed` / `.failed`."""
    return {
        "kind": kind,
        "backup_id": record.backup_id,
        "region": record.region,
        "rto_seconds": record.rto_seconds,
        "rpo_seconds": record.rpo_seconds,
        "rto_target_seconds": record.rto_target_seconds,
        "rpo_target_seconds": record.rpo_target_seconds,
        "corrupt_regions": record.corrupt_regions,
        "unreachable_regions": record.unreachable_regions,
        "reasons": record.reasons[:10],
    }
