"""InfluxDB 2: backup, restore drill and retention tiers, with the real influxdb-client
against the in-memory API stand-in (tests/influx_standin)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from influxdb_client import Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from prefect import flow
from prefect.client.orchestration import get_client

from blocks import BackupStore, InfluxConnection, RetentionPolicy
from flows.backup_influxdb import BackupInfluxParams, backup_influxdb
from flows.forms import params_of
from flows.restore_drill_influxdb import RestoreDrillInfluxParams, restore_drill_influxdb
from flows.retention import PurgeRetentionParams, purge_retention
from tasks.catalog import scan_backups
from tasks.errors import (
    DatabaseAuthError,
    DatabaseNotFound,
    DatabaseUnreachable,
    DrillFailed,
    RestoreTargetRefused,
    RetentionPolicyInvalid,
)
from tasks.influx import parse_drill_bucket_description, to_ns
from tasks.influx_backup import restore_influx_copy
from tasks.influx_retention import InfluxTiersRun, count_tier_points
from tasks.influx_tiers import plan_tiers_rule, tier_steps
from tasks.local_stack import free_port
from tasks.retention import InfluxTier, InfluxTiersRule, PolicySpec, validate_policy
from tasks.storage import open_store
from tests.fixtures.gcs import gcs_destination
from tests.helpers import child_argvs, events_of, local_store, run_texts, save_block
from tests.influx_standin import InfluxStandIn

NS = 1_000_000_000
BASE_NS = to_ns(datetime(2026, 11, 20, tzinfo=UTC)) + 123_456_789


def _conn(
    server: InfluxStandIn, token: str | None = None, url: str | None = None
) -> InfluxConnection:
    return InfluxConnection(
        url=url or server.url, org=server.org, token=token or server.token, timeout_seconds=5
    )


def _sample_points() -> list[Point]:
    """Several measurements; tags with spaces, commas, '=' and quotes; every field type; ns."""
    points = []
    for i in range(3 * 24 * 6):  # three days, every 10 minutes
        stamp = BASE_NS + i * 600 * NS + i  # odd nanoseconds
        points.append(
            Point("cpu load")
            .tag("host name", f"web {i % 3}")
            .tag("dc", "eu,west=1" if i % 2 else 'us "east"')
            .field("usage", i / 7)
            .field("cores", i % 8)
            .field("throttled", i % 5 == 0)
            .field("note", f'said "hi", {i}\\ok')
            .time(stamp, WritePrecision.NS)
        )
        points.append(
            Point("http,requests")
            .tag("path", "/a b")
            .field("count", i)
            .time(stamp + 7, WritePrecision.NS)
        )
    points.append(Point("events").field("message", "deploy v1=ok").time(BASE_NS, WritePrecision.NS))
    return points


@pytest.fixture
def source_bucket(influx_server: InfluxStandIn) -> Iterator[str]:
    name = f"metrics_{uuid.uuid4().hex[:8]}"
    with _conn(influx_server).get_client() as client:
        client.buckets_api().create_bucket(bucket_name=name, org=influx_server.org)
        client.write_api(write_options=SYNCHRONOUS).write(name, influx_server.org, _sample_points())
    yield name


def _series(server: InfluxStandIn, bucket: str) -> dict:
    with server.lock:
        found = server.bucket_by_name(bucket)
        assert found is not None
        return {key: dict(values) for key, values in server.series[found["id"]].items()}


def _backup(
    server: InfluxStandIn,
    bucket: str,
    store: BackupStore,
    conn: InfluxConnection | None = None,
    **extra,
):
    params = BackupInfluxParams(
        source=bucket.replace("_", "-"),
        bucket=bucket,
        connection_block=save_block(conn or _conn(server)),
        store_block=save_block(store),
        **extra,
    )
    return backup_influxdb(**params_of(params), return_state=True)


def _drill(server: InfluxStandIn, store: BackupStore, source: str):
    """restore-drill-influxdb of `source` with default targets (its final state)."""
    params = RestoreDrillInfluxParams(
        source=source,
        store_block=save_block(store),
        connection_block=save_block(_conn(server)),
    )
    return restore_drill_influxdb(**params_of(params), return_state=True)


def _event_payloads(name: str, flow_run_id: uuid.UUID) -> list[dict]:
    return [event["payload"] for event in events_of(name, flow_run_id)]


def _state_exception(state) -> BaseException:
    with pytest.raises(Exception) as info:
        state.result()
    return info.value


def test_round_trip_two_regions_and_gcs_restores_identical(
    influx_server: InfluxStandIn, source_bucket: str, tmp_path: Path, gcs_bucket_factory
) -> None:
    gcs_name = gcs_bucket_factory()
    store = local_store(tmp_path)
    store = BackupStore(destinations=[*store.destinations, gcs_destination("eu-west1", gcs_name)])
    state = _backup(influx_server, source_bucket, store)
    manifest = state.result()
    source = source_bucket.replace("_", "-")
    assert manifest.kind == "influxdb" and manifest.engine == "influx-lp"
    assert manifest.prefix.startswith(f"influxdb/{source}/")
    assert manifest.objects[0].name == "points.lp.zst"
    details = manifest.influxdb
    assert details is not None and details.bucket == source_bucket
    assert {n: m.points for n, m in details.measurements.items()} == {
        "cpu load": 432 * 4,
        "http,requests": 432,
        "events": 1,
    }
    assert manifest.total_rows == influx_server.points(source_bucket)
    stores = [open_store(d) for d in store.destinations]
    copies = {s.read_bytes(manifest.object_key("points.lp.zst")) for s in stores}
    assert len(copies) == 1, "every region holds the same bytes"
    assert all(scan_backups(s, source, "influxdb")[0].committed for s in stores)

    scratch = f"drill_check_{uuid.uuid4().hex[:6]}"
    conn = _conn(influx_server)

    @flow(name="restore-influxdb-copy-test")
    def restore_one():  # type: ignore[no-untyped-def]
        return restore_influx_copy(conn, manifest, stores[2], scratch, 500)

    stats = restore_one()
    assert stats.points == manifest.total_rows
    created = influx_server.bucket_by_name(scratch) or {}
    marker = parse_drill_bucket_description(created.get("description"))
    assert marker is not None, "the drill marks the bucket it creates (for cleanup-drills)"
    assert (marker.source, marker.backup_id) == (source, manifest.backup_id)
    assert _series(influx_server, scratch) == _series(influx_server, source_bucket)

    drill = _drill(influx_server, store, source)
    record = drill.result()
    assert record.passed and record.region == "local-a" and record.rows == manifest.total_rows
    assert not [
        b for b in influx_server.buckets.values() if b["name"].startswith(f"drill_{source}")
    ]
    backup_run, drill_run = state.state_details.flow_run_id, drill.state_details.flow_run_id
    assert _event_payloads("vibeops.backup.succeeded", backup_run)[0]["kind"] == "influxdb"
    assert _event_payloads("vibeops.drill.passed", drill_run)[0]["kind"] == "influxdb"
    assert influx_server.token not in run_texts(backup_run) + run_texts(drill_run)


def test_wrong_token_is_named_and_nothing_written(
    influx_server: InfluxStandIn, source_bucket: str, tmp_path: Path
) -> None:
    secret = f"wrong-{uuid.uuid4().hex}"
    store = local_store(tmp_path)
    state = _backup(influx_server, source_bucket, store, _conn(influx_server, token=secret))
    exc = _state_exception(state)
    assert isinstance(exc, DatabaseAuthError), exc
    assert "`token`" in str(exc)
    assert not any(p.is_file() for p in tmp_path.rglob("*")), "a failed run left files"
    failed = _event_payloads("vibeops.backup.failed", state.state_details.flow_run_id)
    assert failed[0]["kind"] == "influxdb" and failed[0]["error"] == "DatabaseAuthError"
    texts = run_texts(state.state_details.flow_run_id)
    assert secret not in texts and influx_server.token not in texts


def test_unreachable_url_and_missing_bucket(
    influx_server: InfluxStandIn, source_bucket: str, tmp_path: Path
) -> None:
    store = local_store(tmp_path)
    down = _conn(influx_server, url=f"http://127.0.0.1:{free_port()}")
    exc = _state_exception(_backup(influx_server, source_bucket, store, down))
    assert isinstance(exc, DatabaseUnreachable) and "`url`" in str(exc), exc
    exc = _state_exception(_backup(influx_server, "no_such_bucket", store))
    assert isinstance(exc, DatabaseNotFound) and "'no_such_bucket'" in str(exc), exc
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_corrupt_copy_fails_verification_and_drill_uses_other_region(
    influx_server: InfluxStandIn, source_bucket: str, tmp_path: Path
) -> None:
    store = local_store(tmp_path)
    manifest = _backup(influx_server, source_bucket, store).result()
    path = tmp_path / "local-a" / manifest.object_key("points.lp.zst")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    record = restore_drill_influxdb(
        **params_of(
            RestoreDrillInfluxParams(
                source=manifest.source,
                store_block=save_block(store),
                connection_block=save_block(_conn(influx_server)),
            )
        )
    )
    assert record.passed
    assert record.corrupt_regions == ["local-a"] and record.region == "local-b"


def test_drill_refuses_the_source_bucket_and_misses_a_target_loudly(
    influx_server: InfluxStandIn, tmp_path: Path
) -> None:
    bucket = f"drill_src_{uuid.uuid4().hex[:6]}"  # a drill-like name, so only the source rule trips
    with _conn(influx_server).get_client() as client:
        client.buckets_api().create_bucket(bucket_name=bucket, org=influx_server.org)
        client.write_api(write_options=SYNCHRONOUS).write(
            bucket, influx_server.org, _sample_points()[:50]
        )
    store = local_store(tmp_path)
    manifest = _backup(influx_server, bucket, store).result()
    before = _series(influx_server, bucket)
    params = dict(
        source=manifest.source,
        store_block=save_block(store),
        connection_block=save_block(_conn(influx_server)),
    )
    state = restore_drill_influxdb(
        **params_of(RestoreDrillInfluxParams(**params, scratch_database=bucket)), return_state=True
    )
    exc = _state_exception(state)
    assert isinstance(exc, RestoreTargetRefused) and "scratch_database" in str(exc), exc
    assert _series(influx_server, bucket) == before
    taken = f"drill_taken_{uuid.uuid4().hex[:6]}"
    with _conn(influx_server).get_client() as client:
        client.buckets_api().create_bucket(bucket_name=taken, org=influx_server.org)
        client.write_api(write_options=SYNCHRONOUS).write(taken, influx_server.org, "keep x=1i 1")
    state = restore_drill_influxdb(
        **params_of(RestoreDrillInfluxParams(**params, scratch_database=taken)), return_state=True
    )
    exc = _state_exception(state)
    assert isinstance(exc, RestoreTargetRefused) and "already exists" in str(exc), exc
    assert influx_server.points(taken) == 1, "a bucket the drill did not create is left alone"
    state = restore_drill_influxdb(
        **params_of(RestoreDrillInfluxParams(**params, rpo_target=timedelta(microseconds=1))),
        return_state=True,
    )
    exc = _state_exception(state)
    assert isinstance(exc, DrillFailed) and "RPO" in str(exc), exc
    assert _event_payloads("vibeops.drill.failed", state.state_details.flow_run_id)


def test_token_never_in_argv_logs_artifacts_or_events(
    influx_server: InfluxStandIn, source_bucket: str, tmp_path: Path
) -> None:
    store = local_store(tmp_path)
    state = _backup(influx_server, source_bucket, store)
    manifest = state.result()
    drill = _drill(influx_server, store, manifest.source)
    drill.result()
    token = influx_server.token
    for run in (state, drill):
        assert token not in run_texts(run.state_details.flow_run_id)
    assert token.encode() not in Path(f"/proc/{os.getpid()}/cmdline").read_bytes()
    assert all(token.encode() not in argv for _, argv in child_argvs("python", "influx"))
    assert token not in manifest.to_json().decode()
    for path in tmp_path.rglob("*.json"):
        assert token not in path.read_text()


# -- retention tiers ----------------------------------------------------------------------------

AS_OF = datetime(2026, 1, 1, tzinfo=UTC)
HALF_HOUR = 1800 * NS
DAY = 86_400 * NS


def _tiers_rule(bucket: str) -> InfluxTiersRule:
    return InfluxTiersRule(
        name="metrics-tiers",
        bucket=bucket,
        tiers=[
            InfluxTier(name="hot", until_days=30),
            InfluxTier(name="warm", until_days=90, downsample_every=timedelta(hours=1)),
            InfluxTier(name="cold", until_days=365, downsample_every=timedelta(days=1)),
        ],
        delete_after_last_tier=True,
    )


@pytest.fixture
def tiered_bucket(influx_server: InfluxStandIn) -> str:
    """400 days before AS_OF: `temp` every 30 min (value k % 7), `load` every hour (k % 5)."""
    bucket = f"tiers_{uuid.uuid4().hex[:6]}"
    start = to_ns(AS_OF) - 400 * DAY
    lines = [f"temp,sensor=s1 value={k % 7}.0 {start + k * HALF_HOUR}" for k in range(400 * 48)]
    lines += [f"load,host=h1 value={k % 5}.0 {start + k * 2 * HALF_HOUR}" for k in range(400 * 24)]
    with _conn(influx_server).get_client() as client:
        client.buckets_api().create_bucket(bucket_name=bucket, org=influx_server.org)
        writer = client.write_api(write_options=SYNCHRONOUS)
        for i in range(0, len(lines), 5000):
            writer.write(bucket, influx_server.org, "\n".join(lines[i : i + 5000]))
    return bucket


def _purge(server: InfluxStandIn, rule: InfluxTiersRule, dry_run: bool):
    params = PurgeRetentionParams(
        policy_block=save_block(RetentionPolicy(rules=[rule])),
        influx_connection_block=save_block(_conn(server)),
        as_of=AS_OF,
        dry_run=dry_run,
    )
    return purge_retention(**params_of(params))


def test_tiers_plan_dry_run_then_downsample_hot_warm_cold(
    influx_server: InfluxStandIn, tiered_bucket: str
) -> None:
    rule = _tiers_rule(tiered_bucket)
    run = InfluxTiersRun(_conn(influx_server), AS_OF)
    counts = count_tier_points.fn(run, rule)
    assert counts == [{"temp": 370 * 48, "load": 370 * 24}, {}, {}]
    plan = plan_tiers_rule(rule, AS_OF, counts)
    assert plan.rows == 370 * 72 and plan.cutoff == AS_OF - timedelta(days=30)
    before = _series(influx_server, tiered_bucket)

    (dry,) = _purge(influx_server, rule, dry_run=True)
    assert dry.status == "dry-run"
    assert _series(influx_server, tiered_bucket) == before
    assert influx_server.bucket_by_name(f"{tiered_bucket}_warm") is None

    (outcome,) = _purge(influx_server, rule, dry_run=False)
    assert outcome.status == "ok", outcome.error
    assert outcome.rows_deleted == 370 * 72 + 310 * 24 * 2 + 35 * 2
    start, as_of = to_ns(AS_OF) - 400 * DAY, to_ns(AS_OF)
    hot = _series(influx_server, tiered_bucket)
    warm = _series(influx_server, f"{tiered_bucket}_warm")
    cold = _series(influx_server, f"{tiered_bucket}_cold")
    temp = ("temp", (("sensor", "s1"),), "value")
    load = ("load", (("host", "h1"),), "value")
    assert sorted(hot[temp]) == [as_of - 30 * DAY + k * HALF_HOUR for k in range(30 * 48)]
    assert len(hot[load]) == 30 * 24
    assert sorted(warm[temp]) == [as_of - 90 * DAY + h * 2 * HALF_HOUR for h in range(60 * 24)]
    assert len(warm[load]) == 60 * 24
    assert sorted(cold[temp]) == [as_of - 365 * DAY + d * DAY for d in range(275)]
    assert len(cold[load]) == 275
    hour = as_of - 90 * DAY  # hourly mean of the two raw values in that hour
    k = (hour - start) // HALF_HOUR
    assert warm[temp][hour] == pytest.approx((k % 7 + (k + 1) % 7) / 2)
    day = as_of - 365 * DAY  # daily mean of 48 raw values
    k = (day - start) // HALF_HOUR
    assert cold[temp][day] == pytest.approx(sum((k + i) % 7 for i in range(48)) / 48)

    assert count_tier_points.fn(run, rule) == [{}, {}, {}]
    (again,) = _purge(influx_server, rule, dry_run=False)
    assert again.status == "nothing-to-do"
    assert _series(influx_server, f"{tiered_bucket}_warm") == warm


def test_tier_steps_align_cutoffs_and_need_downsampling() -> None:
    rule = _tiers_rule("metrics")
    now = datetime(2026, 3, 1, 13, 45, tzinfo=UTC)
    steps = tier_steps(rule, now)
    assert [(s.action, s.source_bucket, s.target_bucket) for s in steps] == [
        ("downsample", "metrics", "metrics_warm"),
        ("downsample", "metrics_warm", "metrics_cold"),
        ("delete", "metrics_cold", None),
    ]
    assert steps[0].cutoff == datetime(2026, 1, 30, 13, 0, tzinfo=UTC)  # floored to 1 h
    assert steps[1].cutoff == datetime(2025, 12, 1, tzinfo=UTC)  # floored to 1 d
    assert steps[2].cutoff == now - timedelta(days=365)
    raw_warm = rule.model_copy(
        update={
            "tiers": [rule.tiers[0], rule.tiers[1].model_copy(update={"downsample_every": None})]
        }
    )
    with pytest.raises(RetentionPolicyInvalid, match="needs downsample_every"):
        validate_policy(PolicySpec(rules=[raw_warm]), now, now)


def test_standin_answers_like_influxdb_2(influx_server: InfluxStandIn) -> None:
    from influxdb_client.rest import ApiException

    with _conn(influx_server).get_client() as client:
        with pytest.raises(ApiException) as info:
            client.query_api().query('from(bucket: "x") |> range(start: -1h)')
        assert info.value.status == 400 and b"compilation failed" in info.value.body
    with _conn(influx_server, token="nope").get_client() as client:
        with pytest.raises(ApiException) as info:
            client.buckets_api().find_buckets()
        assert info.value.status == 401
        assert json.loads(info.value.body) == {
            "code": "unauthorized",
            "message": "unauthorized access",
        }


def test_runs_without_parameters_use_the_embedded_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A quick run from the UI sends no parameters: the flows fall back to their defaults.
    server = InfluxStandIn(port=free_port(), token=f"tok-{uuid.uuid4().hex}").start()
    try:
        monkeypatch.setenv("VIBEOPS_HOME", str(tmp_path))
        monkeypatch.setenv("VIBEOPS_INFLUX_URL", server.url)
        monkeypatch.setenv("VIBEOPS_INFLUX_TOKEN", server.token)
        with _conn(server).get_client() as client:
            client.buckets_api().create_bucket(bucket_name="vibebench", org=server.org)
            client.write_api(write_options=SYNCHRONOUS).write(
                "vibebench", server.org, _sample_points()
            )
        backup = backup_influxdb(return_state=True)
        drill = restore_drill_influxdb(return_state=True)
    finally:
        server.stop()
    assert backup.is_completed(), backup
    assert drill.is_completed(), drill
    assert backup.result().source == "vibebench-metrics"
    assert (tmp_path / "backups" / "region-a" / "influxdb" / "vibebench-metrics").is_dir()
    with get_client(sync_client=True) as client:
        names = {client.read_flow_run(s.state_details.flow_run_id).name for s in (backup, drill)}
    assert names == {
        "backup-influxdb-vibebench-metrics",
        "restore-drill-influxdb-vibebench-metrics",
    }
