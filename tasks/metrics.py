"""Prometheus metrics for backups and restore drills: the figures the alert rules read.

A small exporter: on every scrape it reads
- the backup catalog (newest committed manifest per source, any region): last success and age;
- the Prefect API (failed or crashed `backup-mysql` runs): last failure per source;
- the drill history (JSON lines of `tasks.drill.DrillRecord`): RTO, RPO, their targets, verdict.

Run it next to Prometheus (rules in deployments/alerting/rules/vibeops.rules.yml):

    uv run python -m tasks.metrics --port 9108 --source vibebench

Each data source sits behind a function returning plain records, so the collector is tested
without servers and the sources can be swapped (e.g. a GCS-backed store block in production).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tasks.catalog import newest_committed_backup
from tasks.drill import DrillRecord, history_file, read_history
from tasks.storage import ObjectStore

logger = logging.getLogger("vibeops.metrics")

BACKUP_FLOW = "backup-mysql"


@dataclass(frozen=True)
class BackupStatus:
    """What the catalog and Prefect say about one source's backups."""

    kind: str
    source: str
    last_success_at: datetime | None = None
    consistent_at: datetime | None = None
    size_bytes: int | None = None
    last_failure_at: datetime | None = None


@dataclass(frozen=True)
class DrillStatus:
    """The latest restore drill of one source."""

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
    failure = GaugeMetricFamily(
        "vibeops_backup_last_failure_timestamp_seconds",
        "When the latest failed or crashed backup run ended (Unix time).",
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
        if status.last_failure_at is not None:
            failure.add_metric(values, status.last_failure_at.timestamp())
    return [success, consistent, age, size, failure]


def drill_families(drills: Iterable[DrillStatus]) -> list[GaugeMetricFamily]:
    """The drill gauges of each source's latest drill."""
    labels = ["source"]
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
        values = [drill.source]
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
    """The newest drill per source."""
    newest: dict[str, DrillRecord] = {}
    for record in records:
        current = newest.get(record.source)
        if current is None or record.finished_at >= current.finished_at:
            newest[record.source] = record
    return [
        DrillStatus(
            source=r.source,
            finished_at=r.finished_at,
            rto_seconds=r.rto_seconds,
            rpo_seconds=r.rpo_seconds,
            rto_target_seconds=r.rto_target_seconds,
            rpo_target_seconds=r.rpo_target_seconds,
            passed=r.passed,
        )
        for r in sorted(newest.values(), key=lambda r: r.source)
    ]


# -- data sources -----------------------------------------------------------------------------


def read_catalog_statuses(
    stores: Sequence[ObjectStore], sources: Sequence[str], kind: str = "mysql"
) -> list[BackupStatus]:
    """Newest committed backup of each source, from the catalog over every region."""
    statuses = []
    for source in sources:
        manifest = newest_committed_backup(list(stores), source, kind)
        if manifest is None:
            statuses.append(BackupStatus(kind=kind, source=source))
            continue
        statuses.append(
            BackupStatus(
                kind=kind,
                source=source,
                last_success_at=manifest.finished_at,
                consistent_at=manifest.consistent_at,
                size_bytes=manifest.total_size,
            )
        )
    return statuses


def read_backup_failures(
    flow_name: str = BACKUP_FLOW, since: timedelta = timedelta(days=14)
) -> dict[str, datetime]:
    """When each source's latest failed or crashed backup run ended, from the Prefect API.

    The source is the run's `params.source` parameter (the flow's default when absent).
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
        params = (run.parameters or {}).get("params") or {}
        source = params.get("source", "vibebench") if isinstance(params, dict) else "vibebench"
        ended = run.end_time or run.expected_start_time
        if ended is not None and (source not in failures or ended > failures[source]):
            failures[source] = ended
    return failures


def merge_failures(
    statuses: Iterable[BackupStatus], failures: dict[str, datetime]
) -> list[BackupStatus]:
    """Attach each source's last failure time (sources with only failures are added)."""
    merged = []
    seen = set()
    for status in statuses:
        seen.add(status.source)
        merged.append(
            BackupStatus(
                kind=status.kind,
                source=status.source,
                last_success_at=status.last_success_at,
                consistent_at=status.consistent_at,
                size_bytes=status.size_bytes,
                last_failure_at=failures.get(status.source),
            )
        )
    for source, when in sorted(failures.items()):
        if source not in seen:
            merged.append(BackupStatus(kind="mysql", source=source, last_failure_at=when))
    return merged


# -- the collector ----------------------------------------------------------------------------


class VibeOpsCollector(Collector):
    """Reads every data source on each scrape; a failing source is reported, not fatal."""

    def __init__(
        self,
        backups: Callable[[], list[BackupStatus]],
        failures: Callable[[], dict[str, datetime]] | None,
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
    sources: Sequence[str],
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
            failures=read_backup_failures if read_prefect else None,
            drills=lambda: latest_drills(read_history(history)),
        )
    )
    return registry


def serve_exporter(
    port: int,
    sources: Sequence[str],
    host: str = "127.0.0.1",
    store_block: str = "",
    drill_history: Path | None = None,
    read_prefect: bool = True,
) -> None:
    """Serve /metrics on host:port until interrupted."""
    registry = build_registry(sources, store_block, drill_history, read_prefect)
    start_http_server(port, addr=host, registry=registry)
    logger.info("vibeops exporter on http://%s:%s/metrics for %s", host, port, ", ".join(sources))
    while True:
        time.sleep(3600)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Export backup and drill metrics.")
    parser.add_argument("--port", type=int, default=9108)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--source", action="append", default=[], help="Backup source name (repeatable)."
    )
    parser.add_argument("--store-block", default="", help="Backup store block; empty = local.")
    parser.add_argument("--drill-history", type=Path, default=None)
    parser.add_argument(
        "--no-prefect", action="store_true", help="Do not read backup failures from Prefect."
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(message)s")
    serve_exporter(
        args.port,
        args.source or ["vibebench"],
        args.host,
        args.store_block,
        args.drill_history,
        not args.no_prefect,
    )


if __name__ == "__main__":
    main()
