"""The one module that talks to InfluxDB 2 (through `influxdb-client`, built by the block).

Backups are line protocol in nanoseconds, exported window by window (one Flux query per
window, so memory is bounded by one window's points). Every line holds one field value,
tags sorted: the same data always exports to the same bytes, so a restored bucket can be
proven identical by re-exporting it and comparing per-measurement sha256 digests.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from blocks.influx import InfluxConnection
from tasks.compression import ByteSource
from tasks.drill import DRILL_PREFIX, DrillMarker
from tasks.errors import (
    DatabaseAuthError,
    DatabaseNotFound,
    DatabaseUnreachable,
    ExternalCommandError,
    RestoreLoadError,
)
from tasks.manifest import MeasurementFacts

NS = 1_000_000_000
DAY_NS = 86_400 * NS
# InfluxDB stores times from 1677-09-21 to 2262-04-11 (int64 ns, the two extremes reserved). A
# backup covers all of it: points before 1970 and after the backup's start are data too. The
# upper bound is rounded down to a microsecond so that the manifest's datetime holds it exactly.
EARLIEST_NS = -9_223_372_036_854_775_806
LATEST_NS = 9_223_372_036_854_775_000
END_OF_TIME_NS = 9_223_372_036_854_775_807  # exclusive: InfluxDB's last storable time + 1
EPOCH = "1970-01-01T00:00:00Z"
ALL_TIME_EVERY = "100000d"  # one aggregate window spanning every stored point
SYSTEM_COLUMNS = {
    "",
    "result",
    "table",
    "_start",
    "_stop",
    "_time",
    "_value",
    "_field",
    "_measurement",
}


# -- pure: times, escaping, Flux ---------------------------------------------------------------


def to_ns(moment: datetime) -> int:
    """A timezone-aware datetime as ns since the epoch."""
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * NS + delta.microseconds * 1_000


def from_ns(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // NS, UTC).replace(microsecond=(ns % NS) // 1_000)


def rfc3339(ns: int) -> str:
    """ns since the epoch as RFC3339 with a nanosecond fraction when needed."""
    seconds, fraction = divmod(ns, NS)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{fraction:09d}Z" if fraction else f"{text}Z"


def parse_rfc3339(text: str) -> int:
    """RFC3339 (as Flux prints it, `Z`, up to 9 fraction digits) to ns since the epoch."""
    base, _, rest = text.rstrip("Z").partition(".")
    seconds = int(datetime.fromisoformat(base + "+00:00").timestamp())
    return seconds * NS + int(rest.ljust(9, "0")[:9] or 0)


def flux_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def flux_query(
    bucket: str,
    start_ns: int,
    stop_ns: int,
    measurement: str | None = None,
    every: str | None = None,
    fn: str = "mean",
    time_src: str | None = None,
) -> str:
    """`from |> range |> filter? |> aggregateWindow?` (start inclusive, stop exclusive)."""
    parts = [
        f"from(bucket: {flux_string(bucket)})",
        f"range(start: {rfc3339(start_ns)}, stop: {rfc3339(stop_ns)})",
    ]
    if measurement is not None:
        parts.append(f"filter(fn: (r) => r._measurement == {flux_string(measurement)})")
    if every is not None:
        source = f'timeSrc: "{time_src}", ' if time_src else ""
        parts.append(f"aggregateWindow(every: {every}, fn: {fn}, {source}createEmpty: false)")
    return " |> ".join(parts)


def duration_literal(seconds: int) -> str:
    """A Flux duration literal for whole seconds (`1h`, `1d`, `90s`)."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _escape(text: str, specials: str) -> str:
    for char in specials:
        text = text.replace(char, f"\\{char}")
    return text


def format_value(text: str, datatype: str) -> str:
    """One `_value` cell of annotated CSV as a line-protocol field value."""
    if datatype == "double":
        return repr(float(text))
    if datatype == "long":
        return f"{int(text)}i"
    if datatype == "unsignedLong":
        return f"{int(text)}u"
    if datatype == "boolean":
        return "true" if text == "true" else "false"
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_line(
    measurement: str, tags: Iterable[tuple[str, str]], field: str, value: str, ns: int
) -> str:
    """One line of line protocol (tags sorted by key, one field)."""
    series = _escape(measurement, ", ") + "".join(
        f",{_escape(k, ',= ')}={_escape(v, ',= ')}" for k, v in sorted(tags) if v != ""
    )
    return f"{series} {_escape(field, ',= ')}={value} {ns}"


