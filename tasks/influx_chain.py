"""Incremental InfluxDB backups as chains: a full base, then incrementals each following the last.

An incremental exports the points stamped at or after the previous backup's consistent point
minus an overlap. Points written later with OLDER timestamps (backfills) and deletions are not
in any incremental: the nightly full backup stays the base that catches them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from tasks.errors import BackupVerificationError
from tasks.manifest import BackupManifest

FULL_DEPLOYMENT = "backup-influxdb/nightly"


class NoBaseBackup(BackupVerificationError):
    """An incremental backup was asked for, but no committed backup of the bucket exists."""


@dataclass(frozen=True)
class IncrementalStart:
    """Where an incremental starts: after `previous`, in the chain of `base_id`."""

    previous: BackupManifest
    base_id: str
    since: datetime


def incremental_start(
    committed: Sequence[BackupManifest], source: str, bucket: str, overlap: timedelta
) -> IncrementalStart:
    """The newest committed backup of `bucket` and the instant the next incremental starts at.

    Raises:
        NoBaseBackup: no committed backup of that bucket (run a full backup first).
    """
    mine = [m for m in committed if m.influxdb is not None and m.influxdb.bucket == bucket]
    if not mine:
        raise NoBaseBackup(
            f"mode 'incremental': no committed backup of bucket {bucket!r} under influxdb/{source}/ "
            f"to follow; run a full backup first (mode: full, e.g. the {FULL_DEPLOYMENT} "
            "deployment), then the incrementals chain onto it"
        )
    previous = max(mine, key=lambda m: (m.consistent_at, m.backup_id))
    details = previous.influxdb
    assert details is not None
    base_id = details.base_backup_id if details.mode == "incremental" else previous.backup_id
    assert base_id is not None
    return IncrementalStart(previous, base_id, previous.consistent_at - overlap)


def backup_chain(
    by_id: Mapping[str, BackupManifest], chosen: BackupManifest
) -> list[BackupManifest]:
    """`chosen` and the backups it builds on, oldest (the full base) first.

    Raises:
        BackupVerificationError: a link of the chain is not committed in any reachable region.
    """
    chain = [chosen]
    while (details := chain[-1].influxdb) is not None and details.mode == "incremental":
        previous_id = details.previous_backup_id
        previous = by_id.get(previous_id or "")
        if previous is None or len(chain) > 10_000:
            raise BackupVerificationError(
                f"incremental backup {chain[-1].backup_id} follows {previous_id}, which is not "
                "committed in any reachable region: the chain cannot be restored; pick an "
                f"older backup or the full base {details.base_backup_id}"
            )
        chain.append(previous)
    return chain[::-1]
