"""The metrics exporter: catalog, Prefect and drill history in, the gauges the alert rules read out.

Backups are real committed manifests (mysql, mongodb, influxdb) in local-folder regions; failures
are real failed runs of each backup flow on the session's Prefect server; the exporter is scraped
over HTTP.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prefect import flow
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from flows.backup import BackupMySQLParams
from flows.backup_influxdb import BackupInfluxParams
from flows.backup_mongodb import BackupMongoDBParams
from tasks.drill import DrillRecord, append_history
from tasks.local_stack import free_port
from tasks.manifest import BackupManifest, Engine, StoredObject, backup_prefix, new_backup_id
from tasks.metrics import (
    DEFAULT_SOURCES,
    BackupStatus,
    SourceRef,
    VibeOpsCollector,
    backup_families,
    build_registry,
    latest_drills,
    parse_args,
    read_backup_failures,
    read_catalog_statuses,
)
from tasks.storage import LocalFolderStore, ObjectStore, open_store
from tests.helpers import local_store, save_block

NOW = datetime(2025, 3, 2, 12, 0, tzinfo=UTC)


ENGINES: dict[str, Engine] = {
    "mysql": "mysqldump",
    "mongodb": "mongo-archive",
    "influxdb": "influx-lp",
}


def commit_backup(
    store: ObjectStore,
    source: str,
    consistent_at: datetime,
    kind: str = "mysql",
    size: int = 100,
) -> BackupManifest:
    """Write a data object and its manifest (the commit point) into one region."""
    backup_id = new_backup_id(consistent_at)
    prefix = backup_prefix(kind, source, backup_id)
    store.write_bytes(f"{prefix}dump.sql.zst", b"x" * size)
    manifest = BackupManifest(
        backup_id=backup_id,
        kind=kind,  # type: ignore[arg-type]  # one of the manifest's kinds
        engine=ENGINES[kind],
        source=source,
        database=source,
        started_at=consistent_at - timedelta(seconds=5),
        consistent_at=consistent_at,
        finished_at=consistent_at + timedelta(seconds=30),
        objects=[StoredObject(name="dump.sql.zst", size=size, sha256="0" * 64)],
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


def drill(
    source: str, finished: datetime, rto: float, passed: bool, rpo: float = 600
) -> DrillRecord:
    """A history record as the drills write it: `source` is bare (mysql) or `<kind>/<name>`."""
    return DrillRecord(
        source=source,
        started_at=finished - timedelta(seconds=rto),
        finished_at=finished,
        rto_seconds=rto,
        rpo_seconds=rpo,
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
    latest = {(d.kind, d.source): d for d in latest_drills(records)}
    assert latest["mysql", "vibebench"].rto_seconds == 2400
    assert not latest["mysql", "vibebench"].passed
    assert latest["mysql", "analytics"].rto_seconds == 60


def test_latest_drill_per_kind_and_source_from_the_recorded_source():
    """MySQL drills record the bare source, MongoDB/InfluxDB drills `<kind>/<source>`."""
    records = [
        drill("vibebench", NOW, 900, True),
        drill("mongodb/vibebench", NOW - timedelta(days=2), 100, True),
        drill("mongodb/vibebench", NOW - timedelta(days=1), 200, False),
        drill("influxdb/vibebench-metrics", NOW, 50, True),
    ]
    latest = {(d.kind, d.source): d.rto_seconds for d in latest_drills(records)}
    assert latest == {
        ("influxdb", "vibebench-metrics"): 50,
        ("mongodb", "vibebench"): 200,
        ("mysql", "vibebench"): 900,
    }


def test_catalog_reads_each_kind_under_its_own_prefix(tmp_path: Path):
    regions = [open_store(d) for d in local_store(tmp_path).destinations]
    commit_backup(regions[0], "vibebench", NOW - timedelta(hours=1), "mysql", size=10)
    commit_backup(regions[1], "vibebench", NOW - timedelta(hours=2), "mongodb", size=20)
    commit_backup(regions[0], "vibebench-metrics", NOW - timedelta(hours=3), "influxdb", size=30)

    statuses = read_catalog_statuses(
        regions,
        [
            "vibebench",  # bare = mysql
            SourceRef("mongodb", "vibebench"),
            "influxdb/vibebench-metrics",
            "influxdb/vibebench",  # no influxdb backup of that name: no values
        ],
    )
    assert [(s.kind, s.source, s.size_bytes) for s in statuses] == [
        ("mysql", "vibebench", 10),
        ("mongodb", "vibebench", 20),
        ("influxdb", "vibebench-metrics", 30),
        ("influxdb", "vibebench", None),
    ]
    ages = {
        (s.labels["kind"], s.labels["source"]): s.value
        for f in backup_families(statuses, NOW)
        if f.name == "vibeops_backup_newest_age_seconds"
        for s in f.samples
    }
    assert ages == {
        ("mysql", "vibebench"): 3600,
        ("mongodb", "vibebench"): 2 * 3600,
        ("influxdb", "vibebench-metrics"): 3 * 3600,
    }


def test_source_arguments_name_a_kind_or_default_to_mysql():
    args = parse_args(
        ["--source", "vibebench", "--source", "mongodb/vibebench", "--source", "influxdb/m.1"]
    )
    assert args.source == [
        SourceRef("mysql", "vibebench"),
        SourceRef("mongodb", "vibebench"),
        SourceRef("influxdb", "m.1"),
    ]
    assert parse_args([]).source == [SourceRef("mysql", "vibebench")]


def test_the_exporter_defaults_match_the_backup_flows():
    """A failed run without `params.source` backed up the flow's default source."""
    flow_defaults = {
        "mysql": BackupMySQLParams.model_fields["source"].default,
        "mongodb": BackupMongoDBParams.model_fields["source"].default,
        "influxdb": BackupInfluxParams.model_fields["source"].default,
    }
    assert flow_defaults == DEFAULT_SOURCES


