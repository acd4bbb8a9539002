"""Flow-run names from the parameters, keeping a name the user typed in the run form."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

# Prefect names runs it creates with two random words ("smart-hedgehog"); anything else was typed.
GENERATED_NAME = re.compile(r"[a-z]+-[a-z]+")


def keeps_typed_name(current: str | None) -> bool:
    """True when `current` is a name someone chose, not one Prefect generated."""
    return bool(current) and not GENERATED_NAME.fullmatch(current or "")


def run_name(template: str | Callable[[dict[str, Any]], str]) -> Callable[[], str]:
    """A `flow_run_name` callable: a typed run name, else `template` over the parameters.

    Args:
        template: A format string over the flow's parameters (`"backup-mysql-{source}"`), or a
            function of the parameters dict.
    """

    def name() -> str:
        from prefect.runtime import flow_run

        current = flow_run.get_name()
        if keeps_typed_name(current):
            return current  # type: ignore[return-value]
        parameters = dict(flow_run.get_parameters())
        return template(parameters) if callable(template) else template.format(**parameters)

    return name
