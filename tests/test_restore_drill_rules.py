"""Pure restore-drill rules: backup choice, scratch names, refusals, parity, RTO/RPO, cleanup."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tasks.drill import (
    DrillMarker,
    DrillRecord,
    DrillTargets,
    RestoredTable,
    append_history,
    check_scratch_target,
    compare_tables,
    judge,
    plan_cleanup,
    read_history,
    region_try_order,
    rpo_of,
    rto_breakdown,
    scratch_database_name,
    select_backup,
    validate_backup_selector,
)
from tasks.errors import RestoreTargetRefused
from tasks.manifest import BackupManifest, StoredObject, TableFacts, backup_prefix

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


def manifest(backup_id: str, consistent_at: datetime, source: str = "vibebench") -> BackupManifest:
    return BackupManifest(
        backup_id=backup_id,
        source=source,
        database=source,
        started_at=consistent_at,
        consistent_at=consistent_at,
        finished_at=consistent_at,
        objects=[StoredObject(name="dump.sql.zst", size=1, sha256="00")],
        tables={"experiments": TableFacts(rows=10, checksum=42)},
        prefix=backup_prefix("mysql", source, backup_id),
    )


OLD = manifest("20250309T020000Z-aaaaaa", datetime(2025, 3, 9, 2, 0, tzinfo=UTC))
NEW = manifest("20250310T020000Z-bbbbbb", datetime(2025, 3, 10, 2, 0, tzinfo=UTC))


# -- backup choice -----------------------------------------------------------------------------


def test_latest_is_newest_committed_in_any_region_tried_in_preference_order() -> None:
    choice = select_backup({"b": [NEW, OLD], "a": [OLD]}, "latest", ["a", "b"])
    assert choice is not None
    assert choice.manifest.backup_id == NEW.backup_id
    assert choice.regions == ("b",)
    both = select_backup({"a": [NEW], "b": [NEW]}, "latest", ["b", "a"])
    assert both is not None and both.regions == ("b", "a")


def test_uncommitted_newer_backup_is_skipped_and_reported() -> None:
    choice = select_backup(
        {"a": [OLD], "b": [OLD]}, "latest", ["a", "b"], uncommitted_ids=[NEW.backup_id]
    )
    assert choice is not None and choice.manifest.backup_id == OLD.backup_id
    assert choice.skipped == (NEW.backup_id,)


def test_uncommitted_in_one_region_but_committed_in_the_other_is_not_skipped() -> None:
    choice = select_backup({"a": [OLD], "b": [NEW, OLD]}, "latest", ["a", "b"], [NEW.backup_id])
    assert choice is not None and choice.manifest.backup_id == NEW.backup_id
    assert choice.regions == ("b",) and choice.skipped == ()


def test_select_by_id_and_by_day_and_nothing_found() -> None:
    by_id = select_backup({"a": [NEW, OLD]}, OLD.backup_id, ["a"])
    assert by_id is not None and by_id.manifest is OLD
    by_day = select_backup({"a": [NEW, OLD]}, "2025-03-09", ["a"])
    assert by_day is not None and by_day.manifest is OLD
    assert select_backup({"a": [NEW]}, "2025-01-01", ["a"]) is None
    assert select_backup({}, "latest", ["a"]) is None


@pytest.mark.parametrize("value", ["latest", "20250310T020000Z-bbbbbb", "2025-03-10"])
def test_backup_selector_accepts(value: str) -> None:
    assert validate_backup_selector(value) == value


@pytest.mark.parametrize("value", ["newest", "2025-13-01", "20250310-bbbbbb", ""])
def test_backup_selector_rejects_with_the_allowed_forms(value: str) -> None:
    with pytest.raises(ValueError, match="latest"):
        validate_backup_selector(value)


def test_region_try_order_moves_the_preferred_region_first() -> None:
    assert region_try_order(["a", "b", "c"], None) == ["a", "b", "c"]
    assert region_try_order(["a", "b", "c"], "b") == ["b", "a", "c"]
    with pytest.raises(ValueError, match="prefer_region 'x'"):
        region_try_order(["a", "b"], "x")


# -- scratch names and refusals ----------------------------------------------------------------


def test_scratch_name_is_sanitised_and_bounded() -> None:
    assert scratch_database_name("vibebench", "20250310T020000Z-bbbbbb") == (
        "drill_vibebench_20250310t020000z_bbbbbb"
    )
    assert scratch_database_name("Vibe.Bench-EU", "x") == "drill_vibe_bench_eu_x"
    long = scratch_database_name("s" * 64, "20250310T020000Z-bbbbbb")
    assert len(long) == 64 and long.startswith("drill_sss")
    assert long != scratch_database_name("s" * 63 + "t", "20250310T020000Z-bbbbbb")
    check_scratch_target(long, ["vibebench"])


def test_target_equal_to_the_source_is_refused_whatever_the_case() -> None:
    with pytest.raises(RestoreTargetRefused, match="is the source database"):
        check_scratch_target("vibebench", ["vibebench"])
    with pytest.raises(RestoreTargetRefused, match="is the source database"):
        check_scratch_target("drill_prod", ["DRILL_PROD"])


@pytest.mark.parametrize(
    "name", ["mysql", "sys", "production", "drill_", "drill_Upper", "drill_a-b"]
)
def test_non_drill_names_are_refused(name: str) -> None:
    with pytest.raises(RestoreTargetRefused, match="not a drill name"):
        check_scratch_target(name, ["vibebench"])


def test_existing_database_without_marker_is_refused() -> None:
    with pytest.raises(RestoreTargetRefused, match="not created by a drill"):
        check_scratch_target("drill_x", ["vibebench"], {"drill_x": None}, NOW)


def test_existing_drill_database_is_replaced_unless_inside_its_keep_window() -> None:
    done = DrillMarker("run-1", "vibebench", "id", NOW - timedelta(days=1))
    assert check_scratch_target("drill_x", [], {"drill_x": done}, NOW) == "drill_x"
    kept = DrillMarker("run-1", "vibebench", "id", NOW, keep_until=NOW + timedelta(hours=2))
    with pytest.raises(RestoreTargetRefused, match="kept for inspection until"):
        check_scratch_target("drill_x", [], {"drill_x": kept}, NOW)


def test_cleanup_plan_drops_expired_and_stale_never_unmarked() -> None:
    existing = {
        "drill_expired": DrillMarker(
            "r1", "s", "b", NOW - timedelta(days=2), NOW - timedelta(hours=1)
        ),
        "drill_kept": DrillMarker("r2", "s", "b", NOW, NOW + timedelta(hours=3)),
        "drill_stale": DrillMarker("r3", "s", "b", NOW - timedelta(days=1)),
        "drill_running": DrillMarker("r4", "s", "b", NOW - timedelta(minutes=5)),
        "drill_foreign": None,
        "production": None,
    }
    plan = {i.database: i for i in plan_cleanup(existing, NOW, timedelta(hours=12))}
    assert {name for name, item in plan.items() if item.drop} == {"drill_expired", "drill_stale"}
    assert "production" not in plan
    assert "not created by a drill" in plan["drill_foreign"].reason
    forced = plan_cleanup(existing, NOW, timedelta(hours=12), force=["drill_kept", "drill_foreign"])
    assert {i.database for i in forced if i.drop} == {"drill_expired", "drill_stale", "drill_kept"}


# -- parity, RTO/RPO, verdict ------------------------------------------------------------------


def test_parity_names_missing_extra_rows_and_checksum_problems() -> None:
    expected = {
        "a": TableFacts(rows=3, checksum=1),
        "b": TableFacts(rows=3, checksum=2),
        "c": TableFacts(rows=3, checksum=3),
        "d": TableFacts(rows=3, checksum=None),
    }
    actual = {
        "a": RestoredTable(3, 1),
        "b": RestoredTable(2, 9),
        "c": RestoredTable(3, 7),
        "d": RestoredTable(3, 123),
        "x": RestoredTable(1, 1),
    }
    result = {p.table: p for p in compare_tables(expected, actual | {})}
    assert result["a"].ok and result["d"].ok
    assert result["b"].problem == "rows 2 != 3 in the manifest"
    assert result["c"].problem == "CHECKSUM TABLE 7 != 3 in the manifest"
    assert result["x"].problem == "table not in the manifest"
    del actual["a"]
    assert {p.table: p.problem for p in compare_tables(expected, actual)}["a"] == (
        "table missing after restore"
    )


def test_rto_breakdown_accounts_for_every_second() -> None:
    breakdown = rto_breakdown(
        NOW, NOW + timedelta(seconds=100), {"find": 2, "load": 60, "download": 10, "validate": 8}
    )
    assert breakdown.total == 100
    assert breakdown.other == pytest.approx(20)
    rows = {name: (secs, share) for name, secs, share in breakdown.rows()}
    assert rows["load"] == (60, 0.6) and rows["other"][0] == pytest.approx(20)
    assert sum(share for _, share in rows.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown RTO phases"):
        rto_breakdown(NOW, NOW, {"coffee": 1})


def test_rpo_is_drill_start_minus_consistent_point() -> None:
    assert rpo_of(NOW, NOW - timedelta(minutes=42)) == timedelta(minutes=42)
    assert rpo_of(NOW, NOW + timedelta(seconds=1)) == timedelta(0)


def test_verdict_passes_only_within_both_targets_and_without_problems() -> None:
    targets = DrillTargets()
    assert judge(targets, timedelta(minutes=5), timedelta(minutes=20)).passed
    slow = judge(targets, timedelta(minutes=31), timedelta(minutes=20))
    assert not slow.passed and slow.reasons == ("RTO 31m00s exceeds the target 30m00s",)
    old = judge(targets, timedelta(minutes=5), timedelta(hours=2, minutes=1))
    assert not old.passed and "RPO 2h01m00s exceeds the target 1h00m00s" in old.reasons[0]
    broken = judge(targets, None, timedelta(minutes=1), ["table experiments: rows 9 != 10"])
    assert broken.reasons == ("table experiments: rows 9 != 10",)
    assert judge(targets, None, None).reasons == (
        "the restore did not complete, so there is no RTO",
    )


def test_history_round_trip_filters_by_source_and_skips_garbage(tmp_path: Path) -> None:
    path = tmp_path / "drills" / "history.jsonl"
    assert read_history(path) == []
    for index, source in enumerate(["a", "b", "a"]):
        append_history(
            path,
            DrillRecord(
                source=source,
                started_at=NOW + timedelta(days=index),
                finished_at=NOW + timedelta(days=index, minutes=3),
                rto_seconds=180.0,
                rpo_seconds=3600.0 * index,
                rto_target_seconds=1800,
                rpo_target_seconds=3600,
                passed=index < 2,
            ),
        )
    with path.open("a") as handle:
        handle.write("not json\n")
    assert [r.passed for r in read_history(path, "a")] == [True, False]
    assert len(read_history(path)) == 3
    assert read_history(path, "a", limit=1)[0].started_at == NOW + timedelta(days=2)
