"""Flow-run names that also work for a run started without parameters (the UI's quick run)."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel


def named_by_source(prefix: str, model: type[BaseModel]) -> Callable[[], str]:
    """A `flow_run_name` callable: `<prefix>-<params.source>`, or the model's default source."""

    def run_name() -> str:
        from prefect.runtime import flow_run

        raw = flow_run.parameters.get("params")
        if isinstance(raw, BaseModel):
            source = getattr(raw, "source", "")
        else:
            source = (raw or {}).get("source", "")
        return f"{prefix}-{source or model.model_fields['source'].default}"

    return run_name
