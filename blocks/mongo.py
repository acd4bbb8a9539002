"""The MongoDB connection block."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator


class MongoConnection(Block):
    """Where a MongoDB server is and how to log in to it (SCRAM-SHA-256).

    Example:
        ```python
        from blocks import MongoConnection
        conn = MongoConnection.load("vibebench-mongo")
        with conn.client() as client:
            client.admin.command("ping")
        ```
    """

    _block_type_name = "VibeOps MongoDB Connection"
    _block_type_slug = "vibeops-mongodb-connection"
    _description = "Host, port and credentials of a MongoDB server (password as a secret)."

    host: str = Field(default="127.0.0.1", description="Server host name or IP address.")
    port: int = Field(default=27017, ge=1, le=65535, description="Server TCP port.")
    username: str = Field(default="", description="User to log in as; empty = no authentication.")
    password: SecretStr = Field(
        default=SecretStr(""), description="Password of that user (stored encrypted)."
    )
    auth_source: str = Field(default="admin", description="Database the user is defined in.")
    database: str = Field(
        default="vibebench", description="Default database (the one backed up by default)."
    )
    tls: bool = Field(default=False, description="Require TLS to the server.")
    tls_ca_file: str | None = Field(
        default=None, description="Path to a CA bundle for TLS; empty = the system's CAs."
    )
    connect_timeout_seconds: int = Field(
        default=10, ge=1, le=300, description="How long to wait for the TCP connect."
    )
    server_selection_timeout_seconds: int = Field(
        default=10, ge=1, le=300, description="How long to wait for a usable server."
    )

    @field_validator("host")
    @classmethod
    def _host_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("host must not be empty; give a host name or IP address")
        return value.strip()

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `pymongo.MongoClient` (the only place the password is read)."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "connectTimeoutMS": self.connect_timeout_seconds * 1000,
            "serverSelectionTimeoutMS": self.server_selection_timeout_seconds * 1000,
            "socketTimeoutMS": 600_000,
            "tls": self.tls,
            "directConnection": True,
            "appname": "vibeops",
        }
        if self.tls_ca_file:
            kwargs["tlsCAFile"] = self.tls_ca_file
        if self.username:
            kwargs |= {
                "username": self.username,
                "password": self.password.get_secret_value(),
                "authSource": self.auth_source,
                "authMechanism": "SCRAM-SHA-256",
            }
        return kwargs

    def client(self):  # type: ignore[no-untyped-def]
        """A new `pymongo.MongoClient`; use it as a context manager so it is closed."""
        from pymongo import MongoClient

        return MongoClient(**self.client_kwargs())
