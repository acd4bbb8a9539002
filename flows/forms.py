"""Flow forms: a parameter model's fields become the flow's own top-level parameters.

`@form(Model)` sits under `@flow`. The flow's signature is then made of the model's fields
(`Annotated[type, FieldInfo]`, keyword-only), so the Prefect UI shows one typed field per
parameter, titled for people, instead of a "params (Optional)" object; the deployment's
parameter schema carries every bound and pattern, so the API refuses bad values before a run
exists. The body still receives one validated model instance.

Call a flow with keywords, or unpack a model: `backup_mysql(**params_of(BackupMySQLParams()))`.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from tasks.form_fields import DURATION_HELP, short_duration

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")

# Words that read wrong when only capitalised.
_WORDS = {
    "rto": "RTO",
    "rpo": "RPO",
    "id": "ID",
    "ids": "IDs",
    "db": "DB",
    "gcs": "GCS",
    "url": "URL",
    "uri": "URI",
    "sql": "SQL",
    "mysql": "MySQL",
    "mongodb": "MongoDB",
    "mongo": "MongoDB",
    "influx": "InfluxDB",
    "influxdb": "InfluxDB",
    "pk": "primary key",
}


def human_title(name: str) -> str:
    """`rto_target` -> "RTO target", `drill_server_block` -> "Drill server block"."""
    words = [_WORDS.get(w, w) for w in name.split("_") if w]
    if not words:
        return name
    first = words[0]
    words[0] = first if first != first.lower() else first[:1].upper() + first[1:]
    return " ".join(words)


def _shown(name: str, info: FieldInfo) -> FieldInfo:
    """What the form shows of a field: a human title, its description and examples."""
    title = info.title or human_title(name)
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    # Prefect titles each parameter with its name and drops the description; pydantic
    # applies json_schema_extra last, so the human title and the description win.
    shown: dict[str, Any] = {"title": title}
    description = info.description or ""
    if _is_duration(info) and DURATION_HELP not in description:
        description = f"{description} {DURATION_HELP}".strip()
    if description:
        shown["description"] = description
    if _is_duration(info) and isinstance(info.default, timedelta):
        shown["default"] = short_duration(info.default)
    if info.examples:
        shown["examples"] = info.examples
    return FieldInfo(
        title=title,
        description=description or None,
        examples=info.examples,
        json_schema_extra={**extra, **shown},
    )


def _is_duration(info: FieldInfo) -> bool:
    return info.annotation is timedelta or info.annotation == timedelta | None


def _annotation(name: str, info: FieldInfo) -> Any:
    """The field's type with its checks (bounds, patterns) and what the form shows."""
    return Annotated[(info.annotation, *info.metadata, _shown(name, info))]  # type: ignore[valid-type]


def _default(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    if info.default is PydanticUndefined:
        return inspect.Parameter.empty
    return info.default


def form_signature(model: type[BaseModel]) -> inspect.Signature:
    """The keyword-only signature made of `model`'s fields."""
    return inspect.Signature(
        [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=_default(info),
                annotation=_annotation(name, info),
            )
            for name, info in model.model_fields.items()
        ]
    )


def form(model: type[M]) -> Callable[[Callable[[M], R]], Callable[..., R]]:
    """Decorate a flow body `fn(params: Model)` so the flow takes the model's fields instead.

    Args:
        model: The flow's parameter model; its fields become keyword-only parameters.

    Returns:
        A decorator; put it between `@flow(...)` and the function.
    """

    def decorate(body: Callable[[M], R]) -> Callable[..., R]:
        def run(**values: Any) -> R:
            return body(model.model_validate(values))

        # Not functools.wraps: Prefect would then bind arguments by the body's signature.
        for attr in ("__module__", "__name__", "__qualname__"):
            setattr(run, attr, getattr(body, attr))

        run.__signature__ = form_signature(model)  # type: ignore[attr-defined]
        run.__annotations__ = {
            p.name: p.annotation
            for p in run.__signature__.parameters.values()  # type: ignore[attr-defined]
        }
        run.__doc__ = _strip_params_doc(body.__doc__ or "")
        run.form_model = model  # type: ignore[attr-defined]
        return run

    return decorate


def params_of(model: BaseModel) -> dict[str, Any]:
    """A model's field values as keyword arguments of its flow: `flow(**params_of(m))`."""
    return {name: getattr(model, name) for name in type(model).model_fields}


def _strip_params_doc(doc: str) -> str:
    """Drop an `Args:` entry for `params` (the form replaces it)."""
    return re.sub(r"\n\s*params:.*", "", doc)
