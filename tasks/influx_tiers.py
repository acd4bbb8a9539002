"""InfluxDB hot/warm/cold tiers as data: the steps a tiers rule takes and its plan (pure).

For each tier boundary, points of the younger tier older than its age are aggregated into the
next tier's bucket (aggregateWindow with the next tier's `downsample_every`, windows stamped at
their start), then deleted from the younger tier; the last tier optionally deletes after its
age. Cutoffs are aligned down to the next tier's window, so a window is never split between
runs and a re-run writes the same aggregated points (idempotent).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Literal

from tasks.errors import RetentionPolicyInvalid
from tasks.retention import InfluxTiersRule, RulePlan

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class TierStep:
    """One step of a tiers rule, in execution order (youngest boundary first)."""

    action: Literal["downsample", "delete"]
    tier: str
    source_bucket: str
    cutoff: datetime
    target_tier: str | None = None
    target_bucket: str | None = None
    every: timedelta | None = None
    fn: str = "mean"

    @property
    def label(self) -> str:
        if self.action == "delete":
            return f"{self.tier} ({self.source_bucket}): delete"
        return (
            f"{self.tier} ({self.source_bucket}) -> {self.target_tier} ({self.target_bucket}): "
            f"{self.fn} per {_every(self.every)}"
        )


def _every(delta: timedelta | None) -> str:
    seconds = int(delta.total_seconds()) if delta else 0
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def tier_bucket(rule: InfluxTiersRule, index: int) -> str:
    """The bucket of tier `index`: its own `bucket`, else the rule's (first) or `<bucket>_<name>`."""
    tier = rule.tiers[index]
    if tier.bucket:
        return tier.bucket
    return rule.bucket if index == 0 else f"{rule.bucket}_{tier.name}"


def align_down(moment: datetime, every: timedelta) -> datetime:
    """`moment` floored to a multiple of `every` since the epoch (Flux window alignment)."""
    step = every.total_seconds()
    return EPOCH + timedelta(seconds=((moment - EPOCH).total_seconds() // step) * step)


def tier_steps(rule: InfluxTiersRule, now: datetime) -> list[TierStep]:
    """The steps of a tiers rule for a fixed `now`.

    Raises:
        RetentionPolicyInvalid: a tier after the first has no downsample_every.
    """
    steps = []
    tiers = rule.tiers
    for index, (young, old) in enumerate(pairwise(tiers)):
        if old.downsample_every is None or old.downsample_every <= timedelta(0):
            raise RetentionPolicyInvalid(
                f"rule {rule.name!r}: tier {old.name!r} needs downsample_every (e.g. PT1H): data "
                f"entering it from {young.name!r} is aggregated"
            )
        steps.append(
            TierStep(
                action="downsample",
                tier=young.name,
                source_bucket=tier_bucket(rule, index),
                cutoff=align_down(now - timedelta(days=young.until_days), old.downsample_every),
                target_tier=old.name,
                target_bucket=tier_bucket(rule, index + 1),
                every=old.downsample_every,
            )
        )
    if rule.delete_after_last_tier:
        last = len(tiers) - 1
        steps.append(
            TierStep(
                action="delete",
                tier=tiers[last].name,
                source_bucket=tier_bucket(rule, last),
                cutoff=now - timedelta(days=tiers[last].until_days),
            )
        )
    return steps


def plan_tiers_rule(rule: InfluxTiersRule, now: datetime, counts: list[dict[str, int]]) -> RulePlan:
    """The plan of a tiers rule from the points each step's source holds before its cutoff.

    Args:
        rule: The rule.
        now: The run's `as_of`.
        counts: Per step (tier_steps order), values per measurement older than the cutoff.
    """
    steps = tier_steps(rule, now)
    notes = []
    for step, per_measurement in zip(steps, counts, strict=True):
        detail = ", ".join(f"{m}: {n}" for m, n in sorted(per_measurement.items())) or "nothing"
        notes.append(f"{step.label} before {step.cutoff:%Y-%m-%d %H:%M}Z: {detail}")
    return RulePlan(
        rule=rule.name,
        kind=rule.kind,
        action="downsample+delete" if rule.delete_after_last_tier else "downsample",
        target=rule.target,
        cutoff=steps[0].cutoff if steps else None,
        rows=sum(sum(c.values()) for c in counts),
        notes=notes,
    )