@dataclass(frozen=True)
class Row:
    """One record of an annotated CSV answer."""

    measurement: str
    field: str
    time_ns: int
    value: str
    datatype: str
    tags: tuple[tuple[str, str], ...]

    @property
    def line(self) -> str:
        return format_line(
            self.measurement,
            self.tags,
            self.field,
            format_value(self.value, self.datatype),
            self.time_ns,
        )


def parse_annotated_csv(rows: Iterable[list[str]]) -> Iterator[Row]:
    """Records of an annotated CSV answer (several tables, each with its own annotations).

    Raises:
        ExternalCommandError: the answer carries a Flux error table.
    """
    datatypes: list[str] = []
    header: list[str] = []
    for row in rows:
        if not row or row == [""]:
            continue
        if row[0] == "#datatype":
            datatypes, header = row, []
            continue
        if row[0].startswith("#"):
            continue
        if not header:
            header = row
            if "error" in header:
                continue
            index = {name: i for i, name in enumerate(header)}
            tag_columns = [(name, i) for name, i in index.items() if name not in SYSTEM_COLUMNS]
            continue
        if "error" in header:
            raise ExternalCommandError(f"InfluxDB query failed: {row[header.index('error')]}")
        yield Row(
            measurement=row[index["_measurement"]],
            field=row[index["_field"]],
            time_ns=parse_rfc3339(row[index["_time"]]),
            value=row[index["_value"]],
            datatype=datatypes[index["_value"]] if datatypes else "string",
            tags=tuple((name, row[i]) for name, i in tag_columns if row[i] != ""),
        )


# -- pure: the drill's marker in a scratch bucket's description -------------------------------

DRILL_MARKER = "vibeops-drill "  # a scratch bucket's description starts with this, then JSON


def drill_bucket_description(marker: DrillMarker) -> str:
    """The description a drill gives the scratch bucket it creates (its durable marker)."""
    facts = {
        "drill_run": marker.drill_run,
        "source": marker.source,
        "backup_id": marker.backup_id,
        "created_at": marker.created_at.astimezone(UTC).isoformat(),
    }
    return DRILL_MARKER + json.dumps(facts, sort_keys=True)


def parse_drill_bucket_description(description: str | None) -> DrillMarker | None:
    """The marker in a bucket's description; None when it is not a drill's (or unreadable)."""
    if not description or not description.startswith(DRILL_MARKER):
        return None
    try:
        facts = json.loads(description[len(DRILL_MARKER) :])
        created = datetime.fromisoformat(facts["created_at"])
    except (ValueError, TypeError, KeyError):
        return None
    return DrillMarker(
        drill_run=str(facts.get("drill_run", "?")),
        source=str(facts.get("source", "")),
        backup_id=str(facts.get("backup_id", "")),
        created_at=created if created.tzinfo else created.replace(tzinfo=UTC),
    )


# -- the client, with errors mapped to the project's --------------------------------------------


def _map_error(conn: InfluxConnection, exc: Exception, what: str, bucket: str | None) -> Exception:
    from influxdb_client.client.exceptions import InfluxDBError
    from influxdb_client.rest import ApiException

    status = getattr(exc, "status", None)
    if isinstance(exc, ApiException | InfluxDBError) and status in (401, 403):
        return DatabaseAuthError(
            f"InfluxDB at {conn.url} refused the token while trying to {what} (HTTP {status}): fix "
            "the InfluxConnection block's `token` (it needs read/write on the bucket)"
        )
    if isinstance(exc, ApiException | InfluxDBError) and status == 404 and bucket is not None:
        return DatabaseNotFound(
            f"bucket {bucket!r} does not exist in org {conn.org!r} on {conn.url} (while trying to "
            f"{what}): check the `bucket` parameter or the block's `org`"
        )
    if isinstance(exc, ApiException | InfluxDBError):
        body = getattr(exc, "body", None) or getattr(exc, "message", None) or str(exc)
        return ExternalCommandError(
            f"InfluxDB at {conn.url} failed to {what} (HTTP {status}): {str(body)[:300]}"
        )
    return DatabaseUnreachable(
        f"cannot reach InfluxDB at {conn.url} to {what}: {type(exc).__name__}: {str(exc)[:200]}; "
        "check the InfluxConnection block's `url` and that the server is up"
    )


