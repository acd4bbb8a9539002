"""An in-memory InfluxDB 2 API stand-in, spoken to only by the real `influxdb-client`.

What it answers: /ping, /health, /api/v2/orgs, /api/v2/buckets (list by name, create with
retentionRules and description, get, delete), /api/v2/write (line protocol; precision
ns/us/ms/s; gzip), /api/v2/query (the Flux subset in flux.py, as annotated CSV, one table
per series) and /api/v2/delete (start, stop inclusive, predicate `_measurement="x"`). Token
auth with the real 401 body. What it lacks: the rest of Flux, retention enforcement, shards,
users and permissions (one all-access token), tasks, dashboards.
"""

from __future__ import annotations

import bisect
import csv
import gzip
import io
import json
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.influx_standin.flux import (
    FluxError,
    FluxQuery,
    format_time,
    parse_predicate,
    parse_query,
    parse_time,
)
from tests.influx_standin.lineprotocol import (
    PRECISION_NS,
    FieldValue,
    LineProtocolError,
    UInt,
    parse_line,
    split_lines,
)

Tags = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, Tags, str]
VERSION = "v2.7.11-standin"


class _Error(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _datatype(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, UInt):
        return "unsignedLong"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    return "string"


def _text(value: FieldValue) -> str:
    """A value as Flux's CSV encoder prints it (floats: Go's FormatFloat(v, 'f', -1, 64))."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = format(Decimal(repr(value)), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    return str(int(value)) if isinstance(value, int) else value


def _aggregate(fn: str, values: list[FieldValue]) -> FieldValue:
    if fn == "count":
        return len(values)
    if any(isinstance(v, bool | str) for v in values):
        kind = _datatype(values[0])
        raise _Error(
            400, "invalid", f"runtime error: unsupported input type for {fn} aggregate: {kind}"
        )
    numbers: list[float | int] = values  # type: ignore[assignment]
    if fn == "mean":
        return float(sum(numbers)) / len(numbers)
    if fn == "sum":
        return sum(numbers)
    return max(numbers) if fn == "max" else min(numbers)


class InfluxStandIn:
    """The server; `start()` binds 127.0.0.1:`port` in a thread, `stop()` shuts it down."""

    def __init__(self, port: int, token: str, org: str = "vibeops") -> None:
        self.port, self.token, self.org = port, token, org
        self.org_id = secrets.token_hex(8)
        self.buckets: dict[str, dict[str, Any]] = {}
        self.series: dict[str, dict[SeriesKey, dict[int, FieldValue]]] = {}
        # (measurement, field) -> type per bucket: InfluxDB refuses a second type for a field
        self.field_types: dict[str, dict[tuple[str, str], str]] = {}
        self.lock = threading.RLock()
        self._sorted: dict[tuple[str, SeriesKey], list[int]] = {}
        self.requests: list[tuple[str, str]] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> InfluxStandIn:
        standin = self

        class Handler(_Handler):
            server_state = standin

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, name="influx-standin", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- state (every access under the lock) ---------------------------------------------------

    def bucket_by_name(self, name: str) -> dict[str, Any] | None:
        return next((b for b in self.buckets.values() if b["name"] == name), None)

    def create_bucket(
        self, name: str, rules: list[dict[str, Any]] | None = None, description: str | None = None
    ) -> dict[str, Any]:
        with self.lock:
            if self.bucket_by_name(name) is not None:
                raise _Error(422, "conflict", f"bucket with name {name} already exists")
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            bucket_id = secrets.token_hex(8)
            bucket = {
                "id": bucket_id,
                "orgID": self.org_id,
                "type": "user",
                "name": name,
                "retentionRules": rules or [{"type": "expire", "everySeconds": 0}],
                "createdAt": now,
                "updatedAt": now,
                "links": {
                    "self": f"/api/v2/buckets/{bucket_id}",
                    "org": f"/api/v2/orgs/{self.org_id}",
                },
                "labels": [],
            }
            if description is not None:
                bucket["description"] = description
            self.buckets[bucket_id] = bucket
            self.series[bucket_id] = defaultdict(dict)
            return bucket

    def points(self, bucket: str) -> int:
        """Field values held by `bucket` (tests)."""
        with self.lock:
            found = self.bucket_by_name(bucket)
            return 0 if found is None else sum(len(v) for v in self.series[found["id"]].values())

    def write(self, bucket_id: str, body: str, precision: str) -> None:
        now = time.time_ns()
        parsed = []
        for line in split_lines(body):
            try:
                parsed.append(parse_line(line, precision, now))
            except LineProtocolError as exc:
                raise _Error(400, "invalid", str(exc)) from exc
        with self.lock:
            store = self.series[bucket_id]
            types = self.field_types.setdefault(bucket_id, {})
            for measurement, _, fields, _ in parsed:
                for field, value in fields.items():
                    kind = types.setdefault((measurement, field), _datatype(value))
                    if kind != _datatype(value):
                        raise _Error(
                            422,
                            "unprocessable entity",
                            f"failure writing points to database: partial write: field type "
                            f'conflict: input field "{field}" on measurement "{measurement}" is '
                            f"type {_datatype(value)}, already exists as type {kind} dropped=1",
                        )
            for measurement, tags, fields, stamp in parsed:
                for field, value in fields.items():
                    store[(measurement, tags, field)][stamp] = value
                    self._sorted.pop((bucket_id, (measurement, tags, field)), None)

    def delete(self, bucket_id: str, start: int, stop: int, measurement: str | None) -> None:
        with self.lock:
            store = self.series[bucket_id]
            for key in list(store):
                if measurement is not None and key[0] != measurement:
                    continue
                values = store[key]
                for stamp in [t for t in values if start <= t <= stop]:
                    del values[stamp]
                self._sorted.pop((bucket_id, key), None)
                if not values:
                    del store[key]

    def query(self, query: FluxQuery) -> str:
        with self.lock:
            bucket = self.bucket_by_name(query.bucket)
            if bucket is None:
                raise _Error(
                    404,
                    "not found",
                    f'failed to initialize execute state: could not find bucket "{query.bucket}"',
                )
            selected = [
                (key, self._slice(bucket["id"], key, query.start_ns, query.stop_ns))
                for key in sorted(self.series[bucket["id"]])
                if query.measurement is None or key[0] == query.measurement
            ]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        table = 0
        for (measurement, tags, field), rows in selected:
            if query.every_ns is not None and rows:
                rows = self._windows(query, rows)
            if not rows:
                continue
            tag_keys = [k for k, _ in tags]
            extra = len(tag_keys)
            writer.writerow(["#datatype", "string", "long", *["dateTime:RFC3339"] * 3, _datatype(rows[0][1]),
                             "string", "string", *["string"] * extra])  # fmt: skip
            writer.writerow(["#group", "false", "false", "true", "true", "false", "false", "true", "true",
                             *["true"] * extra])  # fmt: skip
            writer.writerow(["#default", "_result", *[""] * (8 + extra)])
            writer.writerow(["", "result", "table", "_start", "_stop", "_time", "_value", "_field",
                             "_measurement", *tag_keys])  # fmt: skip
            start, stop = format_time(query.start_ns), format_time(query.stop_ns)
            tag_values = [v for _, v in tags]
            for stamp, value in rows:
                writer.writerow(["", "", table, start, stop, format_time(stamp), _text(value), field,
                                 measurement, *tag_values])  # fmt: skip
            writer.writerow([])
            table += 1
        return out.getvalue() or "\r\n"

    def _slice(
        self, bucket_id: str, key: SeriesKey, start: int, stop: int
    ) -> list[tuple[int, FieldValue]]:
        """(time, value) of one series with start <= time < stop (sorted times cached)."""
        values = self.series[bucket_id][key]
        cached = self._sorted.get((bucket_id, key))
        if cached is None or len(cached) != len(values):
            cached = self._sorted[(bucket_id, key)] = sorted(values)
        times = cached[bisect.bisect_left(cached, start) : bisect.bisect_left(cached, stop)]
        return [(t, values[t]) for t in times]

    @staticmethod
    def _windows(
        query: FluxQuery, rows: list[tuple[int, FieldValue]]
    ) -> list[tuple[int, FieldValue]]:
        assert query.every_ns is not None and query.fn is not None
        grouped: dict[int, list[FieldValue]] = defaultdict(list)
        for stamp, value in rows:
            grouped[stamp - stamp % query.every_ns].append(value)
        return [
            (
                max(start, query.start_ns)
                if query.time_src == "_start"
                else min(start + query.every_ns, query.stop_ns),
                _aggregate(query.fn, values),
            )
            for start, values in sorted(grouped.items())
        ]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: InfluxStandIn

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("X-Influxdb-Version", VERSION)
        self.send_header("X-Influxdb-Build", "OSS")
        if body or status != 204:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode())

    def _body(self) -> bytes:
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            data = gzip.decompress(data)
        return data

    def _dispatch(self, method: str) -> None:
        state = self.server_state
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        state.requests.append((method, url.path))
        try:
            body = self._body() if method in ("POST", "PUT", "PATCH") else b""
            if url.path == "/ping":
                return self._send(204)
            if url.path == "/health":
                return self._json(200, {"name": "influxdb", "message": "ready for queries and writes",
                                        "status": "pass", "checks": [], "version": VERSION,
                                        "commit": "standin"})  # fmt: skip
            if self.headers.get("Authorization") != f"Token {state.token}":
                raise _Error(401, "unauthorized", "unauthorized access")
            self._route(method, url.path, query, body)
        except _Error as exc:
            self._json(exc.status, {"code": exc.code, "message": exc.message})
        except FluxError as exc:
            self._json(400, {"code": "invalid", "message": f"compilation failed: {exc}"})
        except (ValueError, KeyError) as exc:
            self._json(400, {"code": "invalid", "message": f"invalid request: {exc}"})

    def _bucket_id(self, query: dict[str, str]) -> str:
        state = self.server_state
        with state.lock:
            if "bucketID" in query and query["bucketID"] in state.buckets:
                return query["bucketID"]
            name = query.get("bucket", "")
            found = state.bucket_by_name(name) or state.buckets.get(name)
        if found is None:
            raise _Error(404, "not found", f'bucket "{name}" not found')
        return str(found["id"])

    def _check_org(self, query: dict[str, str]) -> None:
        state = self.server_state
        org = query.get("org") or query.get("orgID")
        if org not in (state.org, state.org_id):
            raise _Error(404, "not found", f'organization name "{org}" not found')

    def _route(self, method: str, path: str, query: dict[str, str], body: bytes) -> None:
        state = self.server_state
        if path == "/api/v2/orgs" and method == "GET":
            wanted = query.get("org")
            orgs = (
                [] if wanted not in (None, state.org) else [{"id": state.org_id, "name": state.org}]
            )
            return self._json(200, {"links": {"self": "/api/v2/orgs"}, "orgs": orgs})
        if path == "/api/v2/buckets" and method == "GET":
            with state.lock:
                found = [
                    b for b in state.buckets.values() if query.get("name") in (None, b["name"])
                ]
            return self._json(200, {"links": {"self": "/api/v2/buckets"}, "buckets": found})
        if path == "/api/v2/buckets" and method == "POST":
            spec = json.loads(body)
            if spec.get("orgID") != state.org_id:
                raise _Error(404, "not found", "organization not found")
            bucket = state.create_bucket(
                spec["name"], spec.get("retentionRules"), spec.get("description")
            )
            return self._json(201, bucket)
        if path.startswith("/api/v2/buckets/"):
            bucket_id = path.rsplit("/", 1)[1]
            with state.lock:
                if bucket_id not in state.buckets:
                    raise _Error(404, "not found", "bucket not found")
                if method == "DELETE":
                    del state.buckets[bucket_id], state.series[bucket_id]
                    state.field_types.pop(bucket_id, None)
                    return self._send(204)
                return self._json(200, state.buckets[bucket_id])
        if path == "/api/v2/write" and method == "POST":
            self._check_org(query)
            precision = query.get("precision", "ns")
            if precision not in PRECISION_NS:
                raise _Error(
                    400, "invalid", f"invalid precision {precision!r}: use ns, us, ms or s"
                )
            state.write(self._bucket_id(query), body.decode(), precision)
            return self._send(204)
        if path == "/api/v2/query" and method == "POST":
            self._check_org(query)
            spec = json.loads(body)
            parsed = parse_query(spec.get("query", ""), time.time_ns())
            return self._send(200, state.query(parsed).encode(), "text/csv; charset=utf-8")
        if path == "/api/v2/delete" and method == "POST":
            self._check_org(query)
            spec = json.loads(body)
            start, stop = parse_time(spec["start"]), parse_time(spec["stop"])
            if stop < start:
                raise _Error(
                    400, "invalid", "invalid request; error parsing request json: stop before start"
                )
            state.delete(
                self._bucket_id(query), start, stop, parse_predicate(spec.get("predicate", ""))
            )
            return self._send(204)
        raise _Error(404, "not found", "path not found")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")


def iter_rows(csv_text: str) -> Iterator[list[str]]:
    """Rows of an annotated CSV answer (tests)."""
    yield from csv.reader(io.StringIO(csv_text))
