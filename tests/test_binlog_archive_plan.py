"""Which files an archive run copies, which sequence they join, and when it flushes (pure)."""

from __future__ import annotations

from datetime import timedelta

from tasks.binlog_archive import pending_logs, place_segment, should_flush
from tasks.binlog_events import BinlogSummary, parse_gtid_list
from tasks.binlog_source import BinaryLog, BinlogServerState
from tests.binlog_samples import SEQ, T0, segment


def _state(first: int, last: int, gtid: str) -> BinlogServerState:
    logs = [BinaryLog(f"binlog.{i:06d}", 1000) for i in range(first, last + 1)]
    return BinlogServerState(1, True, "ROW", gtid, logs)


def _summary(start: str, last: str, created_minutes: int, server_id: int = 1) -> BinlogSummary:
    return BinlogSummary(
        server_id=server_id,
        created_at=T0 + timedelta(minutes=created_minutes),
        gtid_list_start=parse_gtid_list(start),
        gtid_last=parse_gtid_list(last),
    )


LAST = segment(12, 110, 120, T0)  # binlog.000012 of SEQ, GTIDs 0-1-110 .. 0-1-120


def test_pending_files_follow_the_last_archived_one() -> None:
    assert [log.index for log in pending_logs(_state(10, 15, "0-1-160"), LAST, None)] == [13, 14]
    # Nothing archived yet: start at the newest base's file while the server still has it.
    assert [
        log.index for log in pending_logs(_state(10, 15, "0-1-160"), None, "binlog.000013")
    ] == [
        13,
        14,
    ]
    assert [
        log.index for log in pending_logs(_state(10, 15, "0-1-160"), None, "binlog.000002")
    ] == [
        10,
        11,
        12,
        13,
        14,
    ]


def test_after_reset_master_every_closed_file_is_pending() -> None:
    # Numbering went back below the last archived file.
    assert [log.index for log in pending_logs(_state(1, 3, "0-1-9"), LAST, None)] == [1, 2]
    # Numbering already past it again, but the GTID state went back: still all of them.
    assert [log.index for log in pending_logs(_state(1, 15, "0-1-40"), LAST, None)] == list(
        range(1, 15)
    )


def test_place_segment_continues_or_names_the_gap() -> None:
    same, gap = place_segment(
        LAST, _summary("0-1-120", "0-1-130", 5), BinaryLog("binlog.000013", 1)
    )
    assert same == SEQ and gap is None
    seq, gap = place_segment(
        LAST, _summary("0-1-140", "0-1-150", 15), BinaryLog("binlog.000015", 1)
    )
    assert seq == SEQ and gap is not None and gap.kind == "purged-before-archived"
    assert gap.missing == "binlog.000013..binlog.000014"
    seq, gap = place_segment(LAST, _summary("0-1-125", "0-1-130", 5), BinaryLog("binlog.000013", 1))
    assert seq == SEQ and gap is not None and gap.kind == "gtid-mismatch"
    seq, gap = place_segment(LAST, _summary("", "0-1-3", 30), BinaryLog("binlog.000001", 1))
    assert seq != SEQ and seq.startswith("1-") and gap is not None and gap.kind == "new-sequence"
    assert "RESET MASTER" in gap.message and "backup-mysql" in gap.message
    seq, gap = place_segment(
        LAST, _summary("0-1-120", "0-1-130", 5, server_id=2), BinaryLog("binlog.000013", 1)
    )
    assert seq.startswith("2-") and gap is not None and gap.kind == "new-sequence"
    first, gap = place_segment(None, _summary("", "0-1-3", 0), BinaryLog("binlog.000001", 1))
    assert first == f"1-{T0:%Y%m%dT%H%M%SZ}" and gap is None


def test_flush_when_the_oldest_commit_would_outgrow_max_lag_by_the_next_run() -> None:
    five = timedelta(minutes=5)
    assert not should_flush(None, T0, five, five)  # no unarchived commit
    assert should_flush(T0, T0, five, five)  # any commit: the next run is 5 min away
    one = timedelta(minutes=1)
    assert not should_flush(T0 - timedelta(minutes=3), T0, five, one)
    assert should_flush(T0 - timedelta(minutes=4), T0, five, one)
