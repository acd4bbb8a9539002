"""Prometheus metrics for backups and restore drills: the figures the alert rules read.

A small exporter for every kind of backup (mysql, mongodb, influxdb); on every scrape it reads
- the backup catalog (newest committed manifest per kind and source, any region): last success
  and age;
- the Prefect API (failed or crashed `backup-mysql` / `backup-mongodb` / `backup-influxdb` runs):
  last failure per kind and source;
- the drill history (JSON lines of `tasks.drill.DrillRecord`): RTO, RPO, their targets, verdict.
  MySQL drills record the bare source, the others `<kind>/<source>`.

Every family is labelled `kind` and `source`. Run it next to Prometheus (rules in
deployments/alerting/rules/vibeops.rules.yml):

    uv run python -m tasks.metrics --port 9108 --source mysql/vibebench \
        --source mongodb/vibebench --source influxdb/vibebench-metrics

A bare `--source NAME` means `mysql/NAME`.

Each data source sits behind a function returning plain records, so the collector is tested
without servers and the sources can be swapped (e.g. a GCS-backed store block in production).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tasks.binlog_catalog import newest_restorable_point_in_regions
from tasks.catalog import newest_committed_backup
from tasks.drill import DrillRecord, history_file, read_history
from tasks.manifest import validate_source_name
from tasks.storage import ObjectStore

logger = logging.getLogger("vibeops.metrics")

BACKUP_FLOW = "backup-mysql"

KINDS: tuple[str, ...] = ("mysql", "mongodb", "influxdb")
DEFAULT_KIND = "mysql"
# The flow that backs up each kind, and the source its parameters default to (the models in
# flows/backup.py, flows/backup_mongodb.py, flows/backup_influxdb.py): a run started without
# `params.source` backed up that source.
BACKUP_FLOWS: dict[str, str] = {
    "mysql": "backup-mysql",
    "mongodb": "backup-mongodb",
    "influxdb": "backup-influxdb",
}
DEFAULT_SOURCES: dict[str, str] = {
    "mysql": "vibebench",
    "mongodb": "vibebench",
    "influxdb": "vibebench-metrics",
}


@dataclass(frozen=True, order=True)
class SourceRef:
    """One backed-up source: its kind (the catalog's top folder) and logical name."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


def parse_source(text: str, default_kind: str = DEFAULT_KIND) -> SourceRef:
    """`kind/name` or a bare `name` (= `default_kind`), checked against the known kinds.

    Raises:
        ValueError: an unknown kind or an unusable name.
    """
    kind, sep, name = text.strip().partition("/")
    if not sep:
        kind, name = default_kind, kind
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r} in {text!r}: use one of {', '.join(KINDS)}")
    return SourceRef(kind, validate_source_name(name))


def history_source(recorded: str) -> SourceRef:
    """The kind and name of a drill history record's `source` (bare = mysql)."""
    kind, sep, name = recorded.partition("/")
    if sep and kind in KINDS:
        return SourceRef(kind, name)
    return SourceRef(DEFAULT_KIND, recorded)


@dataclass(frozen=True)
class BackupStatus:
    """What the catalog and Prefect say about one source's backups."""

    kind: str
    source: str
    last_success_at: datetime | None = None
    consistent_at: datetime | None = None
    size_bytes: int | None = None
    duration_seconds: float | None = None
    last_failure_at: datetime | None = None
    # MySQL: newest base + archived binlogs; other kinds: the newest backup's consistent_at.
    recovery_point_at: datetime | None = None


@dataclass(frozen=True)
class DrillStatus:
    """The latest restore drill of one source."""

    kind: str
    source: str
    finished_at: datetime
    rto_seconds: float | None
    rpo_seconds: float | None
    rto_target_seconds: float
    rpo_target_seconds: float
    passed: bool


# -- turning records into metric families (pure) ----------------------------------------------


