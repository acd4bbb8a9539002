"""A small reader of MariaDB binary log event headers (pure: no I/O beyond a byte stream).

It reads only what archiving needs: the file's creation time and server id (its Format
description event), the GTID list at its start (its Gtid_list event), every transaction's
GTID and the event times. Row data is never decoded, so a file is read at disk speed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO

MAGIC = b"\xfebin"
HEADER = struct.Struct("<IBIIIH")  # timestamp, type, server_id, event_size, end position, flags
FORMAT_DESCRIPTION = 15
ROTATE = 4
STOP = 3
HEARTBEAT = 27
BINLOG_CHECKPOINT = 161
GTID = 162
GTID_LIST = 163
START_ENCRYPTION = 164
# Events that belong to the file, not to a transaction.
_FILE_EVENTS = {FORMAT_DESCRIPTION, ROTATE, STOP, HEARTBEAT, BINLOG_CHECKPOINT, GTID_LIST}

GtidState = dict[tuple[int, int], int]  # (domain, server_id) -> seq_no


class BinlogFormatError(ValueError):
    """The bytes are not a MariaDB binary log this reader understands."""


def parse_gtid_list(text: str) -> GtidState:
    """`"0-1-12,1-2-5"` -> {(0, 1): 12, (1, 2): 5}; "" -> {}.

    Raises:
        ValueError: naming the malformed entry.
    """
    state: GtidState = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        parts = item.split("-")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"GTID {item!r} is not of the form domain-server-seq (e.g. 0-1-42)")
        domain, server, seq = (int(p) for p in parts)
        state[(domain, server)] = seq
    return state


def format_gtid_list(state: GtidState) -> str:
    """The canonical text of a GTID state: entries sorted by (domain, server)."""
    return ",".join(f"{d}-{s}-{n}" for (d, s), n in sorted(state.items()))


def gtid_position(state: GtidState) -> GtidState:
    """The last GTID per domain (what `gtid_binlog_pos` shows) of a binlog state."""
    best: dict[int, tuple[int, int]] = {}
    for (domain, server), seq in state.items():
        if domain not in best or seq > best[domain][1]:
            best[domain] = (server, seq)
    return {(d, s): n for d, (s, n) in best.items()}


def gtid_covered(state: GtidState, gtid: GtidState) -> bool:
    """True when every domain's seq_no of `gtid` is at or below `state`'s for that domain."""
    reached = {d: n for (d, _), n in gtid_position(state).items()}
    return all(seq <= reached.get(domain, -1) for (domain, _), seq in gtid.items())


@dataclass
class BinlogSummary:
    """What one binary log file holds, as far as archiving and chaining care."""

    server_id: int = 0
    created_at: datetime | None = None
    server_version: str = ""
    gtid_list_start: GtidState = field(default_factory=dict)
    gtid_last: GtidState = field(default_factory=dict)
    first_event_at: datetime | None = None
    last_event_at: datetime | None = None
    transactions: int = 0
    end_position: int = 0
    closed: bool = False  # ends with a Rotate or Stop event
    # (end position, commit time, GTID state after it) of every transaction, in order.
    commits: list[tuple[int, datetime, str]] = field(default_factory=list)


def _events(stream: IO[bytes]) -> Iterator[tuple[int, int, int, int, bytes]]:
    """(timestamp, type, server_id, end position, body) of every whole event."""
    if stream.read(4) != MAGIC:
        raise BinlogFormatError("not a binary log: the file does not start with \\xfebin")
    position = 4
    while True:
        head = stream.read(HEADER.size)
        if not head:
            return
        if len(head) < HEADER.size:
            raise BinlogFormatError(f"event header cut short at position {position}")
        timestamp, kind, server_id, size, end, _flags = HEADER.unpack(head)
        if size < HEADER.size:
            raise BinlogFormatError(f"event at position {position} claims {size} bytes")
        body = stream.read(size - HEADER.size)
        if len(body) < size - HEADER.size:
            raise BinlogFormatError(f"event at position {position} cut short (file truncated)")
        position += size
        if end and end != position:
            raise BinlogFormatError(
                f"event ends at {position} but its header says {end}: not a whole binlog file"
            )
        yield timestamp, kind, server_id, position, body


def _utc(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


def read_binlog_summary(stream: IO[bytes]) -> BinlogSummary:
    """Summarise one raw binary log file read from `stream`.

    Raises:
        BinlogFormatError: not a (whole, unencrypted) MariaDB binary log.
    """
    summary = BinlogSummary()
    state: GtidState = {}
    in_txn = False
    txn_time = 0
    first = True

    def end_transaction(end: int) -> None:
        summary.commits.append((end, _utc(txn_time), format_gtid_list(state)))

    last_end = 4
    for timestamp, kind, server_id, end, body in _events(stream):
        if first:
            if kind != FORMAT_DESCRIPTION:
                raise BinlogFormatError("the first event is not a Format description event")
            summary.server_id = server_id
            summary.created_at = _utc(timestamp)
            summary.server_version = body[2:52].split(b"\0", 1)[0].decode(errors="replace")
            first = False
        elif kind == START_ENCRYPTION:
            raise BinlogFormatError("the binary log is encrypted; archive it unencrypted")
        elif kind == GTID_LIST:
            count = struct.unpack_from("<I", body, 0)[0] & 0x0FFFFFFF
            for i in range(count):
                domain, server, seq = struct.unpack_from("<IIQ", body, 4 + 16 * i)
                summary.gtid_list_start[(domain, server)] = seq
            state = dict(summary.gtid_list_start)
        elif kind == GTID:
            if in_txn:
                end_transaction(last_end)
            seq, domain = struct.unpack_from("<QI", body, 0)
            state[(domain, server_id)] = seq
            summary.transactions += 1
            in_txn, txn_time = True, timestamp
            summary.first_event_at = summary.first_event_at or _utc(timestamp)
        elif kind not in _FILE_EVENTS and in_txn:
            txn_time = max(txn_time, timestamp)
        if kind in (ROTATE, STOP):
            summary.closed = True
        if in_txn and kind not in _FILE_EVENTS:
            last_end = end
        summary.end_position = end
    if first:
        raise BinlogFormatError("empty binary log (no Format description event)")
    if in_txn:
        end_transaction(last_end)
    summary.gtid_last = state
    if summary.commits:
        summary.last_event_at = max(t for _, t, _ in summary.commits)
    return summary