@contextlib.contextmanager
def influx_errors(conn: InfluxConnection, what: str, bucket: str | None = None) -> Iterator[None]:
    """Re-raise client and transport errors as typed errors naming the block field to fix."""
    import urllib3
    from influxdb_client.client.exceptions import InfluxDBError
    from influxdb_client.rest import ApiException

    try:
        yield
    except (ApiException, InfluxDBError, urllib3.exceptions.HTTPError, OSError) as exc:
        raise _map_error(conn, exc, what, bucket) from None


class InfluxSession:
    """One client for a run; every call maps errors (`with InfluxSession(conn) as s:`)."""

    def __init__(self, conn: InfluxConnection) -> None:
        self.conn = conn
        self.client = conn.get_client()

    def __enter__(self) -> InfluxSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def server_version(self) -> str:
        with influx_errors(self.conn, "check its health"):
            health = self.client.health()
        if health.status != "pass":
            raise DatabaseUnreachable(
                f"cannot reach InfluxDB at {self.conn.url} (health: {health.message}); check the "
                "InfluxConnection block's `url` and that the server is up"
            )
        return str(health.version or "")

    def bucket_exists(self, bucket: str) -> bool:
        with influx_errors(self.conn, f"look up bucket {bucket!r}"):
            return self.client.buckets_api().find_bucket_by_name(bucket) is not None

    def require_bucket(self, bucket: str) -> None:
        if not self.bucket_exists(bucket):
            raise DatabaseNotFound(
                f"bucket {bucket!r} does not exist in org {self.conn.org!r} on {self.conn.url}: "
                "check the `bucket` parameter or the InfluxConnection block's `org`"
            )

    def create_bucket(self, bucket: str, description: str | None = None) -> None:
        with influx_errors(self.conn, f"create bucket {bucket!r}"):
            self.client.buckets_api().create_bucket(
                bucket_name=bucket, org=self.conn.org, description=description
            )

    def drill_markers(self) -> dict[str, DrillMarker | None]:
        """Every `drill_*` bucket with the marker in its description (None: not a drill's)."""
        with influx_errors(self.conn, "list buckets"):
            buckets = list(self.client.buckets_api().find_buckets_iter(org=self.conn.org))
        return {
            b.name: parse_drill_bucket_description(b.description)
            for b in sorted(buckets, key=lambda b: b.name)
            if b.name.startswith(DRILL_PREFIX)
        }

    def delete_drill_bucket(self, bucket: str, planned: DrillMarker) -> bool:
        """Delete a leftover drill bucket if its description still holds the planned marker
        (a drill that reused the name since is left alone); True when deleted."""
        with influx_errors(self.conn, f"delete bucket {bucket!r}"):
            api = self.client.buckets_api()
            found = api.find_bucket_by_name(bucket)
            if found is None:
                return False
            current = parse_drill_bucket_description(found.description)
            if current is None or (current.drill_run, current.created_at) != (
                planned.drill_run,
                planned.created_at,
            ):
                return False
            api.delete_bucket(found)
            return True

    def delete_bucket(self, bucket: str) -> bool:
        """Delete `bucket` if it exists; True when it did."""
        with influx_errors(self.conn, f"delete bucket {bucket!r}"):
            api = self.client.buckets_api()
            found = api.find_bucket_by_name(bucket)
            if found is None:
                return False
            api.delete_bucket(found)
            return True

    def rows(self, query: str, bucket: str) -> Iterator[Row]:
        """Records of a Flux query (streamed from the HTTP answer)."""
        with influx_errors(self.conn, f"query bucket {bucket!r}", bucket):
            yield from parse_annotated_csv(
                self.client.query_api().query_csv(query, org=self.conn.org)
            )

    def write_lines(self, bucket: str, lines: list[str]) -> None:
        """Write lines of line protocol (ns) into `bucket`; a rejected batch is RestoreLoadError."""
        from influxdb_client import WritePrecision
        from influxdb_client.client.write_api import SYNCHRONOUS
        from influxdb_client.rest import ApiException

        with influx_errors(self.conn, f"write to bucket {bucket!r}", bucket):
            try:
                self.client.write_api(write_options=SYNCHRONOUS).write(
                    bucket=bucket,
                    org=self.conn.org,
                    record="\n".join(lines),
                    write_precision=WritePrecision.NS,  # type: ignore[arg-type]  # a str constant
                )
            except ApiException as exc:
                if exc.status not in (400, 422):  # malformed lines; a field type conflict
                    raise
                raise RestoreLoadError(
                    f"InfluxDB rejected line protocol written to {bucket!r}: {str(exc.body)[:300]}"
                ) from None

    def delete_range(
        self, bucket: str, start_ns: int, stop_ns: int, measurement: str | None
    ) -> None:
        """Delete points with start <= time < stop (the API's stop is inclusive: stop - 1 ns)."""
        predicate = "" if measurement is None else f"_measurement={flux_string(measurement)}"
        with influx_errors(self.conn, f"delete from bucket {bucket!r}", bucket):
            self.client.delete_api().delete(
                rfc3339(start_ns), rfc3339(stop_ns - 1), predicate, bucket=bucket, org=self.conn.org
            )

    def count_points(
        self,
        bucket: str,
        start_ns: int,
        stop_ns: int,
        measurement: str | None = None,
        every: str = ALL_TIME_EVERY,
    ) -> dict[int, dict[str, int]]:
        """Field values per aggregate window (its stop, in ns) and measurement."""
        counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        query = flux_query(bucket, start_ns, stop_ns, measurement, every, "count")
        for row in self.rows(query, bucket):
            counts[row.time_ns][row.measurement] += int(row.value)
        return {k: dict(v) for k, v in counts.items()}

    def first_day_ns(self, bucket: str, stop_ns: int, measurement: str | None = None) -> int | None:
        """Start of the first UTC day holding a point before `stop_ns` (None: no points)."""
        daily = self.count_points(bucket, EARLIEST_NS, stop_ns, measurement, every="1d")
        return min(((t - 1) // DAY_NS) * DAY_NS for t in daily) if daily else None

    def measurement_counts(
        self, bucket: str, start_ns: int, stop_ns: int, measurement: str | None = None
    ) -> dict[str, int]:
        """Field values per measurement with start <= time < stop."""
        totals: dict[str, int] = defaultdict(int)
        for per_measurement in self.count_points(bucket, start_ns, stop_ns, measurement).values():
            for name, count in per_measurement.items():
                totals[name] += count
        return dict(totals)


def read_influx_drill_markers(conn: InfluxConnection) -> dict[str, DrillMarker | None]:
    """Every `drill_*` bucket of the block's org with its drill marker (for cleanup-drills)."""
    with InfluxSession(conn) as session:
        return session.drill_markers()


def delete_drill_bucket(conn: InfluxConnection, bucket: str, planned: DrillMarker) -> bool:
    """Delete a leftover drill bucket still carrying `planned` (see InfluxSession)."""
    with InfluxSession(conn) as session:
        return session.delete_drill_bucket(bucket, planned)


# -- export / restore -------------------------------------------------------------------------


def windows(start_ns: int, stop_ns: int, step_ns: int) -> Iterator[tuple[int, int]]:
    """[start, stop) cut into step-aligned windows (the first and last may be partial)."""
    cursor = start_ns
    while cursor < stop_ns:
        upper = min(stop_ns, (cursor // step_ns + 1) * step_ns)
        yield cursor, upper
        cursor = upper


@dataclass
class Digests:
    """Per-measurement counts and sha256 over lines fed in (time, line) order."""

    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    hashers: dict[str, Any] = field(default_factory=dict)

    def add(self, measurement: str, line: str) -> None:
        self.counts[measurement] += 1
        hasher = self.hashers.setdefault(measurement, hashlib.sha256())
        hasher.update(line.encode() + b"\n")

    def facts(self) -> dict[str, MeasurementFacts]:
        return {
            name: MeasurementFacts(points=self.counts[name], sha256=self.hashers[name].hexdigest())
            for name in sorted(self.hashers)
        }


def export_lines(
    session: InfluxSession,
    bucket: str,
    start_ns: int,
    stop_ns: int,
    window_ns: int,
    digests: Digests,
    measurement: str | None = None,
) -> Iterator[bytes]:
    """The bucket's points as line protocol, one window at a time, sorted by (time, line).

    One count query first finds the windows holding points; only those are read.
    """
    counts = session.count_points(
        bucket, start_ns, stop_ns, measurement, every=duration_literal(window_ns // NS)
    )
    busy = sorted({((t - 1) // window_ns) * window_ns for t in counts})
    for lower, upper in ((max(b, start_ns), min(b + window_ns, stop_ns)) for b in busy):
        batch = sorted(
            (row.time_ns, row.measurement, row.line)
            for row in session.rows(flux_query(bucket, lower, upper, measurement), bucket)
        )
        if not batch:
            continue
        for _, name, line in batch:
            digests.add(name, line)
        yield "".join(f"{line}\n" for _, _, line in batch).encode()


# One whole line as InfluxDB's scanLine reads it: a backslash takes the next byte (a newline
# too); after the first space and the first `=`, a double-quoted string may hold newlines.
_WHOLE_LINE = re.compile(
    rb"(?:[^ \n\\]++|\\.)*+"  # measurement and tags
    rb"(?: (?:[^=\n\\]++|\\.)*+"  # the first field key
    rb'(?:=(?:[^"\n\\]++|\\.|"(?:[^"\\]++|\\.)*+")*+)?)?',  # values, quoted or not
    re.DOTALL,
)


def split_line_protocol(data: bytes) -> tuple[list[bytes], bytes]:
    """The complete lines of `data` and the unfinished rest. A newline inside a quoted string
    field value does not end a line (InfluxDB accepts such strings, and exports them as is)."""
    pieces = data.split(b"\n")
    lines: list[bytes] = []
    carry: bytes | None = None
    for piece in pieces[:-1]:
        line = piece if carry is None else carry + b"\n" + piece
        if (b'"' in line or line.endswith(b"\\")) and _WHOLE_LINE.fullmatch(line) is None:
            carry = line  # the newline was inside a string value
            continue
        lines.append(line)
        carry = None
    rest = pieces[-1] if carry is None else carry + b"\n" + pieces[-1]
    return lines, rest


def load_lines(
    session: InfluxSession,
    bucket: str,
    source: ByteSource,
    batch_lines: int = 5_000,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Write line protocol from `source` (decompressed) into `bucket` in batches; lines written."""
    batch: list[str] = []
    written = 0
    pending = b""
    while chunk := source.read(1 << 20):
        complete, pending = split_line_protocol(pending + chunk)
        for raw in complete:
            if raw:
                batch.append(raw.decode())
            if len(batch) >= batch_lines:
                session.write_lines(bucket, batch)
                written += len(batch)
                batch = []
                if on_batch is not None:
                    on_batch(written)
    if pending:
        batch.append(pending.decode())
    if batch:
        session.write_lines(bucket, batch)
        written += len(batch)
    return written


def digest_bucket(
    session: InfluxSession, bucket: str, start_ns: int, stop_ns: int, window_ns: int
) -> dict[str, MeasurementFacts]:
    """Per-measurement counts and digests of a bucket, computed exactly as a backup does."""
    digests = Digests()
    for _ in export_lines(session, bucket, start_ns, stop_ns, window_ns, digests):
        pass
    return digests.facts()


def downsample_range(
    session: InfluxSession,
    source: str,
    target: str,
    stop_ns: int,
    every_seconds: int,
    measurement: str | None = None,
    fn: str = "mean",
) -> int:
    """Aggregate `source` points before `stop_ns` into `target`, a week of windows per query.

    Windows are epoch-aligned and stamped at their start; with `stop_ns` aligned to the
    window, re-running writes the same points. Returns the aggregated values written.
    """
    first = session.first_day_ns(source, stop_ns, measurement)
    if first is None:
        return 0
    every_ns = every_seconds * NS
    chunk_ns = every_ns * max(1, (7 * DAY_NS) // every_ns)
    written = 0
    every = duration_literal(every_seconds)
    for lower, upper in windows(first - first % chunk_ns, stop_ns, chunk_ns):
        query = flux_query(source, lower, upper, measurement, every, fn, time_src="_start")
        lines = [row.line for row in session.rows(query, source)]
        for start in range(0, len(lines), 5_000):
            session.write_lines(target, lines[start : start + 5_000])
        written += len(lines)
    return written
