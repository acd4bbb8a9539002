"""Pure retention logic: validation guards, backup decisions, object plans (no servers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from blocks import RetentionPolicy
from tasks.catalog import BackupEntry
from tasks.errors import RetentionPolicyInvalid, RetentionRefused
from tasks.manifest import BackupManifest, StoredObject, backup_prefix
from tasks.retention import (
    AUDIT_MIN_DAYS,
    BackupFacts,
    BackupRule,
    Decision,
    InfluxTier,
    InfluxTiersRule,
    MongoCollectionRule,
    MySQLTableRule,
    ObjectPrefixRule,
    PolicySpec,
    RetentionPlan,
    TableFacts,
    decide_backups,
    drill_references,
    object_time,
    plan_backup_rule,
    plan_object_rule,
    plan_table_rule,
    seed_rules,
    validate_policy,
)
from tasks.storage import ObjectInfo

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def bid(days_ago: float, suffix: str = "aaaaaa") -> str:
    return f"{NOW - timedelta(days=days_ago):%Y%m%dT%H%M%SZ}-{suffix}"


def refused(rules: list, now: datetime = NOW, wall: datetime = NOW, **kw) -> str:
    with pytest.raises(RetentionPolicyInvalid) as info:
        validate_policy(PolicySpec(rules=rules, **kw), now, wall)
    return str(info.value)


# -- validation --------------------------------------------------------------------------------


def test_seed_policy_is_valid_and_matches_the_seed_document():
    spec = RetentionPolicy().spec()
    validate_policy(spec, NOW, NOW)
    by_name = {r.name: r for r in spec.rules}
    assert by_name["raw-experiments"].older_than_days == 30
    assert by_name["artifacts"].older_than_days == 60
    assert (by_name["logs"].action, by_name["logs"].older_than_days) == ("compress", 7)
    assert by_name["audit-log"].older_than_days == AUDIT_MIN_DAYS
    assert by_name["aggregated-metrics"].action == "keep"
    backups = by_name["mysql-backups"]
    assert (backups.keep_newest, backups.archive_after_days, backups.delete_after_days) == (
        7,
        30,
        90,
    )


def test_audit_retention_under_seven_years_is_refused_even_when_mislabelled():
    declared = MySQLTableRule(
        name="audit", table="audit_log", older_than_days=365, data_class="audit"
    )
    assert "audit data must be kept 7 years" in refused([declared])
    assert "older_than_days=365" in refused([declared])
    by_name = MySQLTableRule(name="sneaky", table="user_audit_events", older_than_days=90)
    assert "rule 'sneaky': audit data must be kept 7 years" in refused([by_name])
    objects = ObjectPrefixRule(
        name="audit-objects", prefix="audit/", action="delete", older_than_days=30
    )
    assert "audit data" in refused([objects])
    # exactly 7 years is fine
    validate_policy(
        PolicySpec(rules=[declared.model_copy(update={"older_than_days": AUDIT_MIN_DAYS})]),
        NOW,
        NOW,
    )


@pytest.mark.parametrize("days", [0, -1, -30])
def test_zero_and_negative_ages_are_refused(days):
    rule = MySQLTableRule(name="raw", table="experiments", older_than_days=days)
    assert f"older_than_days must be a positive number of days, got {days}" in refused([rule])
    backups = BackupRule(name="b", archive_after_days=days, delete_after_days=90)
    assert f"archive_after_days must be a positive number of days, got {days}" in refused([backups])


def test_missing_age_and_bad_backup_tiers_are_refused():
    assert "older_than_days is required" in refused(
        [ObjectPrefixRule(name="logs", prefix="logs/", action="compress")]
    )
    assert "must be greater than archive_after_days" in refused(
        [BackupRule(name="b", archive_after_days=90, delete_after_days=30)]
    )
    assert "keep_newest must be at least 1" in refused([BackupRule(name="b", keep_newest=0)])


def test_cutoff_in_the_future_is_refused():
    rule = MySQLTableRule(name="raw", table="experiments", older_than_days=30)
    message = refused([rule], now=NOW + timedelta(days=45), wall=NOW)
    assert "cutoff" in message and "is in the future" in message
    # as_of in the future but cutoff still in the past is allowed
    validate_policy(PolicySpec(rules=[rule]), NOW + timedelta(days=10), NOW)


def test_keep_rules_protect_their_target_and_aggregated_data():
    keep = MySQLTableRule(
        name="agg", table="metrics_aggregated", action="keep", data_class="aggregated"
    )
    delete = MySQLTableRule(name="oops", table="metrics_aggregated", older_than_days=400)
    assert "would delete data that rule 'agg' keeps" in refused([keep, delete])
    agg_delete = MySQLTableRule(
        name="agg2", table="daily", older_than_days=30, data_class="aggregated"
    )
    assert "aggregated metrics are kept indefinitely" in refused([agg_delete])
    assert "takes no older_than_days" in refused(
        [MySQLTableRule(name="k", table="t", action="keep", older_than_days=3)]
    )


def test_names_identifiers_prefixes_and_unexecutable_kinds_are_checked():
    assert "used twice" in refused(
        [
            MySQLTableRule(name="a", table="t", older_than_days=3),
            MySQLTableRule(name="a", table="u", older_than_days=3),
        ]
    )
    assert "not a plain 'table'" in refused(
        [MySQLTableRule(name="a", table="t`; DROP TABLE x", older_than_days=3)]
    )
    assert "inside the backup folders" in refused(
        [ObjectPrefixRule(name="p", prefix="mysql/vibebench/", action="delete", older_than_days=3)]
    )
    assert "must be a relative key prefix" in refused(
        [ObjectPrefixRule(name="p", prefix="/", action="delete", older_than_days=3)]
    )
    mongo = MongoCollectionRule(name="m", database="vb", collection="events", older_than_days=30)
    validate_policy(PolicySpec(rules=[mongo]), NOW, NOW)  # executable now
    assert "must be plain names" in refused([mongo.model_copy(update={"collection": "a.b"})])
    assert "top-level field" in refused([mongo.model_copy(update={"time_field": "$x"})])
    influx = InfluxTiersRule(
        name="tiers",
        bucket="metrics",
        tiers=[
            InfluxTier(name="hot", until_days=30),
            InfluxTier(name="warm", until_days=90, downsample_every=timedelta(minutes=5)),
            InfluxTier(
                name="cold", until_days=365, downsample_every=timedelta(hours=1), archive=True
            ),
        ],
    )
    # Modelled kinds validate cleanly once disabled; their tiers must ascend.
    validate_policy(
        PolicySpec(
            rules=[
                mongo.model_copy(update={"enabled": False}),
                influx.model_copy(update={"enabled": False}),
            ]
        ),
        NOW,
        NOW,
    )
    bad = influx.model_copy(
        update={
            "enabled": False,
            "tiers": [InfluxTier(name="a", until_days=90), InfluxTier(name="b", until_days=30)],
        }
    )
    assert "greater than the previous tier" in refused([bad])
    audit = influx.model_copy(
        update={"enabled": False, "bucket": "audit_events", "delete_after_last_tier": True}
    )
    assert "the last tier ends at 365 days" in refused([audit])


def test_every_problem_is_listed_at_once():
    message = refused(
        [
            MySQLTableRule(name="a", table="audit_log", older_than_days=10),
            MySQLTableRule(name="b", table="t", older_than_days=0),
        ],
        max_delete_fraction=2.0,
    )
    assert "rule 'a'" in message and "rule 'b'" in message and "max_delete_fraction" in message
    assert message.startswith("retention policy refused, nothing was changed")


def test_policy_block_round_trips_rules_as_data():
    policy = RetentionPolicy(
        rules=[MySQLTableRule(name="x", table="db.t", time_column="ts", older_than_days=3)]
    )
    again = RetentionPolicy.model_validate(policy.model_dump())
    assert again.rules == policy.rules
    loaded = RetentionPolicy.model_validate(
        {
            "rules": [
                {
                    "kind": "object_prefix",
                    "name": "p",
                    "prefix": "x/",
                    "action": "delete",
                    "older_than_days": 5,
                }
            ]
        }
    )
    assert isinstance(loaded.rules[0], ObjectPrefixRule)
    assert seed_rules()[0].name == "raw-experiments"


# -- backup decisions --------------------------------------------------------------------------


def facts(days_ago: float, suffix: str = "aaaaaa", **kw) -> BackupFacts:
    backup_id = bid(days_ago, suffix)
    return BackupFacts(
        backup_id=backup_id,
        taken_at=NOW - timedelta(days=days_ago),
        committed=kw.pop("committed", True),
        **kw,
    )


def test_backups_keep_archive_delete_by_age():
    backups = [facts(d) for d in (1, 2, 3, 4, 5, 6, 7, 31, 89, 90, 200)]
    decided = decide_backups(backups, NOW)
    assert [decided[b.backup_id] for b in backups] == [Decision.KEEP] * 7 + [
        Decision.ARCHIVE,
        Decision.ARCHIVE,
        Decision.DELETE,
        Decision.DELETE,
    ]


def test_newest_n_survive_even_when_all_are_old():
    backups = [facts(d) for d in range(100, 112)]
    decided = decide_backups(backups, NOW, keep_newest=7)
    kept = [b.backup_id for b in backups if decided[b.backup_id] == Decision.KEEP]
    assert kept == [b.backup_id for b in backups[:7]]
    assert all(decided[b.backup_id] == Decision.DELETE for b in backups[7:])


def test_drill_references_protect_by_id_and_by_day():
    backups = [facts(d) for d in range(1, 9)] + [facts(120, "bbbbbb"), facts(130, "cccccc")]
    refs = drill_references(
        {"params": {"backup": backups[-2].backup_id, "note": "x"}, "other": ["2024-10-22"]}
    )
    assert backups[-2].backup_id in refs
    decided = decide_backups(backups, NOW, protected=refs)
    assert decided[backups[-2].backup_id] == Decision.KEEP
    day = (NOW - timedelta(days=130)).strftime("%Y-%m-%d")
    decided = decide_backups(backups, NOW, protected=drill_references([day]))
    assert decided[backups[-1].backup_id] == Decision.KEEP
    assert decided[backups[-2].backup_id] == Decision.DELETE


def test_unreadable_catalog_is_refused():
    backups = [facts(1), facts(200, unreadable="unreadable manifest: bad json")]
    with pytest.raises(RetentionRefused, match="partly unreadable"):
        decide_backups(backups, NOW)


def test_incomplete_and_damaged_backups():
    in_progress = facts(0.01, "111111", committed=False, complete=False)
    crashed_old = facts(120, "222222", committed=False, complete=False)
    half_deleted = facts(95, "333333", complete=False)
    damaged_young = facts(40, "444444", complete=False)
    healthy = [facts(d) for d in (1, 2)]
    decided = decide_backups(
        [in_progress, crashed_old, half_deleted, damaged_young, *healthy], NOW, keep_newest=3
    )
    assert decided[in_progress.backup_id] == Decision.KEEP
    assert decided[crashed_old.backup_id] == Decision.DELETE
    assert decided[half_deleted.backup_id] == Decision.DELETE
    # damaged ones never count as one of the newest N, nor are archived
    assert decided[damaged_young.backup_id] == Decision.KEEP
    assert all(decided[h.backup_id] == Decision.KEEP for h in healthy)


def _entry(
    days_ago: float, region: str, source: str = "vb", manifest: bool = True, archived: bool = False
) -> BackupEntry:
    backup_id = bid(days_ago)
    prefix = backup_prefix("mysql", source, backup_id)
    at = NOW - timedelta(days=days_ago)
    sc = "ARCHIVE" if archived else "STANDARD"
    objects = [ObjectInfo(f"{prefix}dump.sql.zst", 100, at, sc)]
    entry = BackupEntry(backup_id=backup_id, prefix=prefix, region=region, objects=objects)
    if manifest:
        entry.objects.append(ObjectInfo(f"{prefix}manifest.json", 10, at, sc))
        entry.manifest = BackupManifest(
            backup_id=backup_id,
            source=source,
            database="vb",
            started_at=at,
            consistent_at=at,
            finished_at=at,
            objects=[StoredObject(name="dump.sql.zst", size=100, sha256="0")],
            prefix=prefix,
        )
    return entry


def test_backup_plan_deletes_manifest_last_and_skips_archived_objects():
    rule = BackupRule(name="b", keep_newest=1)
    catalogs = {
        "r1": [
            _entry(1, "r1"),
            _entry(40, "r1"),
            _entry(50, "r1", archived=True),
            _entry(100, "r1"),
        ],
        "r2": [_entry(1, "r2"), _entry(100, "r2", source="other")],
    }
    plan = plan_backup_rule(rule, NOW, catalogs)
    steps = [(s.region, s.action, s.key.rsplit("/", 1)[1]) for s in plan.steps]
    assert steps == [
        ("r1", "delete", "dump.sql.zst"),
        ("r1", "delete", "manifest.json"),
        ("r1", "archive", "dump.sql.zst"),
        ("r1", "archive", "manifest.json"),
    ]
    assert plan.steps[0].backup_id == bid(100)
    assert plan.decisions["r1"][bid(50)] == Decision.ARCHIVE
    # region r2, source 'other': its only backup is its newest, kept whatever its age
    assert plan.decisions["r2"][bid(100)] == Decision.KEEP
    assert plan.objects == 4 and plan.bytes == 220


def test_table_plan_and_destructive_guard():
    rule = MySQLTableRule(name="raw", table="experiments", older_than_days=30)
    tf = TableFacts(
        "vb",
        "experiments",
        matching_rows=750,
        total_rows=1000,
        avg_row_length=100,
        min_pk=1,
        max_pk=750,
    )
    plan = plan_table_rule(rule, NOW, tf, max_fraction=0.5, force=False)
    assert plan.cutoff == NOW - timedelta(days=30)
    assert (plan.rows, plan.bytes, plan.total) == (750, 75000, 1000)
    assert plan.refused and "750 of 1000 (75%)" in plan.refused and "force" in plan.refused
    assert not plan.has_work
    assert plan_table_rule(rule, NOW, tf, 0.5, force=True).refused is None
    assert plan_table_rule(rule, NOW, tf, 0.8, force=False).has_work


def test_object_plans_by_update_time_and_key_date():
    def info(key: str, days_ago: float, sc: str = "STANDARD") -> ObjectInfo:
        return ObjectInfo(key, 10, NOW - timedelta(days=days_ago), sc)

    listing = {
        "a": [
            info("logs/app.log", 8),
            info("logs/new.log", 6),
            info("logs/old.log.gz", 30),
        ]
    }
    compress = ObjectPrefixRule(name="logs", prefix="logs/", action="compress", older_than_days=7)
    plan = plan_object_rule(compress, NOW, listing, 0.5, False)
    assert [s.key for s in plan.steps] == ["logs/app.log"]
    assert plan.steps[0].action == "compress"

    dated = ObjectPrefixRule(
        name="art", prefix="art/", action="delete", older_than_days=60, age_from="key_date"
    )
    listing = {
        "b": [
            info("art/2024/12/01/x.json", 0),
            info("art/2025/01/01/y.json", 0),
            info("art/run-20241101-z.json", 0),
            info("art/undated.json", 500),
        ]
    }
    plan = plan_object_rule(dated, NOW, listing, 0.9, False)
    assert [s.key for s in plan.steps] == ["art/2024/12/01/x.json", "art/run-20241101-z.json"]
    assert "1 object(s) without a date" in plan.notes[0]
    assert plan_object_rule(dated, NOW, listing, 0.25, False).refused
    assert object_time(info("art/2024/13/45/bad", 0), "key_date") is None

    archive = ObjectPrefixRule(name="arc", prefix="x/", action="archive", older_than_days=1)
    listing = {"c": [info("x/a", 5), info("x/b", 5, "COLDLINE")]}
    plan = plan_object_rule(archive, NOW, listing, 1.0, False, {"c": "COLDLINE"})
    assert [s.key for s in plan.steps] == ["x/a"]


def test_plan_markdown_lists_every_rule():
    rule = MySQLTableRule(name="raw", table="experiments", older_than_days=30)
    tf = TableFacts("vb", "experiments", 5, 10, 100, 1, 5)
    plan = RetentionPlan(policy="p", as_of=NOW, rules=[plan_table_rule(rule, NOW, tf, 0.5, False)])
    text = plan.to_markdown()
    assert "| raw | delete | `vb.experiments.created_at` | 2025-01-30 12:00Z | 5 |" in text
    assert plan.has_work


def test_daily_deployment_loads_and_runs_for_real():
    import yaml
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema

    from flows.retention import PurgeRetentionParams

    config = yaml.safe_load(Path("prefect.yaml").read_text())
    deployment = next(
        d for d in config["deployments"] if d["entrypoint"] == "flows/retention.py:purge_retention"
    )
    assert deployment["name"] == "daily"
    assert deployment["schedules"][0]["timezone"] == "UTC"
    flow = load_flow_from_entrypoint(deployment["entrypoint"])
    assert flow.name == "purge-retention"
    params = PurgeRetentionParams.model_validate(deployment["parameters"])
    assert params.dry_run is True, "the deployment's defaults are safe (a manual run is dry)"
    assert deployment["schedules"][0]["parameters"] == {"dry_run": False}, "only the schedule purges"
    assert PurgeRetentionParams().dry_run is True  # manual runs are dry by default
    schema = parameter_schema(flow.fn).model_dump()
    assert schema["properties"]["dry_run"]["default"] is True
    with pytest.raises(ValueError, match="time zone"):
        PurgeRetentionParams(as_of=datetime(2025, 1, 1))
