"""purge-retention: one declarative retention policy, planned first, then carried out.

1. Load the RetentionPolicy block and validate it (guards: audit 7 years, positive ages, no
   cutoff in the future, nothing a 'keep' rule protects); check every table and column
   against the server. A bad policy is refused here and nothing is touched.
2. Gather facts (row counts, prefix listings, backup catalogs per region) and compute the
   pure plan for a fixed `as_of`; publish it as an artifact.
3. Unless dry_run: carry out each rule (chunked MySQL deletes; MongoDB deletes in batches
   by _id range; object deletes, archives and
   gzip compression; backups whole, manifest last), report, emit
   `vibeops.retention.completed`, and fail if any rule failed, after finishing the others.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

from prefect import flow, get_run_logger, tags, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.events import emit_event
from pydantic import BaseModel, Field, field_validator

from blocks.defaults import resolve_mongo, resolve_mysql, resolve_store
from blocks.influx import resolve_influx
from blocks.mongo import MongoConnection
from blocks.retention import RetentionPolicy
from flows.forms import form
from flows.run_names import run_name
from tasks.binlog_retention import backup_sources, plan_backup_rule_with_segments
from tasks.errors import ConfigurationError, RetentionIncomplete, RetentionPolicyInvalid
from tasks.form_fields import MARIADB_IDENTIFIER, Duration, schema_pattern
from tasks.influx_retention import InfluxTiersRun, count_tier_points, run_influx_tiers
from tasks.influx_tiers import plan_tiers_rule
from tasks.mongo import count_expired_documents, purge_expired_documents
from tasks.mysql_purge import (
    PurgeProgress,
    TableShape,
    check_table_rules,
    count_expired_rows,
    purge_expired_rows,
)
from tasks.object_purge import (
    archive_classes,
    list_prefix,
    open_stores,
    run_object_steps,
    scan_backup_catalog,
    scan_segment_catalog,
)
from tasks.retention import (
    BackupRule,
    InfluxTiersRule,
    MongoCollectionRule,
    MySQLTableRule,
    ObjectPrefixRule,
    RetentionPlan,
    RuleOutcome,
    RulePlan,
    drill_references,
    outcomes_markdown,
    plan_backup_rule,
    plan_collection_rule,
    plan_object_rule,
    plan_table_rule,
    rule_cutoff,
    split_table,
    validate_policy,
)
from tasks.storage import ObjectStore

DRILL_FLOW = "restore-drill"
RESOURCE = "vibeops.retention"


class PurgeRetentionParams(BaseModel):
    """Parameters of purge-retention (rendered as a form in the Prefect UI)."""

    policy_block: str = Field(
        default="",
        description="Name of a 'VibeOps Retention Policy' block; empty = the seed's rules.",
    )
    connection_block: str = Field(
        default="",
        description="'VibeOps MySQL Connection' block for table rules; empty = local server.",
    )
    database: str = Field(
        default="vibebench",
        description="Database of rules whose table has no 'db.' prefix.",
        json_schema_extra=schema_pattern(MARIADB_IDENTIFIER),
    )
    store_block: str = Field(
        default="",
        description="'VibeOps Backup Store' block for object and backup rules; empty = local.",
    )
    dry_run: bool = Field(
        default=True, description="Only compute and publish the plan; change nothing."
    )
    as_of: datetime | None = Field(
        default=None,
        description="Compute ages as of this instant, with its time zone (e.g. "
        "2025-06-01T00:00:00Z); empty = now. Never in the future.",
        json_schema_extra=schema_pattern(r"(Z|[+-][0-9]{2}:?[0-9]{2})$"),
    )
    only_rules: list[str] = Field(
        default_factory=list, description="Run only these rule names (empty = every enabled rule)."
    )
    force: bool = Field(
        default=False,
        description="Allow deleting more than the policy's max_delete_fraction in this run.",
    )
    time_budget: Duration = Field(
        default=timedelta(hours=2),
        ge=timedelta(seconds=1),
        le=timedelta(hours=12),
        description="Stop table purges cleanly after this long; the next run resumes.",
    )
    mongo_connection_block: str = Field(
        default="",
        description="'VibeOps MongoDB Connection' block for collection rules; empty = local.",
    )
    influx_connection_block: str = Field(
        default="",
        description="'VibeOps InfluxDB Connection' block for influxdb_tiers rules; empty = "
        "VIBEOPS_INFLUX_* environment.",
    )
    protected_backup_ids: list[str] = Field(
        default_factory=list,
        description="Backup ids (or days YYYY-MM-DD) never to archive or delete in this run.",
    )

    @field_validator("as_of")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("as_of needs a time zone, e.g. 2025-06-01T00:00:00Z")
        return value


@task(name="load-retention-policy", cache_policy=NO_CACHE)
def load_policy(block_name: str) -> RetentionPolicy:
    """The named policy block, or the seed's rules when the name is empty."""
    if not block_name:
        return RetentionPolicy()
    try:
        return RetentionPolicy.load(block_name)  # type: ignore[return-value]
    except ValueError as exc:
        raise ConfigurationError(
            f"policy_block: no RetentionPolicy block named {block_name!r}; create it in the UI "
            "(Blocks) or leave policy_block empty for the seed's rules"
        ) from exc


