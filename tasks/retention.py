"""Retention as data: rule kinds, policy validation, the purge plan and backup decisions.

Pure: no I/O, no Prefect. The flow gathers facts (row counts, object listings, backup
catalogs) and hands them here with a fixed `now`; everything decided from them is
computed and tested without a server.

A rule is one target (a MySQL table, an object prefix, the backup folders, later a MongoDB
collection or an InfluxDB bucket), how its age is read (a time column, the object's update
time or the date in its key, the backup id), and what happens when it is old enough
(delete, archive, compress, or keep forever).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from tasks.catalog import BackupEntry
from tasks.errors import RetentionPolicyInvalid, RetentionRefused
from tasks.manifest import MANIFEST_NAME, BackupManifest, backup_time
from tasks.storage import ObjectInfo

AUDIT_MIN_DAYS = 2557
"""Seven years (7 x 365.25 days, rounded up): the compliance floor for audit data."""

BACKUP_KINDS = ("mysql", "mongodb", "influxdb")
COMPRESSED_SUFFIX = ".gz"
IDENTIFIER = re.compile(r"^[A-Za-z0-9_$]{1,64}$")
MONGO_NAME = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
RULE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
DAY = re.compile(r"(?<!\d)\d{4}-\d{2}-\d{2}(?!\d)")
KEY_DATE = re.compile(r"(?<!\d)(\d{4})[/_-]?(\d{2})[/_-]?(\d{2})(?!\d)")

DataClass = Literal["raw", "artifact", "log", "backup", "audit", "aggregated", "other"]
AgeSource = Literal["updated", "key_date"]


class Decision(StrEnum):
    """What the backup policy says about one backup (barman's KEEP/OBSOLETE, with a tier)."""

    KEEP = "KEEP"
    ARCHIVE = "ARCHIVE"
    DELETE = "DELETE"


# -- rule kinds --------------------------------------------------------------------------------


class _Rule(BaseModel):
    name: str = Field(description="Unique rule name: lowercase letters, digits and '-'.")
    enabled: bool = Field(default=True, description="Disabled rules are validated but not run.")
    data_class: DataClass = Field(
        default="raw",
        description="What the data is; 'audit' must be kept 7 years, 'aggregated' forever.",
    )
    description: str = Field(default="", description="Why this rule exists (shown in reports).")

    @property
    def target(self) -> str:
        raise NotImplementedError

    @property
    def destructive(self) -> bool:
        return self.enabled and getattr(self, "action", "delete") in ("delete", "archive")


class MySQLTableRule(_Rule):
    """Rows of one MySQL table whose time column is older than the age are deleted in chunks."""

    kind: Literal["mysql_table"] = "mysql_table"
    table: str = Field(description="Table name, or 'database.table' for another database.")
    time_column: str = Field(default="created_at", description="DATETIME/TIMESTAMP column (UTC).")
    action: Literal["delete", "keep"] = Field(default="delete", description="delete or keep.")
    older_than_days: int | None = Field(
        default=None, description="Age in days past which rows go; empty for action 'keep'."
    )

    @property
    def target(self) -> str:
        return f"table {self.table}.{self.time_column}"


class ObjectPrefixRule(_Rule):
    """Objects under a key prefix in every backup-store destination."""

    kind: Literal["object_prefix"] = "object_prefix"
    prefix: str = Field(description="Key prefix, e.g. 'logs/' or 'artifacts/'.")
    age_from: AgeSource = Field(
        default="updated",
        description="'updated' = the object's last write; 'key_date' = a YYYY/MM/DD date in its key.",
    )
    action: Literal["delete", "archive", "compress", "keep"] = Field(
        description="delete, archive (storage class), compress (gzip to <key>.gz) or keep."
    )
    older_than_days: int | None = Field(
        default=None, description="Age in days past which the action applies."
    )

    @property
    def target(self) -> str:
        return f"prefix {self.prefix}"


class BackupRule(_Rule):
    """Backup folders as a unit: keep the newest N, archive, then delete (manifest last)."""

    kind: Literal["backups"] = "backups"
    data_class: DataClass = Field(default="backup", description="Always 'backup'.")
    backup_kind: Literal["mysql", "mongodb", "influxdb"] = Field(
        default="mysql", description="Which backups: the first segment of their keys."
    )
    sources: list[str] = Field(
        default_factory=list, description="Source names to manage; empty means every source."
    )
    keep_newest: int = Field(
        default=7, description="Committed backups always kept per source and region."
    )
    archive_after_days: int | None = Field(
        default=30, description="Move to the archive storage class after this many days."
    )
    delete_after_days: int | None = Field(
        default=90, description="Delete after this many days (empty: never)."
    )

    @property
    def target(self) -> str:
        return f"backups {self.backup_kind}/{','.join(self.sources) or '*'}"


class MongoCollectionRule(_Rule):
    """Documents of a MongoDB collection whose date field is older than the age are deleted in
    bounded batches by `_id` range."""

    kind: Literal["mongodb_collection"] = "mongodb_collection"
    database: str = Field(description="MongoDB database.")
    collection: str = Field(description="Collection name.")
    time_field: str = Field(default="created_at", description="Date field of the documents.")
    action: Literal["delete", "keep"] = Field(default="delete", description="delete or keep.")
    older_than_days: int | None = Field(default=None, description="Age in days.")

    @property
    def target(self) -> str:
        return f"collection {self.database}.{self.collection}.{self.time_field}"


class InfluxTier(BaseModel):
    """One tier of time-series data: data older than the previous tier lands here."""

    name: str = Field(description="Tier label, e.g. hot, warm, cold.")
    until_days: int = Field(description="Data stays in this tier until it is this many days old.")
    downsample_every: timedelta | None = Field(
        default=None, description="Aggregate window when data enters this tier (None = raw)."
    )
    archive: bool = Field(default=False, description="Tier lives in archive storage.")
    bucket: str | None = Field(
        default=None,
        description="Bucket of this tier; empty = the rule's bucket (first tier) or "
        "<bucket>_<tier name>.",
    )


class InfluxTiersRule(_Rule):
    """InfluxDB hot/warm/cold tiers: older points are aggregated into the next tier's bucket,
    then deleted from the younger one (executor: tasks.influx_retention)."""

    kind: Literal["influxdb_tiers"] = "influxdb_tiers"
    bucket: str = Field(description="InfluxDB bucket (database/retention policy in 1.x).")
    measurement: str | None = Field(default=None, description="One measurement, or all.")
    tiers: list[InfluxTier] = Field(description="Tiers, youngest first.")
    delete_after_last_tier: bool = Field(
        default=False, description="Delete data older than the last tier (else keep it there)."
    )

    @property
    def target(self) -> str:
        return f"influx {self.bucket}/{self.measurement or '*'}"


Rule = Annotated[
    MySQLTableRule | ObjectPrefixRule | BackupRule | MongoCollectionRule | InfluxTiersRule,
    Field(discriminator="kind"),
]
EXECUTABLE_KINDS = (
    "mysql_table",
    "object_prefix",
    "backups",
    "mongodb_collection",
    "influxdb_tiers",
)


class PolicySpec(BaseModel):
    """The policy as plain data (the RetentionPolicy block's rules and guards)."""

    rules: list[Rule] = Field(description="Retention rules, run in this order.")
    max_delete_fraction: float = Field(
        default=0.5,
        description="Refuse to delete more than this fraction of a table or prefix in one run "
        "unless the run is forced.",
    )


def seed_rules() -> list[Rule]:
    """The seed document's retention rules (deployment-strategy.md, 'Data Retention Policy')."""
    return [
        MySQLTableRule(
            name="raw-experiments",
            table="experiments",
            time_column="created_at",
            older_than_days=30,
            description="Raw benchmark data: 30 days.",
        ),
        MySQLTableRule(
            name="audit-log",
            table="audit_log",
            time_column="created_at",
            older_than_days=AUDIT_MIN_DAYS,
            data_class="audit",
            description="Audit logs: 7 years (compliance), never purged younger.",
        ),
        MySQLTableRule(
            name="aggregated-metrics",
            table="metrics_aggregated",
            action="keep",
            data_class="aggregated",
            description="Aggregated metrics: kept indefinitely.",
        ),
        ObjectPrefixRule(
            name="artifacts",
            prefix="artifacts/",
            action="delete",
            older_than_days=60,
            data_class="artifact",
            description="Benchmark artifacts: deleted after 60 days.",
        ),
        ObjectPrefixRule(
            name="logs",
            prefix="logs/",
            action="compress",
            older_than_days=7,
            data_class="log",
            description="Logs: gzip-compressed after 7 days.",
        ),
        BackupRule(
            name="mysql-backups",
            backup_kind="mysql",
            description="Backups: 30 days standard, archived until 90 days, newest 7 always kept.",
        ),
    ]


# -- validation --------------------------------------------------------------------------------


def is_audit(rule: _Rule) -> bool:
    """Audit data by declaration or by name: a mislabelled audit table is still protected."""
    return rule.data_class == "audit" or "audit" in rule.target.lower()


def _age_problems(rule: Any) -> list[str]:
    problems: list[str] = []
    action = getattr(rule, "action", None)
    days = getattr(rule, "older_than_days", None)
    if action == "keep":
        if days is not None:
            problems.append(
                f"rule {rule.name!r}: action 'keep' takes no older_than_days (got {days}); "
                "remove it or pick delete/archive/compress"
            )
        return problems
    if days is None:
        problems.append(f"rule {rule.name!r}: older_than_days is required for action {action!r}")
    elif days <= 0:
        problems.append(
            f"rule {rule.name!r}: older_than_days must be a positive number of days, got {days}"
        )
    if is_audit(rule) and action == "delete" and days is not None and days < AUDIT_MIN_DAYS:
        problems.append(
            f"rule {rule.name!r}: audit data must be kept 7 years; older_than_days={days} is "
            f"below {AUDIT_MIN_DAYS} days. Raise it to at least {AUDIT_MIN_DAYS}"
        )
    if rule.data_class == "aggregated" and action in ("delete", "archive"):
        problems.append(
            f"rule {rule.name!r}: aggregated metrics are kept indefinitely; use action 'keep'"
        )
    return problems


def _kind_problems(rule: Any) -> list[str]:
    problems: list[str] = []
    name = rule.name
    if isinstance(rule, MySQLTableRule):
        parts = rule.table.split(".")
        if len(parts) > 2 or not all(IDENTIFIER.match(p) for p in parts):
            problems.append(
                f"rule {name!r}: table {rule.table!r} is not a plain 'table' or 'database.table' "
                "name (letters, digits, '_' and '$')"
            )
        if not IDENTIFIER.match(rule.time_column):
            problems.append(f"rule {name!r}: time_column {rule.time_column!r} is not a plain name")
    elif isinstance(rule, ObjectPrefixRule):
        prefix = rule.prefix
        if not prefix.strip("/") or prefix.startswith("/") or ".." in prefix.split("/"):
            problems.append(
                f"rule {name!r}: prefix {prefix!r} must be a relative key prefix such as 'logs/'"
            )
        elif prefix.split("/")[0] in BACKUP_KINDS:
            problems.append(
                f"rule {name!r}: prefix {prefix!r} is inside the backup folders; backups are "
                "archived and deleted whole by a 'backups' rule, not by prefix"
            )
    elif isinstance(rule, BackupRule):
        if rule.keep_newest < 1:
            problems.append(
                f"rule {name!r}: keep_newest must be at least 1, got {rule.keep_newest}"
            )
        for field in ("archive_after_days", "delete_after_days"):
            value = getattr(rule, field)
            if value is not None and value <= 0:
                problems.append(
                    f"rule {name!r}: {field} must be a positive number of days, got {value}"
                )
        archive, delete = rule.archive_after_days, rule.delete_after_days
        if archive is not None and delete is not None and 0 < delete <= archive:
            problems.append(
                f"rule {name!r}: delete_after_days ({delete}) must be greater than "
                f"archive_after_days ({archive})"
            )
        problems += [
            f"rule {name!r}: source {s!r} is not a valid source name"
            for s in rule.sources
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", s)
        ]
    elif isinstance(rule, MongoCollectionRule):
        if not MONGO_NAME.match(rule.database) or not MONGO_NAME.match(rule.collection):
            problems.append(
                f"rule {name!r}: database {rule.database!r} / collection {rule.collection!r} "
                "must be plain names (letters, digits, '_' and '-', no dots)"
            )
        if not MONGO_NAME.match(rule.time_field):
            problems.append(
                f"rule {name!r}: time_field {rule.time_field!r} must be a top-level field name"
            )
    elif isinstance(rule, InfluxTiersRule):
        previous = 0
        for tier in rule.tiers:
            if tier.until_days <= previous:
                problems.append(
                    f"rule {name!r}: tier {tier.name!r} until_days={tier.until_days} must be "
                    f"positive and greater than the previous tier's ({previous})"
                )
            if tier.downsample_every is not None and tier.downsample_every <= timedelta(0):
                problems.append(f"rule {name!r}: tier {tier.name!r} downsample_every must be > 0")
            if previous and tier.downsample_every is None:
                problems.append(
                    f"rule {name!r}: tier {tier.name!r} needs downsample_every (e.g. PT1H): "
                    "data entering it from the previous tier is aggregated"
                )
            previous = tier.until_days
        if not rule.tiers:
            problems.append(f"rule {name!r}: tiers must list at least one tier")
        elif is_audit(rule) and rule.delete_after_last_tier and previous < AUDIT_MIN_DAYS:
            problems.append(
                f"rule {name!r}: audit data must be kept 7 years; the last tier ends at "
                f"{previous} days. Extend it to at least {AUDIT_MIN_DAYS} days"
            )
    if rule.enabled and rule.kind not in EXECUTABLE_KINDS:
        problems.append(
            f"rule {name!r}: kind {rule.kind!r} is modelled but has no executor yet; "
            "set enabled: false until that store's purge lands"
        )
    return problems


def _overlaps(a: Any, b: Any) -> bool:
    if isinstance(a, MySQLTableRule) and isinstance(b, MySQLTableRule):
        return bool(a.table.lower() == b.table.lower())
    if isinstance(a, ObjectPrefixRule) and isinstance(b, ObjectPrefixRule):
        return bool(a.prefix.startswith(b.prefix) or b.prefix.startswith(a.prefix))
    if isinstance(a, MongoCollectionRule) and isinstance(b, MongoCollectionRule):
        return bool((a.database, a.collection) == (b.database, b.collection))
    return False


def rule_cutoff(rule: Any, now: datetime) -> datetime | None:
    """The instant before which the rule's action applies (None for keep rules)."""
    if isinstance(rule, BackupRule):
        days = rule.archive_after_days or rule.delete_after_days
    elif isinstance(rule, InfluxTiersRule):
        days = rule.tiers[0].until_days if rule.tiers else None
    else:
        days = None if getattr(rule, "action", None) == "keep" else rule.older_than_days
    return None if days is None else now - timedelta(days=days)


def validate_policy(spec: PolicySpec, now: datetime, wall_clock: datetime) -> None:
    """Refuse a policy that would break a guard, before anything runs.

    Args:
        spec: The policy.
        now: The instant the plan is computed for (injected; a run's `as_of`).
        wall_clock: The real current time, to refuse cutoffs in the future.

    Raises:
        RetentionPolicyInvalid: listing every problem found, each naming the rule and the fix.
    """
    problems: list[str] = []
    if now.tzinfo is None:
        problems.append("as_of must carry a time zone (UTC), e.g. 2025-06-01T00:00:00Z")
        now = now.replace(tzinfo=UTC)
    if not spec.rules:
        problems.append("rules is empty; add at least one rule")
    if not 0 < spec.max_delete_fraction <= 1:
        problems.append(f"max_delete_fraction must be in (0, 1], got {spec.max_delete_fraction}")
    seen: set[str] = set()
    for rule in spec.rules:
        if not RULE_NAME.match(rule.name):
            problems.append(
                f"rule name {rule.name!r} must be lowercase letters, digits and '-' "
                "(it is used in artifact keys)"
            )
        if rule.name in seen:
            problems.append(f"rule name {rule.name!r} is used twice; rule names must be unique")
        seen.add(rule.name)
        if not isinstance(rule, BackupRule | InfluxTiersRule):
            problems += _age_problems(rule)
        problems += _kind_problems(rule)
        cutoff = rule_cutoff(rule, now) if rule.enabled else None
        if cutoff is not None and cutoff > wall_clock:
            problems.append(
                f"rule {rule.name!r}: cutoff {cutoff:%Y-%m-%d %H:%M}Z is in the future "
                f"(as_of {now:%Y-%m-%d %H:%M}Z is too late); use an as_of at or before now"
            )
    keeps = [r for r in spec.rules if getattr(r, "action", None) == "keep"]
    for rule in spec.rules:
        if not rule.destructive:
            continue
        for keep in keeps:
            if _overlaps(rule, keep):
                problems.append(
                    f"rule {rule.name!r} would {getattr(rule, 'action', 'delete')} data that "
                    f"rule {keep.name!r} keeps "
                    f"indefinitely ({keep.target}); narrow the target or drop one rule"
                )
    if problems:
        raise RetentionPolicyInvalid(
            "retention policy refused, nothing was changed:\n- " + "\n- ".join(problems)
        )


def split_table(table: str, default_database: str) -> tuple[str, str]:
    """('db', 'table') from 'table' or 'db.table'."""
    database, _, name = table.rpartition(".")
    return (database or default_database), name


# -- backup decisions --------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupFacts:
    """What the policy needs to know about one backup copy in one region."""

    backup_id: str
    taken_at: datetime
    committed: bool
    complete: bool = True
    unreadable: str | None = None
    base_backup_id: str | None = None  # an incremental's full base (kept and purged with it)

    @classmethod
    def from_entry(cls, entry: BackupEntry) -> BackupFacts:
        present = {obj.key for obj in entry.objects}
        complete = entry.manifest is not None and all(
            entry.manifest.object_key(obj.name) in present for obj in entry.manifest.objects
        )
        return cls(
            backup_id=entry.backup_id,
            taken_at=backup_time(entry.backup_id),
            committed=entry.manifest is not None,
            complete=complete,
            unreadable=entry.manifest_error,
            base_backup_id=chain_base(entry.manifest),
        )


def chain_base(manifest: BackupManifest | None) -> str | None:
    """The full backup an incremental InfluxDB backup builds on (None: not an incremental)."""
    details = manifest.influxdb if manifest is not None else None
    return details.base_backup_id if details is not None and details.mode == "incremental" else None


_RETENTIVE = {"KEEP": 2, "ARCHIVE": 1, "DELETE": 0}


def _keep_chains_together(backups: Sequence[BackupFacts], decisions: dict[str, Decision]) -> None:
    """A full base and its incrementals share the most retentive decision of any of them
    (KEEP over ARCHIVE over DELETE): a base is never purged while an incremental needing it
    stays, and incrementals go with their base."""
    chains: dict[str, list[str]] = {}
    for b in backups:
        if b.base_backup_id is not None and b.base_backup_id in decisions:
            chains.setdefault(b.base_backup_id, [b.base_backup_id]).append(b.backup_id)
    for members in chains.values():
        best = max((decisions[m] for m in members), key=lambda d: _RETENTIVE[d.value])
        for member in members:
            decisions[member] = best


def decide_backups(
    backups: Sequence[BackupFacts],
    now: datetime,
    *,
    keep_newest: int = 7,
    archive_after: timedelta | None = timedelta(days=30),
    delete_after: timedelta | None = timedelta(days=90),
    protected: Iterable[str] = (),
) -> dict[str, Decision]:
    """Decide KEEP, ARCHIVE or DELETE for each backup of one source in one region.

    The newest `keep_newest` committed and complete backups are kept whatever their age;
    backups referenced by a running or scheduled drill (`protected`: ids, or days as
    `YYYYmmdd`, see `drill_references`) are never touched. An InfluxDB full backup and the
    incrementals built on it are decided together (the most retentive decision wins).
    An incomplete backup (no manifest: a crashed upload or a half-finished purge) goes once it
    is past `delete_after`. A committed one whose objects are partly gone is finished the
    same way.

    Raises:
        RetentionRefused: when any manifest is unreadable (the catalog is partly unknown).
    """
    unreadable = [b for b in backups if b.unreadable]
    if unreadable:
        details = "; ".join(f"{b.backup_id}: {b.unreadable}" for b in unreadable[:5])
        raise RetentionRefused(
            f"backup catalog is partly unreadable ({len(unreadable)} manifest(s)): {details}. "
            "Nothing was archived or deleted; repair or remove those folders by hand"
        )
    if keep_newest < 1:
        raise RetentionPolicyInvalid(f"keep_newest must be at least 1, got {keep_newest}")
    references = set(protected)
    healthy = sorted(
        (b for b in backups if b.committed and b.complete and b.taken_at <= now),
        key=lambda b: b.taken_at,
        reverse=True,
    )
    keep = {b.backup_id for b in healthy[:keep_newest]}
    keep |= {b.backup_id for b in backups if is_protected(b.backup_id, references)}
    decisions: dict[str, Decision] = {}
    for b in backups:
        age = now - b.taken_at
        if b.backup_id in keep or age < timedelta(0):
            decisions[b.backup_id] = Decision.KEEP
        elif delete_after is not None and age >= delete_after:
            decisions[b.backup_id] = Decision.DELETE
        elif archive_after is not None and age >= archive_after and b.committed and b.complete:
            decisions[b.backup_id] = Decision.ARCHIVE
        else:
            decisions[b.backup_id] = Decision.KEEP
    _keep_chains_together(backups, decisions)
    kept = sum(1 for b in healthy if decisions[b.backup_id] != Decision.DELETE)
    assert kept >= min(keep_newest, len(healthy)), "minimum redundancy would be broken"
    return decisions


def drill_references(value: Any) -> set[str]:
    """Backup ids and days (as `YYYYmmdd`) mentioned anywhere in a drill's parameters.

    A drill picks `latest`, a backup id or a day; `latest` is always among the newest kept,
    so ids and days are what must be protected.
    """
    found: set[str] = set()
    if isinstance(value, str):
        found.update(m.group(0) for m in re.finditer(r"\d{8}T\d{6}Z-[0-9a-f]{6}", value))
        found.update(m.group(0).replace("-", "") for m in re.finditer(DAY.pattern, value))
    elif isinstance(value, Mapping):
        for item in value.values():
            found |= drill_references(item)
    elif isinstance(value, list | tuple | set):
        for item in value:
            found |= drill_references(item)
    return found


def is_protected(backup_id: str, references: set[str]) -> bool:
    """True when a drill references the backup by id or by its day."""
    return backup_id in references or backup_id[:8] in references


# -- the plan ----------------------------------------------------------------------------------


class ObjectStep(BaseModel):
    """One object-level action of a plan, in execution order."""

    region: str
    key: str
    size: int
    action: Literal["delete", "archive", "compress"]
    backup_id: str | None = None


@dataclass(frozen=True)
class TableFacts:
    """What the server said about a table rule's rows (gathered with the rule's cutoff)."""

    database: str
    table: str
    matching_rows: int
    total_rows: int
    avg_row_length: int
    min_pk: int | None = None
    max_pk: int | None = None


class RulePlan(BaseModel):
    """What one rule would do, computed for a fixed `now`."""

    rule: str
    kind: str
    action: str
    target: str
    cutoff: datetime | None = None
    rows: int = 0
    objects: int = 0
    bytes: int = 0
    total: int | None = Field(default=None, description="Rows/objects the target holds.")
    database: str | None = None
    table: str | None = None
    time_column: str | None = None
    min_pk: int | None = None
    max_pk: int | None = None
    steps: list[ObjectStep] = Field(default_factory=list)
    decisions: dict[str, dict[str, Decision]] = Field(default_factory=dict)
    refused: str | None = None
    notes: list[str] = Field(default_factory=list)

    @property
    def has_work(self) -> bool:
        return self.refused is None and (self.rows > 0 or bool(self.steps))


class RetentionPlan(BaseModel):
    """The whole plan: one entry per enabled rule."""

    policy: str
    as_of: datetime
    rules: list[RulePlan]

    @property
    def has_work(self) -> bool:
        return any(r.has_work for r in self.rules)

    def to_markdown(self) -> str:
        lines = [
            f"# Retention plan `{self.policy}` as of {self.as_of:%Y-%m-%d %H:%M}Z",
            "",
            "| rule | action | target | cutoff | rows | objects | bytes | note |",
            "|---|---|---|---|---:|---:|---:|---|",
        ]
        for r in self.rules:
            cutoff = f"{r.cutoff:%Y-%m-%d %H:%M}Z" if r.cutoff else "-"
            note = f"REFUSED: {r.refused}" if r.refused else "; ".join(r.notes)
            lines.append(
                f"| {r.rule} | {r.action} | `{r.target}` | {cutoff} | {r.rows} | {r.objects} "
                f"| {human_bytes(r.bytes)} | {note.replace('|', '/')} |"
            )
        for r in self.rules:
            counts: dict[str, int] = {}
            for region_decisions in r.decisions.values():
                for decision in region_decisions.values():
                    counts[decision] = counts.get(decision, 0) + 1
            if counts:
                summary = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
                lines += ["", f"Backups `{r.rule}`: {summary}"]
        return "\n".join(lines) + "\n"


def human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


def _fraction_guard(
    rule: str, matching: int, total: int, max_fraction: float, force: bool
) -> str | None:
    if force or total == 0 or matching / total <= max_fraction:
        return None
    return (
        f"rule {rule!r} would delete {matching} of {total} ({matching / total:.0%}), more than "
        f"max_delete_fraction {max_fraction:.0%}; check the policy, then re-run with force"
    )


def plan_table_rule(
    rule: MySQLTableRule, now: datetime, facts: TableFacts, max_fraction: float, force: bool
) -> RulePlan:
    """The plan of a table rule from the server's counts."""
    cutoff = rule_cutoff(rule, now)
    return RulePlan(
        rule=rule.name,
        kind=rule.kind,
        action=rule.action,
        target=f"{facts.database}.{facts.table}.{rule.time_column}",
        cutoff=cutoff,
        rows=facts.matching_rows,
        bytes=facts.matching_rows * facts.avg_row_length,
        total=facts.total_rows,
        database=facts.database,
        table=facts.table,
        time_column=rule.time_column,
        min_pk=facts.min_pk,
        max_pk=facts.max_pk,
        refused=_fraction_guard(
            rule.name, facts.matching_rows, facts.total_rows, max_fraction, force
        ),
        notes=["bytes estimated from avg_row_length"] if facts.matching_rows else [],
    )


def plan_collection_rule(
    rule: MongoCollectionRule,
    now: datetime,
    matching: int,
    total: int,
    avg_size: int,
    max_fraction: float,
    force: bool,
) -> RulePlan:
    """The plan of a MongoDB collection rule from the server's counts at the cutoff."""
    return RulePlan(
        rule=rule.name,
        kind=rule.kind,
        action=rule.action,
        target=rule.target,
        cutoff=rule_cutoff(rule, now),
        rows=matching,
        bytes=matching * avg_size,
        total=total,
        database=rule.database,
        table=rule.collection,
        time_column=rule.time_field,
        refused=_fraction_guard(rule.name, matching, total, max_fraction, force),
        notes=["documents; bytes estimated from the average document size"] if matching else [],
    )


def object_time(info: ObjectInfo, age_from: AgeSource) -> datetime | None:
    """When an object counts as written: its update time or the first date in its key."""
    if age_from == "updated":
        return info.updated
    for match in KEY_DATE.finditer(info.key):
        try:
            year, month, day = (int(g) for g in match.groups())
            return datetime(year, month, day, tzinfo=UTC)
        except ValueError:
            continue
    return None


def plan_object_rule(
    rule: ObjectPrefixRule,
    now: datetime,
    listings: Mapping[str, Sequence[ObjectInfo]],
    max_fraction: float,
    force: bool,
    archive_classes: Mapping[str, str] | None = None,
) -> RulePlan:
    """The plan of a prefix rule from each region's listing of the prefix."""
    cutoff = rule_cutoff(rule, now)
    if rule.action == "keep":
        raise ValueError(f"rule {rule.name!r} keeps its objects; there is nothing to plan")
    action: Literal["delete", "archive", "compress"] = rule.action
    steps: list[ObjectStep] = []
    undated = total = 0
    for region, objects in sorted(listings.items()):
        for info in objects:
            total += 1
            if rule.action == "compress" and info.key.endswith(COMPRESSED_SUFFIX):
                continue
            when = object_time(info, rule.age_from)
            if when is None:
                undated += 1
                continue
            if cutoff is None or when >= cutoff:
                continue
            if rule.action == "archive":
                wanted = (archive_classes or {}).get(region, "ARCHIVE")
                if (info.storage_class or "STANDARD").upper() == wanted.upper():
                    continue
            steps.append(ObjectStep(region=region, key=info.key, size=info.size, action=action))
    notes = [f"{undated} object(s) without a date in the key were left alone"] if undated else []
    refused = None
    if rule.action == "delete":
        refused = _fraction_guard(rule.name, len(steps), total, max_fraction, force)
    return RulePlan(
        rule=rule.name,
        kind=rule.kind,
        action=rule.action,
        target=rule.prefix,
        cutoff=cutoff,
        objects=len(steps),
        bytes=sum(s.size for s in steps),
        total=total,
        steps=steps,
        refused=refused,
        notes=notes,
    )


def plan_backup_rule(
    rule: BackupRule,
    now: datetime,
    catalogs: Mapping[str, Sequence[BackupEntry]],
    protected: Iterable[str] = (),
    archive_classes: Mapping[str, str] | None = None,
) -> RulePlan:
    """The plan of a backups rule from each region's catalog (every source in it).

    Deletes list a backup's data objects first and its manifest last; archives do the same,
    skipping objects already in the archive class. Per region and source, the newest
    `keep_newest` committed backups are kept.

    Raises:
        RetentionRefused: when any region's catalog holds an unreadable manifest.
    """
    protected = set(protected)
    archive_after = timedelta(days=rule.archive_after_days) if rule.archive_after_days else None
    delete_after = timedelta(days=rule.delete_after_days) if rule.delete_after_days else None
    steps: list[ObjectStep] = []
    decisions: dict[str, dict[str, Decision]] = {}
    for region, entries in sorted(catalogs.items()):
        by_source: dict[str, list[BackupEntry]] = {}
        for entry in entries:
            source = entry.prefix.split("/")[1]
            if rule.sources and source not in rule.sources:
                continue
            by_source.setdefault(source, []).append(entry)
        region_decisions: dict[str, Decision] = {}
        wanted_class = (archive_classes or {}).get(region, "ARCHIVE").upper()
        for source_entries in by_source.values():
            facts = [BackupFacts.from_entry(e) for e in source_entries]
            decided = decide_backups(
                facts,
                now,
                keep_newest=rule.keep_newest,
                archive_after=archive_after,
                delete_after=delete_after,
                protected=protected,
            )
            region_decisions.update(decided)
            for entry in sorted(source_entries, key=lambda e: e.backup_id):
                decision = decided[entry.backup_id]
                if decision == Decision.KEEP:
                    continue
                manifest_key = f"{entry.prefix}{MANIFEST_NAME}"
                ordered = sorted(entry.objects, key=lambda o: (o.key == manifest_key, o.key))
                for obj in ordered:
                    if (
                        decision == Decision.ARCHIVE
                        and (obj.storage_class or "STANDARD").upper() == wanted_class
                    ):
                        continue
                    steps.append(
                        ObjectStep(
                            region=region,
                            key=obj.key,
                            size=obj.size,
                            action="delete" if decision == Decision.DELETE else "archive",
                            backup_id=entry.backup_id,
                        )
                    )
        decisions[region] = region_decisions
    return RulePlan(
        rule=rule.name,
        kind=rule.kind,
        action="archive+delete",
        target=rule.target,
        cutoff=rule_cutoff(rule, now),
        objects=len(steps),
        bytes=sum(s.size for s in steps),
        total=sum(len(v) for v in decisions.values()),
        steps=steps,
        decisions=decisions,
        notes=[f"{len(protected)} backup id(s) protected by drills"] if protected else [],
    )


# -- outcomes ----------------------------------------------------------------------------------


class RuleOutcome(BaseModel):
    """What one rule did."""

    rule: str
    status: Literal["ok", "failed", "refused", "dry-run", "nothing-to-do", "kept"]
    rows_deleted: int = 0
    objects_deleted: int = 0
    objects_archived: int = 0
    objects_compressed: int = 0
    bytes_deleted: int = 0
    bytes_archived: int = 0
    bytes_compressed: int = 0
    bytes_saved: int = 0
    seconds: float = 0.0
    error: str | None = None


def outcomes_markdown(policy: str, outcomes: Sequence[RuleOutcome], dry_run: bool) -> str:
    """The run report as a Markdown table."""
    title = "dry run (nothing changed)" if dry_run else "run"
    lines = [
        f"# Retention `{policy}`: {title}",
        "",
        # The rule, its state and why come first; counts after (readable at 1366 px).
        "| rule | status | why | rows deleted | objects deleted | archived | compressed "
        "| freed | seconds |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    notes: list[str] = []
    for o in outcomes:
        error = (o.error or "").replace("|", "/").replace("\n", " ")
        why = error
        if len(error) > SHORT_CELL:
            notes.append(f"{len(notes) + 1}. **{o.rule}**: {error}")
            why = f"{error[: SHORT_CELL - 8].rstrip()}… [{len(notes)}]"
        freed = human_bytes(o.bytes_deleted + o.bytes_saved)
        lines.append(
            f"| {o.rule} | {STATUS_WORDS.get(o.status, o.status)} | {why or '-'} "
            f"| {o.rows_deleted} | {o.objects_deleted} | {o.objects_archived} "
            f"| {o.objects_compressed} | {freed} | {o.seconds:.1f} |"
        )
    if notes:
        lines += ["", "**In full**", "", *notes]
    return "\n".join(lines) + "\n"


# A table cell longer than this is shortened; the full text follows the table.
SHORT_CELL = 60
STATUS_WORDS = {
    "ok": "done ✅",
    "dry-run": "dry run",
    "kept": "kept",
    "nothing-to-do": "nothing to do",
    "refused": "REFUSED ⛔",
    "failed": "FAILED ❌",
}
