"""Line protocol parsing for the stand-in (escapes, quoted strings, typed fields, precision)."""

from __future__ import annotations

import time

FieldValue = float | int | bool | str
PRECISION_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}


class LineProtocolError(ValueError):
    """A line that InfluxDB would reject (the message names the line)."""


def _split(text: str, separator: str, quoted: bool = False) -> list[str]:
    """Split on unescaped `separator` (outside double quotes when `quoted`), keeping escapes."""
    parts, current, in_quotes, i = [], [], False, 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if quoted and char == '"':
            in_quotes = not in_quotes
        if char == separator and not in_quotes:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    if in_quotes:
        raise LineProtocolError("unterminated string field value")
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in ' ,="\\':
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _field_value(raw: str) -> FieldValue:
    if raw.startswith('"'):
        if len(raw) < 2 or not raw.endswith('"'):
            raise LineProtocolError(f"bad string field value {raw!r}")
        return _unescape(raw[1:-1])
    if raw in ("t", "T", "true", "True", "TRUE"):
        return True
    if raw in ("f", "F", "false", "False", "FALSE"):
        return False
    if raw.endswith("i"):
        return int(raw[:-1])
    if raw.endswith("u"):
        return int(raw[:-1])
    return float(raw)


def parse_line(
    line: str, precision: str, now_ns: int | None = None
) -> tuple[str, tuple[tuple[str, str], ...], dict[str, FieldValue], int]:
    """(measurement, sorted tags, fields, time in ns) of one line."""
    sections = _split(line, " ", quoted=True)
    sections = [s for s in sections if s != ""]
    if len(sections) not in (2, 3):
        raise LineProtocolError(f"unable to parse '{line[:200]}': expected 2 or 3 sections")
    series = _split(sections[0], ",")
    measurement = _unescape(series[0])
    if not measurement:
        raise LineProtocolError(f"unable to parse '{line[:200]}': missing measurement")
    tags = []
    for pair in series[1:]:
        key_value = _split(pair, "=")
        if len(key_value) != 2 or not key_value[0] or not key_value[1]:
            raise LineProtocolError(f"unable to parse '{line[:200]}': bad tag {pair!r}")
        tags.append((_unescape(key_value[0]), _unescape(key_value[1])))
    fields: dict[str, FieldValue] = {}
    for pair in _split(sections[1], ",", quoted=True):
        key_value = _split(pair, "=", quoted=True)
        if len(key_value) != 2 or not key_value[0]:
            raise LineProtocolError(f"unable to parse '{line[:200]}': bad field {pair!r}")
        try:
            fields[_unescape(key_value[0])] = _field_value(key_value[1])
        except ValueError as exc:
            raise LineProtocolError(f"unable to parse '{line[:200]}': {exc}") from exc
    if len(sections) == 3:
        try:
            stamp = int(sections[2]) * PRECISION_NS[precision]
        except ValueError as exc:
            raise LineProtocolError(f"unable to parse '{line[:200]}': bad timestamp") from exc
    else:
        stamp = now_ns if now_ns is not None else time.time_ns()
    return measurement, tuple(sorted(tags)), fields, stamp