@task(name="find-drill-references", cache_policy=NO_CACHE)
def find_drill_references() -> set[str]:
    """Backup ids and days referenced by scheduled, pending, running or paused drills."""
    states = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED]
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[DRILL_FLOW])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=states))
            ),
            limit=200,
        )
    return drill_references([[run.parameters, run.name] for run in runs])


def _plan(
    policy: RetentionPolicy,
    params: PurgeRetentionParams,
    as_of: datetime,
    shapes: dict[str, TableShape],
    stores: dict[str, ObjectStore],
    classes: dict[str, str],
    protected: set[str],
    conn: Any,
    mongo: MongoConnection | None = None,
    influx: InfluxTiersRun | None = None,
) -> tuple[list[RulePlan], dict[str, str]]:
    """Gather facts per rule and compute its plan; a rule whose facts fail is recorded."""
    plans: list[RulePlan] = []
    failures: dict[str, str] = {}
    fraction = policy.max_delete_fraction
    for rule in _selected(policy, params):
        try:
            if getattr(rule, "action", None) == "keep":
                plans.append(
                    RulePlan(rule=rule.name, kind=rule.kind, action="keep", target=rule.target,
                             notes=["kept indefinitely"])
                )  # fmt: skip
            elif isinstance(rule, MySQLTableRule):
                cutoff = rule_cutoff(rule, as_of)
                assert cutoff is not None
                facts = count_expired_rows(conn, shapes[rule.name], cutoff)
                plans.append(plan_table_rule(rule, as_of, facts, fraction, params.force))
            elif isinstance(rule, ObjectPrefixRule):
                listings = {r: list_prefix(s, rule.prefix) for r, s in stores.items()}
                plans.append(
                    plan_object_rule(rule, as_of, listings, fraction, params.force, classes)
                )
            elif isinstance(rule, MongoCollectionRule):
                cutoff = rule_cutoff(rule, as_of)
                assert cutoff is not None and mongo is not None
                counts = count_expired_documents(
                    mongo, rule.database, rule.collection, rule.time_field, cutoff
                )
                plans.append(
                    plan_collection_rule(
                        rule, as_of, counts.matching, counts.total, counts.avg_size, fraction,
                        params.force,
                    )
                )  # fmt: skip
            elif isinstance(rule, InfluxTiersRule):
                assert influx is not None
                plans.append(plan_tiers_rule(rule, as_of, count_tier_points(influx, rule)))
            elif isinstance(rule, BackupRule):
                catalogs = {
                    r: scan_backup_catalog(s, rule.backup_kind, rule.sources)
                    for r, s in stores.items()
                }
                if rule.backup_kind == "mysql":  # binlog segments follow their bases
                    segments = {
                        r: scan_segment_catalog(s, backup_sources(catalogs[r]))
                        for r, s in stores.items()
                    }
                    plans.append(
                        plan_backup_rule_with_segments(
                            rule, as_of, catalogs, segments, protected, classes
                        )
                    )
                else:
                    plans.append(plan_backup_rule(rule, as_of, catalogs, protected, classes))
        except Exception as exc:
            failures[rule.name] = f"{type(exc).__name__}: {exc}"
            plans.append(
                RulePlan(
                    rule=rule.name,
                    kind=rule.kind,
                    action=getattr(rule, "action", "archive+delete"),
                    target=rule.target,
                    cutoff=rule_cutoff(rule, as_of),
                    refused=failures[rule.name][:500],
                )
            )
    return plans, failures


