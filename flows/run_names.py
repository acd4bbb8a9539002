"""Flow-run names from the parameters, keeping a name the user typed in the run form."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

# Names nobody typed: the API's two random words ("smart-hedgehog") and the UI run form's
# pre-filled Greek letter and star ("chi793-chaya-f", "eta-brinda-cluster"). Anything else
# was typed by someone and is kept.
_GREEK = (
    "alpha|beta|gamma|delta|epsilon|zeta|eta|theta|iota|kappa|lambda|mu|nu|xi|omicron|pi|rho|"
    "sigma|tau|upsilon|phi|chi|psi|omega"
)
GENERATED_NAME = re.compile(rf"[a-z]+-[a-z]+|(?:{_GREEK})[0-9]*-[a-z]+(?:-[a-z]+)?")


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