def backup_families(statuses: Iterable[BackupStatus], now: datetime) -> list[GaugeMetricFamily]:
    """The backup gauges, labelled by kind and source (absent values are not exported)."""
    labels = ["kind", "source"]
    success = GaugeMetricFamily(
        "vibeops_backup_last_success_timestamp_seconds",
        "When the newest committed backup finished (Unix time).",
        labels=labels,
    )
    consistent = GaugeMetricFamily(
        "vibeops_backup_newest_consistent_timestamp_seconds",
        "The point in time the newest committed backup reflects (Unix time).",
        labels=labels,
    )
    age = GaugeMetricFamily(
        "vibeops_backup_newest_age_seconds",
        "Age of the newest committed backup's consistent point (what a restore now would lose).",
        labels=labels,
    )
    size = GaugeMetricFamily(
        "vibeops_backup_newest_size_bytes",
        "Stored size of the newest committed backup.",
        labels=labels,
    )
    duration = GaugeMetricFamily(
        "vibeops_backup_newest_duration_seconds",
        "How long the newest committed backup took, start to manifest.",
        labels=labels,
    )
    failure = GaugeMetricFamily(
        "vibeops_backup_last_failure_timestamp_seconds",
        "When the latest failed or crashed backup run ended (Unix time).",
        labels=labels,
    )
    recovery = GaugeMetricFamily(
        "vibeops_recovery_point_age_seconds",
        "Age of the newest restorable point: the newest base backup plus its unbroken chain "
        "of archived binlogs (MySQL), else the newest backup (what a restore now would lose).",
        labels=labels,
    )
    for status in statuses:
        values = [status.kind, status.source]
        if status.last_success_at is not None:
            success.add_metric(values, status.last_success_at.timestamp())
        if status.consistent_at is not None:
            consistent.add_metric(values, status.consistent_at.timestamp())
            age.add_metric(values, max(0.0, (now - status.consistent_at).total_seconds()))
        if status.size_bytes is not None:
            size.add_metric(values, float(status.size_bytes))
        if status.duration_seconds is not None:
            duration.add_metric(values, status.duration_seconds)
        if status.last_failure_at is not None:
            failure.add_metric(values, status.last_failure_at.timestamp())
        if status.recovery_point_at is not None:
            point_age = max(0.0, (now - status.recovery_point_at).total_seconds())
            recovery.add_metric(values, point_age)
    return [success, consistent, age, size, duration, failure, recovery]


def drill_families(drills: Iterable[DrillStatus]) -> list[GaugeMetricFamily]:
    """The drill gauges of each source's latest drill, labelled by kind and source."""
    labels = ["kind", "source"]
    families = {
        "last": GaugeMetricFamily(
            "vibeops_drill_last_timestamp_seconds",
            "When the latest restore drill finished (Unix time).",
            labels=labels,
        ),
        "rto": GaugeMetricFamily(
            "vibeops_drill_rto_seconds",
            "Recovery time of the latest drill: start to validated restore.",
            labels=labels,
        ),
        "rpo": GaugeMetricFamily(
            "vibeops_drill_rpo_seconds",
            "Recovery point of the latest drill: start minus the backup's consistent point.",
            labels=labels,
        ),
        "rto_target": GaugeMetricFamily(
            "vibeops_drill_rto_target_seconds", "RTO target of the latest drill.", labels=labels
        ),
        "rpo_target": GaugeMetricFamily(
            "vibeops_drill_rpo_target_seconds", "RPO target of the latest drill.", labels=labels
        ),
        "passed": GaugeMetricFamily(
            "vibeops_drill_passed", "1 if the latest drill passed, else 0.", labels=labels
        ),
    }
    for drill in drills:
        values = [drill.kind, drill.source]
        families["last"].add_metric(values, drill.finished_at.timestamp())
        if drill.rto_seconds is not None:
            families["rto"].add_metric(values, drill.rto_seconds)
        if drill.rpo_seconds is not None:
            families["rpo"].add_metric(values, drill.rpo_seconds)
        families["rto_target"].add_metric(values, drill.rto_target_seconds)
        families["rpo_target"].add_metric(values, drill.rpo_target_seconds)
        families["passed"].add_metric(values, 1.0 if drill.passed else 0.0)
    return list(families.values())


