"""Every setting of the service, read once from environment variables.

One frozen object built at the CLI boundary and passed down; nothing else reads the
environment (faust is told to ignore it). pydantic-settings does the parsing and validation,
so a bad configuration lists every offending variable at once.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tradestats.core.partition import EmitMode
from tradestats.core.windows import WindowSpec

__all__ = ["ConfigError", "Settings", "load_settings"]

MIB = 1024 * 1024


class ConfigError(Exception):
    """The environment does not describe a valid configuration."""


class Settings(BaseSettings):
    """Environment variables (upper-case field names), with their defaults."""

    model_config = SettingsConfigDict(frozen=True, case_sensitive=False, extra="ignore")

    # Kafka connection
    kafka_bootstrap_servers: str = Field("localhost:9092", min_length=1)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_username_file: Path | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: Path | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_session_timeout_ms: int = Field(30_000, ge=6_000)
    kafka_delivery_timeout_ms: int = Field(300_000, ge=1_000)

    # Topics and identity
    app_id: str = Field("tradestats", pattern=r"^[A-Za-z0-9._-]+$")
    trades_topic: str = Field("trades", min_length=1)
    stats_topic: str = Field("trade-stats", min_length=1)
    dlq_topic: str = Field("trades-dlq", min_length=1)
    topic_partitions: int = Field(6, ge=1)
    topic_replication_factor: int = Field(1, ge=1)
    pod_name: str | None = None
    consumer_group_instance_id: str | None = None

    # Windows and emission
    window_size_ms: int = Field(5000, gt=0)
    window_advance_ms: int = Field(1000, gt=0)
    window_grace_ms: int = Field(0, ge=0)
    window_idle_close_ms: int = Field(10_000, gt=0)
    window_retention_ms: int = Field(5000, ge=0)
    emit_mode: EmitMode = EmitMode.FINAL
    commit_interval_ms: int = Field(1000, ge=10)

    # State
    data_dir: Path = Path("data")
    standby_replicas: int = Field(1, ge=0)
    changelog_segment_bytes: int = Field(8 * MIB, ge=MIB)
    rocksdb_block_cache_bytes: int = Field(16 * MIB, ge=MIB)
    rocksdb_write_buffer_bytes: int = Field(8 * MIB, ge=MIB)

    # Web server, logs
    web_host: str = Field(default_factory=socket.gethostname)
    web_port: int = Field(6066, ge=1, le=65535)
    web_bind: str = "0.0.0.0"
    canonical_url: str | None = None
    health_stall_ms: int = Field(60_000, ge=1000)
    metrics_price_tickers: int = Field(1000, ge=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        self.window_spec  # noqa: B018 - raises ValueError on an invalid combination
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD (or their _FILE variants) are "
                f"required with KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}"
            )
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise ValueError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together")
        return self

    @property
    def sasl_username(self) -> str | None:
        """From KAFKA_SASL_USERNAME, else the file KAFKA_SASL_USERNAME_FILE names."""
        return self.kafka_sasl_username or _read_secret(self.kafka_sasl_username_file)

    @property
    def sasl_password(self) -> str | None:
        """From KAFKA_SASL_PASSWORD, else the file KAFKA_SASL_PASSWORD_FILE names (a mounted
        Secret: files keep secrets out of the environment of every child process)."""
        if self.kafka_sasl_password:
            return self.kafka_sasl_password.get_secret_value()
        return _read_secret(self.kafka_sasl_password_file)

    @property
    def window_spec(self) -> WindowSpec:
        return WindowSpec(self.window_size_ms, self.window_advance_ms, self.window_grace_ms)

    @property
    def web_url(self) -> str:
        """The URL other replicas use to reach this one (interactive-query routing)."""
        return self.canonical_url or f"http://{self.web_host}:{self.web_port}"

    @property
    def group_instance_id(self) -> str | None:
        """Static membership id: explicit, else the pod name (stable in a StatefulSet)."""
        return self.consumer_group_instance_id or self.pod_name

    @property
    def table_dir(self) -> Path:
        return self.data_dir / "tables"


def _read_secret(path: Path | None) -> str | None:
    """The file's content without its trailing newline; None when unset or absent, so that
    an optional Secret mounted for SASL does not break a PLAINTEXT deployment."""
    if path is None or not path.is_file():
        return None
    return path.read_text().rstrip("\n") or None


def load_settings(**overrides: object) -> Settings:
    """Read the environment (and overrides), or raise ConfigError naming each bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            where = ", ".join(str(part).upper() for part in error["loc"]) or "configuration"
            lines.append(f"  {where}: {error['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
