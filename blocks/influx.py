"""The InfluxDB 2 connection block (InfluxDB Cloud or OSS 2.x)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

if TYPE_CHECKING:
    from influxdb_client import InfluxDBClient


class InfluxConnection(Block):
    """Where an InfluxDB 2 API is and the token to use it.

    Example:
        ```python
        from blocks import InfluxConnection
        conn = InfluxConnection.load("metrics-prod")
        ```
    """

    _block_type_name = "VibeOps InfluxDB Connection"
    _block_type_slug = "vibeops-influxdb-connection"
    _description = "URL, organization and API token of an InfluxDB 2 server (token as a secret)."

    url: str = Field(default="http://127.0.0.1:8086", description="Base URL of the InfluxDB 2 API.")
    org: str = Field(default="vibeops", description="Organization name (or id).")
    token: SecretStr = Field(
        default=SecretStr(""), description="API token with read/write on the buckets (encrypted)."
    )
    timeout_seconds: int = Field(
        default=30, ge=1, le=600, description="HTTP timeout of one API call."
    )
    verify_ssl: bool = Field(default=True, description="Verify the server's TLS certificate.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"url {value!r} must start with http:// or https://")
        return value

    def get_client(self) -> InfluxDBClient:
        """An `influxdb_client.InfluxDBClient` (the only place the token is read)."""
        from influxdb_client import InfluxDBClient

        return InfluxDBClient(
            url=self.url,
            token=self.token.get_secret_value(),
            org=self.org,
            timeout=self.timeout_seconds * 1000,
            verify_ssl=self.verify_ssl,
            enable_gzip=True,
            retries=False,
        )


def local_influx_connection() -> InfluxConnection:
    """The embedded default: VIBEOPS_INFLUX_URL / _ORG / _TOKEN, else 127.0.0.1:8086."""
    return InfluxConnection(
        url=os.environ.get("VIBEOPS_INFLUX_URL", "http://127.0.0.1:8086"),
        org=os.environ.get("VIBEOPS_INFLUX_ORG", "vibeops"),
        token=SecretStr(os.environ.get("VIBEOPS_INFLUX_TOKEN", "")),
    )


def resolve_influx(block_name: str | None) -> InfluxConnection:
    """The named InfluxConnection block, or the embedded default when the name is empty."""
    if not block_name:
        return local_influx_connection()
    from blocks.defaults import _load

    return _load(InfluxConnection, block_name, "influx_connection_block")  # type: ignore[return-value]