def latest_drills(records: Iterable[DrillRecord]) -> list[DrillStatus]:
    """The newest drill per kind and source (`mongodb/x` in the history is kind mongodb)."""
    newest: dict[SourceRef, DrillRecord] = {}
    for record in records:
        ref = history_source(record.source)
        current = newest.get(ref)
        if current is None or record.finished_at >= current.finished_at:
            newest[ref] = record
    return [
        DrillStatus(
            kind=ref.kind,
            source=ref.name,
            finished_at=r.finished_at,
            rto_seconds=r.rto_seconds,
            rpo_seconds=r.rpo_seconds,
            rto_target_seconds=r.rto_target_seconds,
            rpo_target_seconds=r.rpo_target_seconds,
            passed=r.passed,
        )
        for ref, r in sorted(newest.items())
    ]


# -- data sources -----------------------------------------------------------------------------


def read_catalog_statuses(
    stores: Sequence[ObjectStore], sources: Sequence[SourceRef | str], kind: str = DEFAULT_KIND
) -> list[BackupStatus]:
    """Newest committed backup of each source, from the catalog over every region.

    A plain string is `kind/name` or a bare name of `kind`.
    """
    statuses = []
    for source in sources:
        ref = source if isinstance(source, SourceRef) else parse_source(source, kind)
        manifest = newest_committed_backup(list(stores), ref.name, ref.kind)
        if manifest is None:
            statuses.append(BackupStatus(kind=ref.kind, source=ref.name))
            continue
        statuses.append(
            BackupStatus(
                kind=ref.kind,
                source=ref.name,
                last_success_at=manifest.finished_at,
                consistent_at=manifest.consistent_at,
                size_bytes=manifest.total_size,
                duration_seconds=(manifest.finished_at - manifest.started_at).total_seconds(),
                recovery_point_at=_recovery_point_at(stores, ref) or manifest.consistent_at,
            )
        )
    return statuses


def _recovery_point_at(stores: Sequence[ObjectStore], ref: SourceRef) -> datetime | None:
    """MySQL: the newest restorable point (base + archived binlogs) over every region."""
    if ref.kind != "mysql":
        return None
    point = newest_restorable_point_in_regions(list(stores), ref.name)
    return point.point_at if point else None


def read_backup_failures(
    flow_name: str = BACKUP_FLOW,
    since: timedelta = timedelta(days=14),
    default_source: str = DEFAULT_SOURCES[DEFAULT_KIND],
) -> dict[str, datetime]:
    """When each source's latest failed or crashed backup run ended, from the Prefect API.

    The source is the run's `params.source` parameter (`default_source`, the flow's default,
    when absent).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    run_filter = FlowRunFilter(
        state=FlowRunFilterState(
            type=FlowRunFilterStateType(any_=[StateType.FAILED, StateType.CRASHED])
        ),
        start_time=FlowRunFilterStartTime(after_=datetime.now(UTC) - since),  # type: ignore[arg-type]
    )
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            flow_run_filter=run_filter,
            sort=FlowRunSort.END_TIME_DESC,
            limit=200,
        )
    failures: dict[str, datetime] = {}
    for run in runs:
        parameters = run.parameters or {}
        # Runs from before flows took top-level fields kept them under "params".
        params = parameters.get("params") or parameters
        source = params.get("source") if isinstance(params, dict) else None
        source = source if isinstance(source, str) and source else default_source
        ended = run.end_time or run.expected_start_time
        if ended is not None and (source not in failures or ended > failures[source]):
            failures[source] = ended
    return failures


def read_all_backup_failures(
    since: timedelta = timedelta(days=14), kinds: Iterable[str] = KINDS
) -> dict[SourceRef, datetime]:
    """The latest failure of every kind's backup flow, per kind and source."""
    failures: dict[SourceRef, datetime] = {}
    for kind in kinds:
        found = read_backup_failures(BACKUP_FLOWS[kind], since, DEFAULT_SOURCES[kind])
        failures.update({SourceRef(kind, source): when for source, when in found.items()})
    return failures


def merge_failures(
    statuses: Iterable[BackupStatus], failures: dict[SourceRef, datetime]
) -> list[BackupStatus]:
    """Attach each source's last failure time (sources with only failures are added)."""
    merged = []
    seen = set()
    for status in statuses:
        ref = SourceRef(status.kind, status.source)
        seen.add(ref)
        merged.append(replace(status, last_failure_at=failures.get(ref)))
    for ref, when in sorted(failures.items()):
        if ref not in seen:
            merged.append(BackupStatus(kind=ref.kind, source=ref.name, last_failure_at=when))
    return merged


