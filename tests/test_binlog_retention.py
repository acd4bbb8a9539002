"""Retention of binlog segments: they go with the base backups that need them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tasks.binlog_catalog import list_segments, recovery_chain, scan_segments
from tasks.binlog_retention import decide_segments, plan_backup_rule_with_segments
from tasks.catalog import scan_backups
from tasks.errors import RetentionRefused
from tasks.object_purge import run_object_steps
from tasks.retention import BackupRule, Decision
from tasks.storage import LocalFolderStore
from tests.binlog_samples import base, segment, store_segment

NOW = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)
FIRST = NOW - timedelta(days=10)
BASE_AT = {9: 4, 6: 16, 3: 28, 0.5: 38}  # base age in days -> index of the file holding it


def _world(root: Path) -> tuple[LocalFolderStore, dict[float, str]]:
    """40 segments of 6 hours over 10 days, and four base backups inside them."""
    store = LocalFolderStore("local-a", root)
    for j in range(40):
        created = FIRST + timedelta(hours=6 * j)
        seg = segment(100 + j, 10 * j, 10 * (j + 1), created, last_at=created + timedelta(hours=5))
        store_segment(store, seg, b"\xfebin" + bytes([j]) * 100)
    ids = {}
    for age, j in BASE_AT.items():
        taken = FIRST + timedelta(hours=6 * j + 1)
        manifest = base(f"binlog.{100 + j:06d}", 400, f"0-1-{10 * j + 5}", taken)
        store.write_bytes(manifest.manifest_key, manifest.to_json())
        ids[age] = manifest.backup_id
    return store, ids


def _plan(store: LocalFolderStore, keep_newest: int):  # type: ignore[no-untyped-def]
    rule = BackupRule(
        name="mysql-backups", keep_newest=keep_newest, archive_after_days=None, delete_after_days=5
    )
    catalogs = {"local-a": scan_backups(store, "app")}
    segments = {"local-a": {"app": scan_segments(store, "app")}}
    return plan_backup_rule_with_segments(rule, NOW, catalogs, segments)


@pytest.mark.parametrize(("keep_newest", "first_kept"), [(2, 28), (3, 16)])
def test_segments_are_deleted_with_their_bases_and_kept_for_the_newest_n(
    tmp_path: Path, keep_newest: int, first_kept: int
) -> None:
    store, ids = _world(tmp_path)
    plan = _plan(store, keep_newest)
    decided = plan.decisions["local-a"]
    assert decided[ids[9]] == Decision.DELETE and decided[ids[0.5]] == Decision.KEEP
    segment_steps = [s for s in plan.steps if s.backup_id and s.backup_id.startswith("binlog:")]
    # Each segment loses its data object before its manifest.
    for data, manifest in zip(segment_steps[::2], segment_steps[1::2], strict=True):
        assert data.key.endswith(".zst") and manifest.key == data.key[:-4] + ".manifest.json"
    totals = run_object_steps.fn({"local-a": store}, plan.steps, {})
    assert not totals.errors
    left = [s.index - 100 for s in list_segments(store, "app")]
    assert left == list(range(first_kept, 40))  # every kept base's whole chain, nothing else
    assert scan_segments(store, "app").uncommitted == []
    for manifest in [e.manifest for e in scan_backups(store, "app") if e.manifest]:
        chain = recovery_chain(manifest, list_segments(store, "app"))
        assert chain.gap is None and chain.segments[-1].index == 139


def test_a_segment_needed_by_a_kept_older_base_is_kept_even_if_a_newer_base_goes() -> None:
    older = base("binlog.000100", 400, "0-1-5", FIRST + timedelta(hours=1))
    newer = base("binlog.000102", 400, "0-1-25", FIRST + timedelta(hours=13))
    segments = [
        segment(100 + j, 10 * j, 10 * (j + 1), FIRST + timedelta(hours=6 * j)) for j in range(4)
    ]
    decided = decide_segments(
        [older, newer], {older.backup_id: Decision.KEEP, newer.backup_id: Decision.DELETE}, segments
    )
    assert set(decided.values()) == {Decision.KEEP}
    archived = decide_segments(
        [older, newer],
        {older.backup_id: Decision.ARCHIVE, newer.backup_id: Decision.DELETE},
        segments,
    )
    assert set(archived.values()) == {Decision.ARCHIVE}
    # With no base at all nothing is known to be unneeded: keep everything.
    assert set(decide_segments([], {}, segments).values()) == {Decision.KEEP}


def test_an_unreadable_segment_manifest_refuses_the_segment_plan(tmp_path: Path) -> None:
    store, _ = _world(tmp_path)
    key = list_segments(store, "app")[3].manifest_key
    store.write_bytes(key, b"{not json")
    with pytest.raises(RetentionRefused, match="unreadable"):
        _plan(store, 2)
