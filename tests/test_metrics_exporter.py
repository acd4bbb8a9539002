"""The metrics exporter: catalog, Prefect and drill history in, the gauges the alert rules read out.

Backups are real committed manifests in local-folder regions; failures are real failed flow runs
on the session's Prefect server; the exporter is scraped over HTTP.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prefect import flow
from prometheus_client import start_http_server
from prometheus_client.parser import text_string_to_metric_families

from tasks.drill import DrillRecord, append_history
from tasks.local_stack import free_port
from tasks.manifest import BackupManifest, StoredObject, backup_prefix, new_backup_id
from tasks.metrics import (
    BackupStatus,
    VibeOpsCollector,
    backup_families,
    build_registry,
    latest_drills,
    read_backup_failures,
    read_catalog_statuses,
)
from tasks.storage import LocalFolderStore

NOW = datetime(2025, 3, 2, 12, 0, tzinfo=UTC)


def commit_backup(store: LocalFolderStore, source: str, consistent_at: datetime) -> BackupManifest:
    """Write a data object and its manifest (the commit point) into one region."""
    backup_id = new_backup_id(consistent_at)
    prefix = backup_prefix("mysql", source, backup_id)
    store.write_bytes(f"{prefix}dump.sql.zst", b"x" * 100)
    manifest = BackupManifest(
        backup_id=backup_id,
        source=source,
        database=source,
        started_at=consistent_at - timedelta(seconds=5),
        consistent_at=consistent_at,
        finished_at=consistent_at + timedelta(seconds=30),
        objects=[StoredObject(name="dump.sql.zst", size=100, sha256="0" * 64)],
        prefix=prefix,
    )
    store.write_bytes(manifest.manifest_key, manifest.to_json())
    return manifest


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def drill(source: str, finished: datetime, rto: float, passed: bool) -> DrillRecord:
    return DrillRecord(
        source=source,
        started_at=finished - timedelta(seconds=rto),
        finished_at=finished,
        rto_seconds=rto,
        rpo_seconds=600,
        rto_target_seconds=1800,
        rpo_target_seconds=3600,
        passed=passed,
    )


def test_catalog_newest_committed_backup_gives_success_time_and_age(tmp_path: Path):
    region_a = LocalFolderStore("local-a", tmp_path / "a")
    region_b = LocalFolderStore("local-b", tmp_path / "b")
    commit_backup(region_a, "vibebench", NOW - timedelta(hours=30))
    newest = commit_backup(region_b, "vibebench", NOW - timedelta(hours=3))
    # an uncommitted (manifest-less) newer backup does not count
    region_a.write_bytes(
        backup_prefix("mysql", "vibebench", new_backup_id(NOW)) + "dump.sql.zst", b"partial"
    )

    statuses = read_catalog_statuses([region_a, region_b], ["vibebench", "empty"])
    families = {f.name: f for f in backup_families(statuses, NOW)}

    age = families["vibeops_backup_newest_age_seconds"].samples
    assert [(s.labels["source"], s.value) for s in age] == [("vibebench", 3 * 3600)]
    success = families["vibeops_backup_last_success_timestamp_seconds"].samples[0]
    assert success.value == newest.finished_at.timestamp()
    assert families["vibeops_backup_newest_size_bytes"].samples[0].value == 100


def test_latest_drill_per_source():
    records = [
        drill("vibebench", NOW - timedelta(days=7), 900, True),
        drill("vibebench", NOW, 2400, False),
        drill("analytics", NOW - timedelta(days=1), 60, True),
    ]
    latest = {d.source: d for d in latest_drills(records)}
    assert latest["vibebench"].rto_seconds == 2400
    assert not latest["vibebench"].passed
    assert latest["analytics"].rto_seconds == 60


def test_a_failing_source_is_reported_not_fatal():
    def broken() -> list[BackupStatus]:
        raise OSError("bucket gone")

    collector = VibeOpsCollector(backups=broken, failures=None, drills=list)
    up = {
        s.labels["source"]: s.value
        for f in collector.collect()
        for s in f.samples
        if s.name == "vibeops_exporter_source_up"
    }
    assert up == {"catalog": 0.0, "drill_history": 1.0}


@flow(name="backup-mysql")
def failing_backup(params: dict) -> None:
    """Stands in for a backup-mysql run that fails (same flow name, real Prefect run)."""
    raise RuntimeError("mysqldump exited 2")


def test_exporter_serves_catalog_failures_and_drills_over_http(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    root = tmp_path / "backups"
    commit_backup(LocalFolderStore("local-a", root / "region-a"), "vibebench", NOW)
    history = tmp_path / "drills" / "history.jsonl"
    append_history(history, drill("vibebench", NOW, 2400, False))
    with pytest.raises(RuntimeError):
        failing_backup({"source": "vibebench"})
    failures = read_backup_failures()
    assert "vibebench" in failures

    monkeypatch.setenv("VIBEOPS_HOME", str(tmp_path))  # the embedded local store lives here
    registry = build_registry(["vibebench"], drill_history=history)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    finally:
        server.shutdown()
        thread.join(timeout=5)

    got = samples(text)
    key = (("kind", "mysql"), ("source", "vibebench"))
    assert got[("vibeops_backup_last_success_timestamp_seconds", key)] == pytest.approx(
        (NOW + timedelta(seconds=30)).timestamp()
    )
    assert got[("vibeops_backup_last_failure_timestamp_seconds", key)] > NOW.timestamp()
    assert got[("vibeops_drill_rto_seconds", (("source", "vibebench"),))] == 2400
    assert got[("vibeops_drill_rto_target_seconds", (("source", "vibebench"),))] == 1800
    assert got[("vibeops_drill_passed", (("source", "vibebench"),))] == 0
    for source in ("catalog", "prefect", "drill_history"):
        assert got[("vibeops_exporter_source_up", (("source", source),))] == 1
