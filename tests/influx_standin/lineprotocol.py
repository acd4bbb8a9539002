"""Line protocol parsing for the stand-in, following InfluxDB 2's parser (models/points.go):

- lines end at a newline outside a quoted string field value (`scanLine`: a string value may
  hold a newline);
- scanning the measurement and tags, a character right after a backslash is escaped
  (`scanMeasurement`, `scanTagValue` look one character back); scanning fields and lines, a
  backslash takes the next character with it (`scanFields`, `scanLine`);
- unescaping is per element: measurement `\\,` `\\ `; tag keys and values `\\,` `\\ ` `\\=`;
  field keys `\\,` `\\ ` `\\=` `\\"`; string field values `\\\\` `\\"`. Any other backslash is
  literal (so `a\\\\b` in a tag stays two backslashes);
- field values: float (exponent forms too), `i` integers, `u` unsigned integers, booleans,
  double-quoted strings.
"""

from __future__ import annotations

import time

PRECISION_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
MEASUREMENT_ESCAPES = ", "
TAG_ESCAPES = ",= "
FIELD_KEY_ESCAPES = ',= "'
INT64 = (-(2**63), 2**63 - 1)
UINT64 = (0, 2**64 - 1)


class UInt(int):
    """An unsigned 64-bit field value (`1u`): not the same field type as `1i`."""

    def __repr__(self) -> str:
        return f"UInt({int(self)})"


FieldValue = float | int | UInt | bool | str


class LineProtocolError(ValueError):
    """A line that InfluxDB would reject (the message names the line)."""


def split_lines(body: str) -> list[str]:
    """The lines of a write body, as InfluxDB's scanLine cuts them."""
    lines, start, i = [], 0, 0
    fields = quoted = False
    equals = 0
    while i < len(body):
        char = body[i]
        if char == "\\":
            i += 2
            continue
        if char == " ":
            fields = True
        if fields:
            if not quoted and char == "=":
                equals += 1
                i += 1
                continue
            if char == '"' and equals > 0:
                quoted = not quoted
        if char == "\n" and not quoted:
            lines.append(body[start:i])
            start, fields, equals = i + 1, False, 0
        i += 1
    lines.append(body[start:])
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _scan_key(text: str, start: int, stops: str) -> int:
    """Index of the first character of `stops` not right after a backslash (measurement, tags)."""
    i = start
    while i < len(text):
        if text[i] in stops and (i == 0 or text[i - 1] != "\\"):
            return i
        i += 1
    return len(text)


def _scan(text: str, start: int, stops: str, quotes: bool = False) -> int:
    """Index of the first unescaped character of `stops` (outside a quoted value) from `start`."""
    i, quoted = start, False
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if quotes and char == '"' and i > 0 and (quoted or text[i - 1] == "="):
            quoted = not quoted
        elif char in stops and not quoted:
            return i
        i += 1
    if quoted:
        raise LineProtocolError("unterminated string field value")
    return len(text)


def _unescape(text: str, escapes: str) -> str:
    for char in escapes:
        text = text.replace("\\" + char, char)
    return text


def _string_value(raw: str) -> str:
    out, i = [], 0
    while i < len(raw):
        if raw[i] == "\\" and i + 1 < len(raw) and raw[i + 1] in '\\"':
            out.append(raw[i + 1])
            i += 2
        else:
            out.append(raw[i])
            i += 1
    return "".join(out)


def _field_value(raw: str) -> FieldValue:
    if raw.startswith('"'):
        if len(raw) < 2 or not raw.endswith('"'):
            raise LineProtocolError(f"bad string field value {raw[:80]!r}")
        return _string_value(raw[1:-1])
    if raw in ("t", "T", "true", "True", "TRUE"):
        return True
    if raw in ("f", "F", "false", "False", "FALSE"):
        return False
    if raw.endswith("i") or raw.endswith("u"):
        number = int(raw[:-1])
        low, high = INT64 if raw.endswith("i") else UINT64
        if not low <= number <= high:
            raise LineProtocolError(f"value out of range: {raw}")
        return number if raw.endswith("i") else UInt(number)
    value = float(raw)
    if value != value or value in (float("inf"), float("-inf")):
        raise LineProtocolError(f"invalid number {raw!r}")
    return value


def parse_line(
    line: str, precision: str, now_ns: int | None = None
) -> tuple[str, tuple[tuple[str, str], ...], dict[str, FieldValue], int]:
    """(measurement, sorted tags, fields, time in ns) of one line."""
    where = f"unable to parse '{line[:200]}'"
    key_end = _scan_key(line, 0, " ")
    key = line[:key_end]
    fields_start = key_end + 1
    fields_end = _scan(line, fields_start, " ", quotes=True)
    stamp_text = line[fields_end + 1 :].strip()
    measure_end = _scan_key(key, 0, ",")
    measurement = _unescape(key[:measure_end], MEASUREMENT_ESCAPES)
    if not measurement:
        raise LineProtocolError(f"{where}: missing measurement")
    tags = []
    cursor = measure_end
    while cursor < len(key):
        pair_end = _scan_key(key, cursor + 1, ",")
        pair = key[cursor + 1 : pair_end]
        equals = _scan_key(pair, 0, "=")
        if equals in (0, len(pair), len(pair) - 1):
            raise LineProtocolError(f"{where}: bad tag {pair[:80]!r}")
        tags.append(
            (_unescape(pair[:equals], TAG_ESCAPES), _unescape(pair[equals + 1 :], TAG_ESCAPES))
        )
        cursor = pair_end
    fields: dict[str, FieldValue] = {}
    section = line[fields_start:fields_end]
    cursor = -1
    while cursor < len(section):
        pair_end = _scan(section, cursor + 1, ",", quotes=True)
        pair = section[cursor + 1 : pair_end]
        equals = _scan(pair, 0, "=")
        if equals in (0, len(pair)):
            raise LineProtocolError(f"{where}: bad field {pair[:80]!r}")
        try:
            fields[_unescape(pair[:equals], FIELD_KEY_ESCAPES)] = _field_value(pair[equals + 1 :])
        except ValueError as exc:
            raise LineProtocolError(f"{where}: {exc}") from exc
        cursor = pair_end
    if not fields:
        raise LineProtocolError(f"{where}: missing fields")
    if stamp_text:
        try:
            stamp = int(stamp_text) * PRECISION_NS[precision]
        except ValueError as exc:
            raise LineProtocolError(f"{where}: bad timestamp") from exc
        if not -(2**63) + 2 <= stamp <= 2**63 - 2:
            raise LineProtocolError(f"{where}: timestamp out of range")
    else:
        stamp = now_ns if now_ns is not None else time.time_ns()
    return measurement, tuple(sorted(tags)), fields, stamp
