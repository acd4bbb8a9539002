"""Credentials for a local GCS API server (gcp-storage-emulator): anonymous, no google.auth.

prefect-gcp's GcpCredentials asks google.auth for default credentials as soon as it is
built, which fails on a machine without Google credentials. This subclass is what the
embedded defaults and the tests use; production uses plain GcpCredentials.
"""

from __future__ import annotations

from typing import Any

from google.auth.credentials import AnonymousCredentials
from prefect_gcp.credentials import GcpCredentials


class EmulatorGcpCredentials(GcpCredentials):
    """Anonymous credentials for a GCS API server named by STORAGE_EMULATOR_HOST.

    Example:
        ```python
        from blocks.gcs_emulator import EmulatorGcpCredentials
        creds = EmulatorGcpCredentials.load("local-gcs")
        ```
    """

    _block_type_name = "VibeOps GCS Emulator Credentials"
    _block_type_slug = "vibeops-gcs-emulator-credentials"
    _description = "Anonymous access to a local GCS API server (tests and laptops only)."
    _logo_url = None  # type: ignore[assignment]  # prefect-gcp's logo lives on the web

    def block_initialization(self) -> None:
        if self.project is None:  # type: ignore[has-type]  # (prefect-gcp's field)
            self.project = "vibeops-local"

    def get_credentials_from_service_account(self) -> Any:
        return AnonymousCredentials()  # type: ignore[no-untyped-call]

    def get_cloud_storage_client(self, project: str | None = None) -> Any:
        from google.cloud import storage

        return storage.Client(
            project=project or self.project,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        )
