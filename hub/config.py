"""Hub settings: `HUB_` environment variables over an optional YAML file (the environment wins).

Nested groups use a double underscore in the environment, e.g. ``HUB_INGEST__BATCH_ROWS=2000``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from hub.errors import ConfigError
from hub.yamlfile import LocatedYaml, format_loc, load_yaml


class IngestSettings(BaseModel):
    """Batching and validation limits of the ingest path."""

    batch_rows: int = Field(20_000, ge=1, description="flush a batch at this many readings")
    batch_ms: int = Field(200, ge=1, description="flush a batch at least this often")
    queue_messages: int = Field(50_000, ge=100, description="bound of the in-memory queue")
    max_payload_bytes: int = Field(256 * 1024, ge=1024)
    max_future_s: float = Field(300.0, ge=0, description="reject timestamps further ahead")
    max_age_s: float = Field(30 * 86400.0, ge=60, description="reject timestamps older than this")
    offline_sweep_s: float = Field(10.0, gt=0, description="how often silent devices are checked")


class DispatchSettings(BaseModel):
    """Work-order dispatch (docs/workorders.md): policy file, sweep and delivery cadence."""

    enabled: bool = True
    policy: Path | None = Field(None, description="dispatch policy YAML; default: the packaged one")
    sweep_s: float = Field(5.0, gt=0, description="how often SLA clocks and missed alarms are checked")
    planned_every_s: float = Field(600.0, gt=0, description="how often planned maintenance is generated")
    publish_timeout_s: float = Field(5.0, gt=0, description="wait this long for a notification's PUBACK")
    max_backoff_s: float = Field(300.0, gt=0, description="longest wait between delivery attempts")


class ApiSettings(BaseModel):
    """Token lifetimes, command timing and safety limits of the HTTP API (docs/api.md)."""

    access_ttl_s: int = Field(900, ge=1, description="lifetime of an access JWT")
    refresh_ttl_s: int = Field(14 * 86400, ge=60, description="lifetime of a refresh token")
    command_expiry_s: float = Field(60.0, gt=0, le=3600, description="default time a command may take to reach the device")
    command_retry_s: float = Field(5.0, gt=0, description="resend a sent command this often until a reply or expiry")
    command_complete_s: float = Field(60.0, gt=0, description="time from accepted to a final reply")
    commands_per_minute: int = Field(30, ge=1, description="per user, all devices")
    device_commands_per_minute: int = Field(6, ge=1, description="per user and device")
    lease_s: float = Field(300.0, gt=0, description="exclusive control lease taken by a command")


_INTERVAL = r"^[1-9][0-9]{0,4} (minute|hour|day|week|month)s?$"


class TimescaleSettings(BaseModel):
    """Policies applied when the TimescaleDB extension is present (`auto`: use it if it loads)."""

    mode: str = Field("auto", pattern=r"^(auto|on|off)$")
    chunk_interval: str = Field("1 day", pattern=_INTERVAL)
    compress_after: str = Field("7 days", pattern=_INTERVAL)
    retention: str = Field("90 days", pattern=_INTERVAL)


class MqttUrl(BaseModel, frozen=True):
    host: str
    port: int
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False


class Settings(BaseSettings):
    """Everything the hub reads from its environment or config file."""

    model_config = SettingsConfigDict(
        env_prefix="HUB_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    database_url: SecretStr | None = Field(
        None, description="postgresql://… ; unset means `hub demo` starts an embedded server"
    )
    mqtt_url: SecretStr = Field(SecretStr("mqtt://127.0.0.1:1883"))
    mqtt_client_id: str = Field("hub-ingest", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    mqtt_shared_group: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]+$", description="subscribe via $share/<group>/… to scale out"
    )
    registry: Path | None = None
    rules: Path | None = None
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=0, le=65535)
    api_enabled: bool = True
    secret_key: SecretStr | None = None
    metrics_token: SecretStr | None = Field(
        None, description="bearer token Prometheus (and `hub doctor`) send to read /metrics; unset: /metrics refuses"
    )
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    data_dir: Path = Path(".hub-data")
    ingest: IngestSettings = IngestSettings()
    api: ApiSettings = ApiSettings()
    timescale: TimescaleSettings = TimescaleSettings()
    dispatch: DispatchSettings = DispatchSettings()

    @field_validator("mqtt_url")
    @classmethod
    def _check_mqtt_url(cls, value: SecretStr) -> SecretStr:
        parse_mqtt_url(value.get_secret_value())
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            import psycopg

            try:
                psycopg.conninfo.conninfo_to_dict(value.get_secret_value())
            except psycopg.ProgrammingError:
                raise ValueError("must be a postgresql://user@host:port/dbname URL") from None
        return value

    @property
    def mqtt(self) -> MqttUrl:
        return parse_mqtt_url(self.mqtt_url.get_secret_value())

    @property
    def dsn(self) -> str:
        if self.database_url is None:
            raise ConfigError("HUB_DATABASE_URL is not set (only `hub demo` starts its own database)")
        return self.database_url.get_secret_value()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first so it wins over the YAML file, which arrives as init kwargs.
        return (env_settings, init_settings)


def parse_mqtt_url(url: str) -> MqttUrl:
    """`mqtt://user:pass@host:port` (or `mqtts://`) into its parts."""
    parts = urlsplit(url)
    if parts.scheme not in {"mqtt", "mqtts", "tcp"}:
        raise ValueError("must look like mqtt://user:pass@host:port")
    if not parts.hostname:
        raise ValueError("has no host")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError("has a bad port") from exc
    tls = parts.scheme == "mqtts"
    return MqttUrl(
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        username=unquote(parts.username) if parts.username else None,
        password=SecretStr(unquote(parts.password)) if parts.password else None,
        tls=tls,
    )


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings; errors name the YAML file and line, or the environment variable."""
    source: LocatedYaml | None = None
    data: dict[str, Any] = {}
    if config_file is not None:
        source = load_yaml(config_file)
        if source.data is None:
            source = LocatedYaml(config_file, {}, {})
        if not isinstance(source.data, dict):
            raise ConfigError(f"{config_file}:1: expected a mapping of settings at the top level")
        data = dict(source.data)
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise _settings_error(exc, source) from exc


def _settings_error(exc: ValidationError, source: LocatedYaml | None) -> ConfigError:
    import os

    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        env_name = "HUB_" + "__".join(str(p).upper() for p in loc)
        msg = err["msg"]
        if env_name in os.environ:
            problems.append(f"environment variable {env_name}: {msg}")
        elif source is not None and loc[:1] in source.lines:
            problems.append(f"{source.path}:{source.line_of(loc)}: {format_loc(loc)}: {msg}")
        else:
            problems.append(f"setting {format_loc(loc)} ({env_name}): {msg}")
    return ConfigError("\n".join(problems))
