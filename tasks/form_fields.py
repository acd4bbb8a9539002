"""Form field types whose checks the JSON schema also carries.

The Prefect API validates a deployment's run parameters against its JSON schema, so a rule
written here as a pattern, bound or `not` is refused before a run exists; the same rule is
checked again in Python (with a message naming the field and the fix) when the run starts.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

DURATION_EXAMPLES = ["30m", "1h", "1h30m", "90s", "2d"]
DURATION_HELP = "Type a duration such as 30m, 1h, 1h30m, 90s or 2d."
# What the form accepts: `30m`, `1h30m`, `2d` (ISO 8601 `PT30M` is still read in Python, for
# runs stored by older deployments, but the form asks for the short form).
DURATION_PATTERN = r"^([0-9]+[dhms])+$"
# A name MariaDB accepts (tasks.mysql.identifier_problem): 1-64 characters, no NUL, not
# ending with whitespace.
MARIADB_IDENTIFIER = r"^[^\x00]{0,63}[^\x00\s]$"
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_SHORT = re.compile(r"\s*([0-9]+)\s*([dhms])\s*")
_ISO = re.compile(
    r"P(?:(?P<d>[0-9]+)D)?(?:T(?:(?P<h>[0-9]+)H)?(?:(?P<m>[0-9]+)M)?(?:(?P<s>[0-9]+(?:\.[0-9]+)?)S)?)?"
)


def parse_duration(value: Any) -> Any:
    """`30m`, `1h30m`, `2d`, `PT30M` (or a timedelta) -> timedelta; anything else is left for
    pydantic to refuse. Negative durations cannot be typed."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if re.fullmatch(r"(\s*[0-9]+\s*[dhms]\s*)+", text):
        seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in _SHORT.findall(text))
        return timedelta(seconds=seconds)
    iso = _ISO.fullmatch(text)
    if iso and text not in ("P", "PT") and not text.endswith("T"):
        parts = {k: float(v) for k, v in iso.groupdict().items() if v}
        return timedelta(
            days=parts.get("d", 0),
            hours=parts.get("h", 0),
            minutes=parts.get("m", 0),
            seconds=parts.get("s", 0),
        )
    raise ValueError(f"{value!r} is not a duration. {DURATION_HELP}")


def short_duration(value: timedelta) -> str:
    """The shortest typeable form: 1800 s -> `30m`, 5400 s -> `1h30m`, 0 -> `0s`."""
    seconds = int(value.total_seconds())
    if seconds <= 0:
        return "0s"
    out = []
    for unit, size in _UNIT_SECONDS.items():
        count, seconds = divmod(seconds, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(short_duration, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": DURATION_EXAMPLES}),
]
"""A timedelta typed as `30m`, `1h`, `1h30m`, `90s` or `2d` (bounds: `Field(ge=..., le=...)`)."""


def not_one_of(names: list[str], prefixes: tuple[str, ...] = ()) -> dict[str, Any]:
    """JSON schema (`json_schema_extra`) refusing reserved names and prefixes."""
    refused: list[dict[str, Any]] = [{"enum": sorted(names)}]
    if prefixes:
        assert all(re.fullmatch(r"[a-z0-9-]+", p) for p in prefixes), "plain prefixes only"
        refused.append({"pattern": "^(" + "|".join(prefixes) + ")"})
    return {"not": {"anyOf": refused}}


def schema_pattern(regex: re.Pattern[str] | str) -> dict[str, Any]:
    """`json_schema_extra` that gives the API a Python regex (named groups dropped).

    The field's validator still checks the value in Python, with a message naming the fix.
    """
    text = regex if isinstance(regex, str) else regex.pattern
    return {"pattern": re.sub(r"\(\?P<\w+>", "(", text)}
