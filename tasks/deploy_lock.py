"""One deploy per app at a time: a Prefect global concurrency limit of 1 per namespace/app.

The limit (`deploy-staging-<namespace>-<app>`) is created on first use. A second deploy
of the same app waits up to `wait_seconds` for the slot and is then refused with
`DeployLockTimeout`; it never interleaves with the first. prefect.yaml also caps the
`deploy-staging/on-demand` deployment at one concurrent run.

Example:
    ```python
    from tasks.deploy_lock import deploy_lock

    with deploy_lock("staging", "vibebench-core", wait_seconds=600) as waited:
        ...  # patch, wait, smoke, switch
    ```
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from tasks.errors import DeployLockTimeout


def lock_name(namespace: str, app: str) -> str:
    return f"deploy-staging-{namespace}-{app}"


def ensure_limit(name: str, limit: int = 1) -> None:
    """Create the global concurrency limit `name` if it does not exist yet."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # a concurrent deploy created it
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=limit)
                )


@contextlib.contextmanager
def deploy_lock(namespace: str, app: str, wait_seconds: float) -> Iterator[float]:
    """Hold the app's deploy slot for the block; yields how long it waited (seconds).

    Raises:
        DeployLockTimeout: another deploy of this app held the slot for `wait_seconds`.
    """
    name = lock_name(namespace, app)
    ensure_limit(name)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(
                concurrency(name, occupy=1, timeout_seconds=wait_seconds, strict=True)
            )
        except TimeoutError:
            raise DeployLockTimeout(
                f"another deploy of {namespace}/{app} is running (concurrency limit {name!r}); "
                f"waited {wait_seconds:.0f} s: retry when it finished, or raise lock_wait"
            ) from None
        yield time.monotonic() - started
