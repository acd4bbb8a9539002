"""The MySQL/MariaDB connection block."""

from __future__ import annotations

from typing import Any, Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator


def option_file_quote(value: str) -> str:
    """A MySQL option-file value in double quotes: `#` would otherwise start a comment."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


class MySQLConnection(Block):
    """Where a MySQL or MariaDB server is and how to log in to it.

    Example:
        ```python
        from blocks import MySQLConnection
        conn = MySQLConnection.load("vibebench-prod")
        ```
    """

    _block_type_name = "VibeOps MySQL Connection"
    _block_type_slug = "vibeops-mysql-connection"
    _description = "Host, port and credentials of a MySQL/MariaDB server (password as a secret)."

    host: str = Field(default="127.0.0.1", description="Server host name or IP address.")
    port: int = Field(default=3306, ge=1, le=65535, description="Server TCP port.")
    user: str = Field(default="root", description="User to log in as.")
    password: SecretStr = Field(
        default=SecretStr(""), description="Password of that user (stored encrypted)."
    )
    database: str = Field(
        default="vibebench", description="Default database (the one backed up by default)."
    )
    ssl_ca: str | None = Field(
        default=None, description="Path to a CA bundle; when set, TLS is required."
    )
    connect_timeout_seconds: int = Field(
        default=10, ge=1, le=300, description="How long to wait for the TCP connect."
    )
    backup_engine: Literal["mysqldump", "mydumper", "physical"] = Field(
        default="mysqldump",
        description="Engine backup-mysql uses when its `engine` parameter is 'default': "
        "mysqldump (portable), mydumper (parallel logical), physical (mariadb-backup / "
        "xtrabackup; the worker must run on the database host).",
    )

    @field_validator("host")
    @classmethod
    def _host_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("host must not be empty; give a host name or IP address")
        return value.strip()

    def pymysql_kwargs(self, database: str | None = None) -> dict[str, Any]:
        """Keyword arguments for `pymysql.connect` (the only place the password is read)."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password.get_secret_value(),
            "connect_timeout": self.connect_timeout_seconds,
            "charset": "utf8mb4",
            "autocommit": True,
        }
        if database:
            kwargs["database"] = database
        if self.ssl_ca:
            kwargs["ssl"] = {"ca": self.ssl_ca}
        return kwargs

    def defaults_file_text(self) -> str:
        """Contents of a `--defaults-extra-file` for the MariaDB/MySQL command-line tools."""
        lines = [
            "[client]",
            f"host={self.host}",
            f"port={self.port}",
            f"user={self.user}",
            f"password={option_file_quote(self.password.get_secret_value())}",
            "protocol=TCP",
        ]
        if self.ssl_ca:
            lines += [f"ssl-ca={self.ssl_ca}", "ssl-verify-server-cert"]
        # Only the interactive client knows connect-timeout; mariadb-dump rejects it.
        lines += ["[mariadb-client]", f"connect-timeout={self.connect_timeout_seconds}"]
        return "\n".join(lines) + "\n"
