"""Command-line options generated from a flow's pydantic parameter model.

The UI form and the CLI read the same model, so they cannot disagree: one option per field
(`--rto-target` for `rto_target`), its help from the field's description, its choices from a
`Literal`, its bounds from `ge`/`le`. Values are validated by the model itself, and a refusal
becomes a one-line usage error naming the option.
"""

from __future__ import annotations

import enum
import inspect
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo


def option_name(field_name: str) -> str:
    """`rto_target` -> `--rto-target`."""
    return "--" + field_name.replace("_", "-")


def _without_none(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without `None`, whether None was allowed)."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _bound(info: FieldInfo, name: str) -> Any:
    return next((getattr(m, name) for m in info.metadata if hasattr(m, name)), None)


@dataclass
class FieldOption:
    """One option: the field it fills, the kinds (models) that have it, how it is parsed."""

    field_name: str
    kinds: list[str] = field(default_factory=list)
    value_type: Any = str
    is_flag: bool = False
    multiple: bool = False
    json_value: bool = False
    minimum: Any = None
    maximum: Any = None
    help: str = ""

    @property
    def name(self) -> str:
        return option_name(self.field_name)

    def parameter(self, all_kinds: list[str]) -> inspect.Parameter:
        """A keyword parameter Typer turns into this option (default None = the model's)."""
        help_text = self.help
        if len(all_kinds) > 1 and len(self.kinds) < len(all_kinds):
            help_text += f" [--kind {'|'.join(self.kinds)}]"
        decl = f"{self.name}/--no-{self.name[2:]}" if self.is_flag else self.name
        bounds = (
            {"min": self.minimum, "max": self.maximum} if self.value_type in (int, float) else {}
        )
        annotation = list[self.value_type] if self.multiple else self.value_type  # type: ignore[name-defined]
        return inspect.Parameter(
            self.field_name,
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(None, decl, help=help_text, **bounds),
            annotation=Optional[annotation],  # noqa: UP045 (Typer reads typing.Optional)
        )


def _field_option(name: str, info: FieldInfo, kind: str) -> FieldOption:
    annotation, _ = _without_none(info.annotation)
    origin = typing.get_origin(annotation)
    default = info.get_default(call_default_factory=True)
    shown = "" if isinstance(default, list | dict) else f" (default: {_show(default)})"
    option = FieldOption(name, [kind], help=(info.description or "") + shown)
    if annotation is bool:
        option.is_flag, option.value_type = True, bool
    elif origin is Literal:
        values = [str(a) for a in typing.get_args(annotation)]
        option.value_type = enum.Enum(name, [(v, v) for v in values], type=str)  # type: ignore[misc]
    elif annotation in (int, float):
        option.value_type = annotation
        option.minimum, option.maximum = _bound(info, "ge"), _bound(info, "le")
    elif origin is list and typing.get_args(annotation) in ((str,), (int,)):
        option.multiple = True
        option.value_type = typing.get_args(annotation)[0]
        option.help += " (repeat the option for several)"
    elif annotation is str or _parsed_from_text(annotation):
        option.value_type = str
    else:  # nested models, dicts, lists of models: the same JSON the API takes
        option.json_value = True
        option.help += " (JSON)"
    return option


def _parsed_from_text(annotation: Any) -> bool:
    """Types pydantic parses from the text a person types (durations, times, numbers)."""
    from datetime import date, datetime, timedelta

    return annotation in (timedelta, datetime, date)


def _show(value: Any) -> str:
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return "''" if value == "" else str(value)


def model_options(models: dict[str, type[BaseModel]]) -> list[FieldOption]:
    """One option per field of the union of `models` (kind -> model), in field order."""
    options: dict[str, FieldOption] = {}
    for kind, model in models.items():
        for name, info in model.model_fields.items():
            if name in options:
                options[name].kinds.append(kind)
            else:
                options[name] = _field_option(name, info, kind)
    return list(options.values())


def build_params(
    model: type[BaseModel], kind: str, options: list[FieldOption], values: dict[str, Any]
) -> BaseModel:
    """The model filled with the options given on the command line (the rest: its defaults).

    Raises:
        typer.BadParameter: naming the option, for a value the model refuses, an option the
            chosen kind does not take, or JSON that does not parse.
    """
    data: dict[str, Any] = {}
    for option in options:
        value = values.get(option.field_name)
        if value is None or (option.multiple and not value):
            continue
        if kind not in option.kinds:
            raise typer.BadParameter(
                f"applies to --kind {'|'.join(option.kinds)} only", param_hint=f"'{option.name}'"
            )
        if isinstance(value, enum.Enum):
            value = value.value
        if option.json_value:
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise typer.BadParameter(
                    f"not JSON: {exc}", param_hint=f"'{option.name}'"
                ) from None
        data[option.field_name] = list(value) if option.multiple else value
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(part) for part in first["loc"]]
        hint = option_name(loc[0]) if loc else "parameters"
        where = f" (at {'.'.join(loc[1:])})" if len(loc) > 1 else ""
        given = f" {data.get(loc[0])!r}:" if loc and loc[0] in data else ""
        raise typer.BadParameter(
            f"{given} {first['msg']}{where}".strip(), param_hint=f"'{hint}'"
        ) from None
