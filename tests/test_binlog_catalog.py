"""Recovery chains over archived binlog segments (pure), and segment download verification."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import zstandard

from tasks.binlog_catalog import (
    best_recovery_point,
    list_segments,
    newest_restorable_point,
    recovery_chain,
    scan_segments,
)
from tasks.binlog_events import format_gtid_list, gtid_covered, parse_gtid_list
from tasks.binlog_io import download_segment, download_segment_any
from tasks.binlog_manifest import (
    binlog_index,
    parse_segment_manifest,
    segment_prefix,
    sequence_name,
)
from tasks.errors import BackupVerificationError
from tasks.storage import LocalFolderStore
from tests.binlog_samples import SEQ, T0, base, five_minute_segments, segment, store_segment


def test_schedule_base_at_0200_archives_every_5_min_drill_at_0500_rpo_under_1h() -> None:
    # The base at 02:00 sits in binlog.000010 (opened 01:58); then one file per 5 minutes.
    opened = T0 - timedelta(minutes=2)
    segments = five_minute_segments(10, 36, opened)  # up to 04:58 + a 4 min tail
    drill_at = T0 + timedelta(hours=3)
    # Only files archived before the drill count.
    archived = [s for s in segments if s.archived_at <= drill_at]
    point = best_recovery_point("app", [base("binlog.000010", 400, "0-1-105", T0)], archived)
    assert point is not None and point.kind == "binlog"
    assert point.chain.gap is None
    assert [s.index for s in point.chain.segments] == list(range(10, 10 + len(archived)))
    rpo = drill_at - point.point_at
    assert rpo < timedelta(hours=1)
    assert rpo <= timedelta(minutes=10)  # one 5-minute schedule plus the file's open time
    # Without the archive the same drill would be 3 h behind.
    only_base = best_recovery_point("app", [base("binlog.000010", 400, "0-1-105", T0)], [])
    assert only_base is not None and drill_at - only_base.point_at == timedelta(hours=3)


def test_missing_middle_segment_is_a_gap_that_names_the_file() -> None:
    segments = five_minute_segments(10, 6, T0 - timedelta(minutes=2))
    del segments[3]  # binlog.000013
    chain = recovery_chain(base("binlog.000010", 400, "0-1-105", T0), segments)
    assert [s.index for s in chain.segments] == [10, 11, 12]
    assert chain.gap is not None and chain.gap.kind == "missing-segment"
    assert chain.gap.missing == "binlog.000013"
    assert "backup-mysql" in chain.gap.message
    assert chain.point_at == segments[2].last_event_at
    assert chain.gtid == "0-1-130"


def test_gtid_states_that_do_not_join_break_the_chain() -> None:
    segments = five_minute_segments(10, 3, T0 - timedelta(minutes=2))
    segments[2] = segment(12, 125, 130, segments[2].file_created_at or T0)  # starts at 125 not 120
    chain = recovery_chain(base("binlog.000010", 400, "0-1-105", T0), segments)
    assert [s.index for s in chain.segments] == [10, 11]
    assert chain.gap is not None and chain.gap.kind == "gtid-mismatch"


def test_base_whose_file_was_purged_before_archiving_is_not_covered() -> None:
    segments = five_minute_segments(11, 3, T0 + timedelta(minutes=3), seq0=110)
    chain = recovery_chain(base("binlog.000010", 400, "0-1-105", T0), segments)
    assert chain.segments == []
    assert chain.gap is not None and chain.gap.kind == "base-not-covered"
    assert "binlog.000010" in chain.gap.message and "backup-mysql" in chain.gap.message
    assert chain.point_at == T0


def test_base_in_a_file_not_yet_archived_is_no_gap() -> None:
    segments = five_minute_segments(5, 3, T0 - timedelta(minutes=30), seq0=50)
    chain = recovery_chain(base("binlog.000010", 400, "0-1-105", T0), segments)
    assert chain.segments == [] and chain.gap is None and chain.point_at == T0


def test_reset_master_starts_a_new_sequence_that_old_bases_cannot_cross() -> None:
    old = five_minute_segments(10, 3, T0 - timedelta(minutes=2))
    reset_at = T0 + timedelta(minutes=20)
    new_seq = sequence_name(1, reset_at)
    new = [
        segment(1, 0, 5, reset_at, sequence=new_seq),
        segment(2, 5, 9, reset_at + timedelta(minutes=5), sequence=new_seq),
    ]
    old_base = base("binlog.000010", 400, "0-1-105", T0)
    chain = recovery_chain(old_base, old + new)
    assert [s.index for s in chain.segments] == [10, 11, 12]
    assert chain.gap is not None and chain.gap.kind == "new-sequence"
    assert new_seq in chain.gap.message
    # binlog.000001 of the new sequence holds a base taken after the reset, even though the
    # old sequence has no binlog.000001 and GTIDs restarted at 0-1-1.
    new_base = base("binlog.000001", 300, "0-1-2", reset_at + timedelta(minutes=1))
    new_chain = recovery_chain(new_base, old + new)
    assert [(s.sequence, s.index) for s in new_chain.segments] == [(new_seq, 1), (new_seq, 2)]
    assert new_chain.gap is None
    point = best_recovery_point("app", [old_base, new_base], old + new)
    assert point is not None and point.base.backup_id == new_base.backup_id


def test_same_file_name_in_an_older_sequence_is_not_mistaken_for_the_base_file() -> None:
    first_seq_start = T0 - timedelta(days=2)
    old_seq = sequence_name(1, first_seq_start)
    old = [
        segment(1, 0, 9, first_seq_start, sequence=old_seq),
        segment(2, 9, 20, first_seq_start + timedelta(hours=1), sequence=old_seq),
    ]
    # Reset at T0 - 10 min; the new binlog.000001 is not archived yet when the base is read.
    new_base = base("binlog.000001", 300, "0-1-3", T0)
    chain = recovery_chain(new_base, old)
    assert chain.segments == []
    assert chain.gap is None or chain.gap.kind != "missing-segment"


def test_base_without_binlog_position_says_enable_log_bin() -> None:
    plain = base("binlog.000001", 4, "", T0).model_copy(update={"binlog_file": None})
    chain = recovery_chain(plain, five_minute_segments(1, 2, T0))
    assert chain.gap is not None and chain.gap.kind == "no-binlog-position"
    assert "log_bin" in chain.gap.message and chain.point_at == T0


def test_gtid_text_helpers() -> None:
    state = parse_gtid_list("1-2-5, 0-1-12")
    assert format_gtid_list(state) == "0-1-12,1-2-5"
    assert gtid_covered(state, parse_gtid_list("0-1-12")) and not gtid_covered(
        state, parse_gtid_list("0-1-13")
    )
    with pytest.raises(ValueError, match="domain-server-seq"):
        parse_gtid_list("0-1")
    assert binlog_index("binlog.000042") == 42
    with pytest.raises(ValueError, match=r"binlog\.000042"):
        binlog_index("binlog")
    with pytest.raises(ValueError, match="server_id"):
        segment_prefix("app", "nope")


def test_listing_and_download_verify_and_fall_back(tmp_path: Path) -> None:
    east, west = (
        LocalFolderStore("east", tmp_path / "east"),
        LocalFolderStore("west", tmp_path / "west"),
    )
    raw = b"\xfebin" + bytes(range(256)) * 100
    segs = five_minute_segments(10, 2, T0 - timedelta(minutes=2))
    stored = [store_segment(store, s, raw) for s in segs for store in (east, west)][::2]
    # A data object without its manifest (a crashed run) is not a segment.
    east.write_bytes(f"{segment_prefix('app', SEQ)}binlog.000012.zst", b"partial")
    listing = scan_segments(east, "app")
    assert [s.file for s in listing.segments] == ["binlog.000010", "binlog.000011"]
    assert listing.uncommitted == [f"{segment_prefix('app', SEQ)}binlog.000012.zst"]
    assert parse_segment_manifest(stored[0].to_json()) == stored[0]

    path = download_segment(east, stored[0], tmp_path / "dl")
    assert path.read_bytes() == raw
    # Corrupt east's copy: the download refuses it, the fallback takes west's.
    key = stored[1].object_key
    east.write_bytes(key, zstandard.ZstdCompressor().compress(raw[:-1] + b"X"))
    with pytest.raises(BackupVerificationError, match="another region"):
        download_segment(east, stored[1], tmp_path / "dl2")
    assert not (tmp_path / "dl2" / "binlog.000011").exists()
    path, region = download_segment_any([east, west], stored[1], tmp_path / "dl3")
    assert region == "west" and path.read_bytes() == raw
    east.delete(key)
    with pytest.raises(BackupVerificationError, match="no region holds a good copy"):
        download_segment_any([east], stored[1], tmp_path / "dl4")


def test_newest_restorable_point_reads_bases_and_segments_from_a_store(tmp_path: Path) -> None:
    store = LocalFolderStore("east", tmp_path / "east")
    assert newest_restorable_point(store, "app") is None
    the_base = base("binlog.000010", 400, "0-1-105", T0)
    store.write_bytes(the_base.manifest_key, the_base.to_json())
    for seg in five_minute_segments(10, 3, T0 - timedelta(minutes=2)):
        store_segment(store, seg, b"\xfebin")
    assert len(list_segments(store, "app")) == 3
    point = newest_restorable_point(store, "app")
    assert point is not None and point.kind == "binlog" and point.gtid == "0-1-130"
    assert point.point_at == T0 - timedelta(minutes=2) + timedelta(minutes=14)