# -- the collector ----------------------------------------------------------------------------


class VibeOpsCollector(Collector):
    """Reads every data source on each scrape; a failing source is reported, not fatal."""

    def __init__(
        self,
        backups: Callable[[], list[BackupStatus]],
        failures: Callable[[], dict[SourceRef, datetime]] | None,
        drills: Callable[[], list[DrillStatus]],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.backups = backups
        self.failures = failures
        self.drills = drills
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "vibeops_exporter_source_up",
            "1 if the data source answered during this scrape, else 0.",
            labels=["source"],
        )
        statuses: list[BackupStatus] = []
        try:
            statuses = self.backups()
            up.add_metric(["catalog"], 1.0)
        except Exception as exc:
            logger.warning("backup catalog unreadable: %s", exc)
            up.add_metric(["catalog"], 0.0)
        if self.failures is not None:
            try:
                statuses = merge_failures(statuses, self.failures())
                up.add_metric(["prefect"], 1.0)
            except Exception as exc:
                logger.warning("Prefect API unreadable: %s", exc)
                up.add_metric(["prefect"], 0.0)
        yield from backup_families(statuses, self.clock())
        try:
            drills = self.drills()
            up.add_metric(["drill_history"], 1.0)
        except Exception as exc:
            logger.warning("drill history unreadable: %s", exc)
            drills = []
            up.add_metric(["drill_history"], 0.0)
        yield from drill_families(drills)
        yield up


def default_drill_history() -> Path:
    """Where restore drills append their records on one machine."""
    from blocks.defaults import vibeops_home

    return history_file(vibeops_home())


def build_registry(
    sources: Sequence[SourceRef | str],
    store_block: str = "",
    drill_history: Path | None = None,
    read_prefect: bool = True,
) -> CollectorRegistry:
    """A registry holding the collector wired to the real data sources."""
    from blocks.defaults import resolve_store
    from tasks.storage import open_store

    history = drill_history or default_drill_history()

    def backups() -> list[BackupStatus]:
        stores = [open_store(d) for d in resolve_store(store_block).destinations]
        return read_catalog_statuses(stores, sources)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        VibeOpsCollector(
            backups=backups,
            failures=read_all_backup_failures if read_prefect else None,
            drills=lambda: latest_drills(read_history(history)),
        )
    )
    return registry


def serve_exporter(
    port: int,
    sources: Sequence[SourceRef | str],
    host: str = "127.0.0.1",
    store_block: str = "",
    drill_history: Path | None = None,
    read_prefect: bool = True,
) -> None:
    """Serve /metrics on host:port until interrupted."""
    registry = build_registry(sources, store_block, drill_history, read_prefect)
    start_http_server(port, addr=host, registry=registry)
    logger.info(
        "vibeops exporter on http://%s:%s/metrics for %s", host, port, ", ".join(map(str, sources))
    )
    while True:
        time.sleep(3600)


def source_argument(text: str) -> SourceRef:
    """argparse type of `--source`: the error names the accepted kinds."""
    try:
        return parse_source(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{exc} (expected KIND/NAME or NAME = mysql/NAME)"
        ) from exc


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; `source` is a list of SourceRef (default mysql/vibebench)."""
    parser = argparse.ArgumentParser(description="Export backup and drill metrics.")
    parser.add_argument("--port", type=int, default=9108)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--source",
        action="append",
        type=source_argument,
        default=[],
        metavar="KIND/NAME",
        help=f"Backup source, KIND one of {', '.join(KINDS)}; a bare NAME is mysql (repeatable).",
    )
    parser.add_argument("--store-block", default="", help="Backup store block; empty = local.")
    parser.add_argument("--drill-history", type=Path, default=None)
    parser.add_argument(
        "--no-prefect", action="store_true", help="Do not read backup failures from Prefect."
    )
    args = parser.parse_args(argv)
    args.source = args.source or [SourceRef(DEFAULT_KIND, DEFAULT_SOURCES[DEFAULT_KIND])]
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(message)s")
    serve_exporter(
        args.port,
        args.source,
        args.host,
        args.store_block,
        args.drill_history,
        not args.no_prefect,
    )


if __name__ == "__main__":
    main()
