"""Prefect tasks of the InfluxDB tiers rule: count what each step would move, then move it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from prefect import get_run_logger

from blocks.influx import InfluxConnection
from tasks.backup import io_task
from tasks.influx import InfluxSession, downsample_range, to_ns
from tasks.influx_tiers import TierStep, tier_steps
from tasks.retention import InfluxTiersRule


@dataclass(frozen=True)
class InfluxTiersRun:
    """Where tiers rules run and the instant their ages are computed for (`as_of`)."""

    conn: InfluxConnection
    as_of: datetime


@dataclass(frozen=True)
class TiersResult:
    downsampled: int
    deleted: int


def _older_than(session: InfluxSession, step: TierStep, measurement: str | None) -> dict[str, int]:
    if not session.bucket_exists(step.source_bucket):
        return {}
    return session.measurement_counts(step.source_bucket, 0, to_ns(step.cutoff), measurement)


@io_task("count-influxdb-tier-points", retries=2, backoff=2)
def count_tier_points(run: InfluxTiersRun, rule: InfluxTiersRule) -> list[dict[str, int]]:
    """Per step, the values per measurement its source bucket holds before the cutoff."""
    with InfluxSession(run.conn) as session:
        return [_older_than(session, s, rule.measurement) for s in tier_steps(rule, run.as_of)]


@io_task("run-influxdb-tiers", retries=2, backoff=5)
def run_influx_tiers(
    run: InfluxTiersRun,
    rule: InfluxTiersRule,
    on_step: Callable[[float], None] | None = None,
) -> TiersResult:
    """Carry out every step, youngest boundary first (idempotent: a retry rewrites the same
    aggregates and deletes what is still there)."""
    logger = get_run_logger()
    steps = tier_steps(rule, run.as_of)
    downsampled = deleted = 0
    with InfluxSession(run.conn) as session:
        for index, step in enumerate(steps):
            counts = _older_than(session, step, rule.measurement)
            if counts:
                cutoff = to_ns(step.cutoff)
                if step.action == "downsample":
                    assert step.target_bucket is not None and step.every is not None
                    if not session.bucket_exists(step.target_bucket):
                        session.create_bucket(step.target_bucket)
                    downsampled += downsample_range(
                        session,
                        step.source_bucket,
                        step.target_bucket,
                        cutoff,
                        int(step.every.total_seconds()),
                        rule.measurement,
                        step.fn,
                    )
                session.delete_range(step.source_bucket, 0, cutoff, rule.measurement)
                deleted += sum(counts.values())
            logger.info("%s: %d value(s) before %s", step.label, sum(counts.values()), step.cutoff)
            if on_step is not None:
                on_step((index + 1) / len(steps))
    return TiersResult(downsampled=downsampled, deleted=deleted)