def test_an_unknown_kind_is_a_clear_command_line_error():
    run = subprocess.run(
        [sys.executable, "-m", "tasks.metrics", "--source", "postgres/vibebench"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "argument --source: unknown kind 'postgres'" in run.stderr
    assert "mysql, mongodb, influxdb" in run.stderr


@pytest.mark.parametrize("bad", ["mysql/", "mongodb/a/b", "influxdb/-x"])
def test_a_bad_source_name_is_a_command_line_error(bad: str, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exited:
        parse_args(["--source", bad])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --source" in err
    assert "is not a valid name" in err


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
    assert got[("vibeops_drill_rto_seconds", key)] == 2400
    assert got[("vibeops_drill_rto_target_seconds", key)] == 1800
    assert got[("vibeops_drill_passed", key)] == 0
    for source in ("catalog", "prefect", "drill_history"):
        assert got[("vibeops_exporter_source_up", (("source", source),))] == 1


@flow(name="backup-mongodb")
def failing_mongodb_backup(params: dict | None = None) -> None:
    """Stands in for a backup-mongodb run that fails."""
    raise RuntimeError("mongodump exited 1")


@flow(name="backup-influxdb")
def failing_influxdb_backup(params: dict | None = None) -> None:
    """Stands in for a backup-influxdb run that fails."""
    raise RuntimeError("influx query timed out")


def scrape(registry: CollectorRegistry) -> str:
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_exporter_serves_every_kind_over_http(tmp_path: Path):
    """mysql, mongodb and influxdb sources: catalog, failures of each flow, drills of each kind."""
    suffix = uuid.uuid4().hex[:8]
    mysql, mongo, influx = f"db-{suffix}", f"mongo-{suffix}", f"metrics-{suffix}"
    store = local_store(tmp_path / "backups")
    region_a, region_b = (open_store(d) for d in store.destinations)
    commit_backup(region_a, mysql, NOW - timedelta(hours=1), "mysql", size=10)
    commit_backup(region_b, mongo, NOW - timedelta(hours=2), "mongodb", size=20)
    commit_backup(region_a, mongo, NOW - timedelta(hours=40), "mongodb", size=21)
    commit_backup(region_a, influx, NOW - timedelta(hours=30), "influxdb", size=30)
    # same name, other kind: a mysql backup of the mongo name is not the mongodb source's
    commit_backup(region_a, mongo, NOW, "mysql", size=99)

    started = datetime.now(UTC)
    with pytest.raises(RuntimeError):
        failing_backup({"source": mysql})
    with pytest.raises(RuntimeError):
        failing_mongodb_backup({"source": mongo})
    with pytest.raises(RuntimeError):
        failing_influxdb_backup()  # no parameters: the flow's default source

    history = tmp_path / "drills" / "history.jsonl"
    append_history(history, drill(mysql, NOW, 2400, False))
    append_history(history, drill(f"mongodb/{mongo}", NOW - timedelta(days=9), 100, True))
    append_history(history, drill(f"mongodb/{mongo}", NOW - timedelta(days=1), 120, True))
    append_history(history, drill(f"influxdb/{influx}", NOW, 60, False, rpo=5000))

    args = parse_args(
        [
            "--source", f"mysql/{mysql}",
            "--source", f"mongodb/{mongo}",
            "--source", f"influxdb/{influx}",
            "--store-block", save_block(store, "metrics-store"),
            "--drill-history", str(history),
        ]
    )  # fmt: skip
    got = samples(scrape(build_registry(args.source, args.store_block, args.drill_history)))

    def value(name: str, kind: str, source: str) -> float | None:
        return got.get((name, (("kind", kind), ("source", source))))

    success = "vibeops_backup_last_success_timestamp_seconds"
    for kind, source, hours, size in [
        ("mysql", mysql, 1, 10),
        ("mongodb", mongo, 2, 20),
        ("influxdb", influx, 30, 30),
    ]:
        assert value("vibeops_backup_newest_age_seconds", kind, source) == pytest.approx(
            (datetime.now(UTC) - (NOW - timedelta(hours=hours))).total_seconds(), abs=120
        )
        assert value(success, kind, source) == pytest.approx(
            (NOW - timedelta(hours=hours, seconds=-30)).timestamp()
        )
        assert value("vibeops_backup_newest_size_bytes", kind, source) == size
        assert value("vibeops_backup_newest_duration_seconds", kind, source) == 35  # 5 s + 30 s
        # Merging Prefect's failures keeps every catalog figure (it dropped the recovery point).
        assert value("vibeops_recovery_point_age_seconds", kind, source) == pytest.approx(
            (datetime.now(UTC) - (NOW - timedelta(hours=hours))).total_seconds(), abs=120
        )
    assert value(success, "mysql", mongo) is None  # not a configured source

    failure = "vibeops_backup_last_failure_timestamp_seconds"
    assert value(failure, "mysql", mysql) >= started.timestamp()  # type: ignore[operator]
    assert value(failure, "mongodb", mongo) >= started.timestamp()  # type: ignore[operator]
    assert value(failure, "influxdb", influx) is None  # it did not fail
    assert value(failure, "mongodb", mysql) is None  # failures keep their kind
    # the parameterless influxdb run failed for the flow's default source (failure only)
    default_influx = BackupInfluxParams.model_fields["source"].default
    assert value(failure, "influxdb", default_influx) >= started.timestamp()  # type: ignore[operator]

    assert value("vibeops_drill_rto_seconds", "mysql", mysql) == 2400
    assert value("vibeops_drill_passed", "mysql", mysql) == 0
    assert value("vibeops_drill_rto_seconds", "mongodb", mongo) == 120
    assert value("vibeops_drill_last_timestamp_seconds", "mongodb", mongo) == (
        (NOW - timedelta(days=1)).timestamp()
    )
    assert value("vibeops_drill_passed", "mongodb", mongo) == 1
    assert value("vibeops_drill_rpo_seconds", "influxdb", influx) == 5000
    assert value("vibeops_drill_rpo_target_seconds", "influxdb", influx) == 3600
    assert value("vibeops_drill_passed", "influxdb", influx) == 0
    assert not [
        k for k in got if k[0].startswith("vibeops_drill") and dict(k[1]).get("kind") is None
    ]
    for source in ("catalog", "prefect", "drill_history"):
        assert got[("vibeops_exporter_source_up", (("source", source),))] == 1
