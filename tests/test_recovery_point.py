"""The newest restorable point drives the deploy gate and the exporter's metric."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from blocks import BackupStore, LocalFolderDestination
from flows.staging_deploy import BackupGate, check_backup_gate
from tasks.metrics import backup_families, read_catalog_statuses
from tasks.storage import LocalFolderStore
from tests.binlog_samples import base, five_minute_segments, store_segment
from tests.helpers import save_block


def _store_with_chain(root: Path, now: datetime, drop: int | None = None) -> LocalFolderStore:
    """A base 3 h old plus binlog segments every 5 minutes up to 4 minutes ago."""
    store = LocalFolderStore("local-a", root)
    taken = now - timedelta(hours=3)
    the_base = base("binlog.000010", 400, "0-1-105", taken)
    store.write_bytes(the_base.manifest_key, the_base.to_json())
    segments = five_minute_segments(10, 36, taken - timedelta(minutes=2))
    for index, seg in enumerate(segments):
        if index != drop and seg.last_event_at and seg.last_event_at <= now:
            store_segment(store, seg, b"\xfebin")
    return store


def test_deploy_gate_passes_on_archived_binlogs_and_refuses_a_broken_chain(
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC)
    _store_with_chain(tmp_path / "fresh", now)
    fresh = BackupStore(
        destinations=[LocalFolderDestination(region="local-a", path=str(tmp_path / "fresh"))]
    )
    decision = check_backup_gate.fn(BackupGate(source="app", store_block=save_block(fresh)), now)
    assert decision.allowed and not decision.overridden, decision.message
    assert decision.age is not None and decision.age < timedelta(minutes=10)
    assert "recovery point" in decision.message and "binlog segments" in decision.message

    _store_with_chain(tmp_path / "broken", now, drop=5)  # binlog.000015 missing: stuck at 02:28
    broken = BackupStore(
        destinations=[LocalFolderDestination(region="local-a", path=str(tmp_path / "broken"))]
    )
    refused = check_backup_gate.fn(BackupGate(source="app", store_block=save_block(broken)), now)
    assert not refused.allowed
    assert refused.age is not None and refused.age > timedelta(hours=2)
    assert "older than the 1h00m limit" in refused.message


def test_exporter_serves_recovery_point_age_per_kind_and_source(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    store = _store_with_chain(tmp_path / "a", now)
    statuses = read_catalog_statuses([store], ["mysql/app"])
    families = {f.name: f for f in backup_families(statuses, now)}
    [sample] = families["vibeops_recovery_point_age_seconds"].samples
    assert sample.labels == {"kind": "mysql", "source": "app"}
    assert 0 <= sample.value < 600
    [backup_age] = families["vibeops_backup_newest_age_seconds"].samples
    assert backup_age.value == (now - (now - timedelta(hours=3))).total_seconds()
