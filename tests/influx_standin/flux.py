"""The Flux subset the stand-in answers, parsed strictly (anything else is a 400).

from(bucket: "b")
  |> range(start: <RFC3339>, stop: <RFC3339>)
  |> filter(fn: (r) => r._measurement == "m")                          (optional)
  |> aggregateWindow(every: 1h, fn: mean|max|min|sum|count, createEmpty: false)  (optional)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

DURATION_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
    "w": 604_800_000_000_000,
}
STRING = r'"((?:[^"\\]|\\.)*)"'
TIME = r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2}))"
FROM = re.compile(rf"^from\(\s*bucket\s*:\s*{STRING}\s*\)$")
RANGE = re.compile(rf"^range\(\s*start\s*:\s*{TIME}\s*(?:,\s*stop\s*:\s*{TIME}\s*)?\)$")
FILTER = re.compile(
    rf"^filter\(\s*fn\s*:\s*\(\s*r\s*\)\s*=>\s*r\._measurement\s*==\s*{STRING}\s*\)$"
)
AGGREGATE = re.compile(
    r"^aggregateWindow\(\s*every\s*:\s*((?:\d+(?:ns|us|µs|ms|s|m|h|d|w))+)\s*,\s*"
    r"fn\s*:\s*(mean|max|min|sum|count)\s*,\s*"
    r"(?:timeSrc\s*:\s*\"(_start|_stop)\"\s*,\s*)?createEmpty\s*:\s*false\s*\)$"
)
DURATION_PART = re.compile(r"(\d+)(ns|us|µs|ms|s|m|h|d|w)")
PREDICATE = re.compile(rf"^\s*(?:_measurement\s*=\s*{STRING})?\s*$")


class FluxError(ValueError):
    """A query outside the supported subset (answered with 400 `invalid`)."""


@dataclass(frozen=True)
class FluxQuery:
    bucket: str
    start_ns: int
    stop_ns: int
    measurement: str | None = None
    every_ns: int | None = None
    fn: str | None = None
    time_src: str = "_stop"


def parse_time(text: str) -> int:
    """RFC3339 (nanosecond fraction allowed) to ns since the epoch."""
    match = re.match(r"^(.*?T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$", text)
    if not match:
        raise FluxError(f"invalid time {text!r}: use RFC3339, e.g. 2024-01-01T00:00:00Z")
    base, fraction, zone = match.groups()
    moment = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone)).astimezone(UTC)
    seconds = int((moment - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds())
    return seconds * 1_000_000_000 + int((fraction or "").ljust(9, "0"))


def format_time(ns: int) -> str:
    """ns since the epoch as RFC3339Nano (trailing zeros of the fraction trimmed, like Go)."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{fraction:09d}".rstrip("0") + "Z" if fraction else f"{text}Z"


def parse_duration(text: str) -> int:
    return sum(int(n) * DURATION_NS[unit] for n, unit in DURATION_PART.findall(text))


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def parse_query(text: str, now_ns: int) -> FluxQuery:
    """The query as data; FluxError names what is unsupported."""
    stages = [s.strip() for s in text.strip().split("|>")]
    if len(stages) < 2:
        raise FluxError("error @1:1: expected from(bucket: ...) |> range(start: ..., stop: ...)")
    first = FROM.match(stages[0])
    if not first:
        raise FluxError(f'unsupported source {stages[0][:80]!r}: expected from(bucket: "name")')
    window = RANGE.match(stages[1])
    if not window:
        raise FluxError(
            f"unsupported call {stages[1][:80]!r}: expected range(start: <RFC3339>, stop: <RFC3339>)"
        )
    start = parse_time(window.group(1))
    stop = parse_time(window.group(2)) if window.group(2) else now_ns
    measurement = every = fn = None
    time_src = "_stop"
    for stage in stages[2:]:
        if (match := FILTER.match(stage)) and measurement is None and every is None:
            measurement = _unquote(match.group(1))
        elif (match := AGGREGATE.match(stage)) and every is None:
            every, fn = parse_duration(match.group(1)), match.group(2)
            time_src = match.group(3) or "_stop"
        else:
            raise FluxError(f"unsupported call {stage[:80]!r} in this stand-in's Flux subset")
    if stop <= start:
        raise FluxError("cannot query an empty range: stop must be after start")
    return FluxQuery(_unquote(first.group(1)), start, stop, measurement, every, fn, time_src)


def parse_predicate(text: str) -> str | None:
    """The measurement a delete predicate names (None = every measurement)."""
    match = PREDICATE.match(text or "")
    if not match:
        raise FluxError(f'unsupported delete predicate {text!r}: use _measurement="name" or ""')
    return _unquote(match.group(1)) if match.group(1) is not None else None