def _selected(policy: RetentionPolicy, params: PurgeRetentionParams) -> list[Any]:
    names = {rule.name for rule in policy.rules}
    unknown = sorted(set(params.only_rules) - names)
    if unknown:
        raise ConfigurationError(
            f"only_rules names {unknown} that are not in the policy; pick from {sorted(names)}"
        )
    return [
        rule
        for rule in policy.rules
        if rule.enabled and (not params.only_rules or rule.name in params.only_rules)
    ]


class _Progress:
    """The run's progress artifact, updated at most once a second."""

    def __init__(self, rules: int) -> None:
        self.rules = max(rules, 1)
        self.artifact_id = cast(
            UUID,
            create_progress_artifact(
                0.0, key="purge-retention-progress", description="purge-retention progress"
            ),
        )
        self._last = 0.0

    def update(self, index: int, within: float, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 1.0:
            return
        self._last = now
        value = 100.0 * (index + min(1.0, max(0.0, within))) / self.rules
        update_progress_artifact(self.artifact_id, round(value, 1))


def _record_deleted(
    outcome: RuleOutcome, plan: RulePlan, deleted: int, finished: bool, unit: str
) -> None:
    """What a chunked purge deleted; one stopped by the time budget fails (the next resumes)."""
    outcome.rows_deleted = deleted
    outcome.bytes_deleted = deleted * (plan.bytes // max(plan.rows, 1))
    if not finished:
        outcome.status = "failed"
        outcome.error = (
            f"time budget reached after {deleted} of {plan.rows} {unit}; the next run resumes"
        )


def _execute(
    plan: RulePlan,
    policy: RetentionPolicy,
    shapes: dict[str, TableShape],
    stores: dict[str, ObjectStore],
    classes: dict[str, str],
    conn: Any,
    report: _Progress,
    index: int,
    deadline: float,
    mongo: MongoConnection | None = None,
    influx: InfluxTiersRun | None = None,
) -> RuleOutcome:
    started = time.monotonic()
    outcome = RuleOutcome(rule=plan.rule, status="ok")
    if plan.kind == "mysql_table":
        shape = shapes[plan.rule]
        rows = max(plan.rows, 1)

        def on_progress(progress: PurgeProgress) -> None:
            report.update(index, progress.deleted / rows)

        assert plan.cutoff is not None
        with tags(f"db:{conn.host}:{conn.port}/{shape.database}"):
            result = purge_expired_rows(
                conn,
                shape,
                plan.cutoff,
                from_pk=plan.min_pk,
                upto_pk=plan.max_pk,
                chunk_rows=policy.chunk_rows,
                pause_seconds=policy.pause_ms / 1000,
                time_budget_seconds=max(1.0, deadline - time.monotonic()),
                on_progress=on_progress,
            )
        _record_deleted(
            outcome, plan, result.deleted, result.finished, f"rows (cursor {result.cursor})"
        )
    elif plan.kind == "influxdb_tiers":
        assert influx is not None
        rule = next(r for r in policy.rules if r.name == plan.rule)
        tiers = run_influx_tiers(influx, rule, lambda done: report.update(index, done))
        outcome.rows_deleted = tiers.deleted
    elif plan.kind == "mongodb_collection":
        assert plan.cutoff is not None and plan.database and plan.table and plan.time_column
        assert mongo is not None
        with tags(f"db:{mongo.host}:{mongo.port}/{plan.database}"):
            purged = purge_expired_documents(
                mongo,
                plan.database,
                plan.table,
                plan.time_column,
                plan.cutoff,
                batch_size=policy.chunk_rows,
                pause_seconds=policy.pause_ms / 1000,
                time_budget_seconds=max(1.0, deadline - time.monotonic()),
                on_progress=lambda deleted: report.update(index, deleted / max(plan.rows, 1)),
            )
        _record_deleted(
            outcome, plan, purged.deleted, purged.finished, f"documents (last _id {purged.last_id})"
        )
    else:
        steps = max(len(plan.steps), 1)
        totals = run_object_steps(
            stores,
            plan.steps,
            classes,
            on_step=lambda done: report.update(index, done / steps),
        )
        outcome.objects_deleted = totals.deleted
        outcome.objects_archived = totals.archived
        outcome.objects_compressed = totals.compressed
        outcome.bytes_deleted = totals.bytes_deleted
        outcome.bytes_archived = totals.bytes_archived
        outcome.bytes_compressed = totals.bytes_compressed
        outcome.bytes_saved = totals.bytes_saved
        if totals.errors:
            outcome.status = "failed"
            outcome.error = f"{len(totals.errors)} object(s) failed: " + "; ".join(
                totals.errors[:5]
            )
    outcome.seconds = time.monotonic() - started
    return outcome


def _run_name(parameters: dict[str, Any]) -> str:
    """`purge-retention-<policy>-<dry-run|run>`, from the run's parameters."""
    mode = "dry-run" if parameters.get("dry_run", True) else "run"
    return f"purge-retention-{parameters.get('policy_block') or 'seed'}-{mode}"


def _refuse(policy_name: str, exc: Exception) -> None:
    create_markdown_artifact(
        key="purge-retention-report",
        markdown=f"# Retention `{policy_name}`: REFUSED\n\n```\n{exc}\n```\n\nNothing was changed.",
        description="purge-retention refused the policy",
    )
    emit_event(
        event="vibeops.retention.refused",
        resource={"prefect.resource.id": f"{RESOURCE}.{policy_name}"},
        payload={"error": type(exc).__name__, "message": str(exc)[:2000]},
    )


@flow(
    name="purge-retention",
    flow_run_name=run_name(_run_name),
    description="Validate the retention policy, plan every rule, then purge/archive/compress.",
    timeout_seconds=12 * 3600,
)
@form(PurgeRetentionParams)
def purge_retention(params: PurgeRetentionParams) -> list[RuleOutcome]:
    """Carry out the retention policy (or only plan it when dry_run).

    Returns:
        One outcome per planned rule.

    Raises:
        RetentionPolicyInvalid: the policy breaks a guard or names unknown tables/columns.
        RetentionIncomplete: a rule failed or was refused; the others were carried out.
    """
    logger = get_run_logger()
    policy_name = params.policy_block or "seed"
    wall_clock = datetime.now(UTC)
    as_of = params.as_of or wall_clock
    policy = load_policy(params.policy_block)
    try:
        spec = policy.spec()
        validate_policy(spec, as_of, wall_clock)
        rules = _selected(policy, params)
        conn = resolve_mysql(params.connection_block, params.database)
        table_rules = [
            (r.name, *split_table(r.table, params.database), r.time_column)
            for r in rules
            if isinstance(r, MySQLTableRule) and r.action != "keep"
        ]
        shapes = check_table_rules(conn, table_rules) if table_rules else {}
        mongo = None
        if any(isinstance(r, MongoCollectionRule) for r in rules):
            mongo = resolve_mongo(params.mongo_connection_block, field="mongo_connection_block")
        influx = None
        if any(isinstance(r, InfluxTiersRule) for r in rules):
            influx = InfluxTiersRun(resolve_influx(params.influx_connection_block), as_of)
    except (RetentionPolicyInvalid, ConfigurationError) as exc:
        _refuse(policy_name, exc)
        raise
    needs_store = any(isinstance(r, ObjectPrefixRule | BackupRule) for r in rules)
    store_block = resolve_store(params.store_block) if needs_store else None
    stores = open_stores(store_block) if store_block else {}
    classes = archive_classes(store_block) if store_block else {}
    protected = set(params.protected_backup_ids)
    if any(isinstance(r, BackupRule) for r in rules):
        protected = drill_references(params.protected_backup_ids) | find_drill_references()
    plans, plan_failures = _plan(
        policy, params, as_of, shapes, stores, classes, protected, conn, mongo, influx
    )
    plan = RetentionPlan(policy=policy_name, as_of=as_of, rules=plans)
    create_markdown_artifact(
        key="purge-retention-plan",
        markdown=plan.to_markdown() + ("\n**Dry run: nothing was changed.**\n" * params.dry_run),
        description="purge-retention plan",
    )
    outcomes: list[RuleOutcome] = []
    if params.dry_run:
        outcomes = [
            RuleOutcome(rule=p.rule, status="refused", error=p.refused)
            if p.refused
            else RuleOutcome(rule=p.rule, status="kept" if p.action == "keep" else "dry-run")
            for p in plans
        ]
    else:
        report = _Progress(len(plans))
        deadline = time.monotonic() + params.time_budget.total_seconds()
        for index, rule_plan in enumerate(plans):
            if rule_plan.refused:
                status = "failed" if rule_plan.rule in plan_failures else "refused"
                outcomes.append(
                    RuleOutcome(rule=rule_plan.rule, status=status, error=rule_plan.refused)  # type: ignore[arg-type]
                )
            elif not rule_plan.has_work:
                status = "kept" if rule_plan.action == "keep" else "nothing-to-do"
                outcomes.append(RuleOutcome(rule=rule_plan.rule, status=status))  # type: ignore[arg-type]
            else:
                try:
                    outcomes.append(
                        _execute(
                            rule_plan, policy, shapes, stores, classes, conn, report, index,
                            deadline, mongo, influx,
                        )
                    )  # fmt: skip
                except Exception as exc:
                    logger.exception("rule %s failed", rule_plan.rule)
                    outcomes.append(
                        RuleOutcome(
                            rule=rule_plan.rule,
                            status="failed",
                            error=f"{type(exc).__name__}: {exc}"[:1000],
                        )
                    )
            report.update(index, 1.0, force=True)
    create_markdown_artifact(
        key="purge-retention-report",
        markdown=outcomes_markdown(policy_name, outcomes, params.dry_run),
        description="purge-retention result per rule",
    )
    failed = [o for o in outcomes if o.status in ("failed", "refused")]
    emit_event(
        event="vibeops.retention.completed",
        resource={"prefect.resource.id": f"{RESOURCE}.{policy_name}"},
        payload={
            "dry_run": params.dry_run,
            "as_of": as_of.isoformat(),
            "failed_rules": [o.rule for o in failed],
            "rules": [o.model_dump(exclude_none=True) for o in outcomes],
        },
    )
    if failed and not params.dry_run:
        raise RetentionIncomplete(
            "retention rules did not complete: "
            + "; ".join(f"{o.rule} ({o.status}): {o.error}" for o in failed)
        )
    for o in outcomes:
        logger.info(
            "rule %s: %s rows=%d objects deleted=%d archived=%d compressed=%d",
            o.rule,
            o.status,
            o.rows_deleted,
            o.objects_deleted,
            o.objects_archived,
            o.objects_compressed,
        )
    return outcomes
