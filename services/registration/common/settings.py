"""Settings from environment variables (pydantic-settings); passwords only from secret files.

Every field names its variable exactly (``validation_alias``, matched case-sensitively): these are
the names the stack template sets. A marker in a field's type says where else it may come from:

* :data:`Password`: only from the file named by ``NAME_FILE``; a plain ``NAME`` is refused.
* :data:`UserName`: from the file named by ``NAME_FILE`` if that is set, else from ``NAME``.

Construct with :meth:`EnvSettings.from_env`, which turns pydantic's ValidationError into a
:class:`ConfigError` naming each bad variable and its value. Tests may also pass values to the
constructor by variable name (``RabbitSettings(RABBITMQ_PASSWORD=SecretStr("x"))``).
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Self

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticUseDefault
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from registration.common.secretfiles import read_secret, read_value_file


class ConfigError(ValueError):
    """An environment variable has an invalid value."""


class FromFile(enum.Enum):
    """Marks a field that may be read from the file named by its ``NAME_FILE`` variable."""

    SECRET = "secret"  # only from NAME_FILE; a plain NAME is refused
    VALUE_OR_FILE = "value_or_file"  # NAME_FILE if set, else NAME


def _blank_is_unset(value: object) -> object:
    """``NAME=`` means "the default" for numbers and flags (a string setting keeps the empty value)."""
    if value == "":
        raise PydanticUseDefault
    return value


def _blank_is_none(value: object) -> object:
    return None if value == "" else value


Int = Annotated[int, BeforeValidator(_blank_is_unset)]
OptionalInt = Annotated[int | None, BeforeValidator(_blank_is_unset)]
Float = Annotated[float, BeforeValidator(_blank_is_unset)]
Bool = Annotated[bool, BeforeValidator(_blank_is_unset)]
Password = Annotated[SecretStr, FromFile.SECRET]
OptionalPassword = Annotated[SecretStr | None, FromFile.SECRET]
UserName = Annotated[str, FromFile.VALUE_OR_FILE]
OptionalUserName = Annotated[str | None, FromFile.VALUE_OR_FILE, BeforeValidator(_blank_is_none)]


def variable_name(model: type[BaseSettings], field_name: str) -> str:
    """The environment variable of a settings field."""
    alias = model.model_fields[field_name].validation_alias
    if not isinstance(alias, str):
        raise TypeError(f"{model.__name__}.{field_name} must name its variable: Field(validation_alias=...)")
    return alias


class _FileSource(PydanticBaseSettingsSource):
    """Values of the fields marked :class:`FromFile`, read from the files their ``NAME_FILE`` name."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # Abstract in the base class but unused: __call__ reads each field itself.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field_name, field in self.settings_cls.model_fields.items():
            name = variable_name(self.settings_cls, field_name)
            if name in self.current_state:  # given to the constructor
                continue
            if FromFile.SECRET in field.metadata:
                # An entry even when None: it outranks the environment, so a plain NAME never fills it.
                values[name] = read_secret(name, required=field.is_required())
            elif FromFile.VALUE_OR_FILE in field.metadata and (value := read_value_file(name)) is not None:
                values[name] = value
        return values


def _describe(error: ErrorDetails) -> str:
    name = ".".join(str(part) for part in error["loc"])
    if not name:  # a rule across fields (a model validator): its message names the variables
        return error["msg"].removeprefix("Value error, ")
    return f"{name}={error['input']!r}: {error['msg']}"


class EnvSettings(BaseSettings):
    """Base of every settings model: exact variable names, immutable, passwords from files."""

    model_config = SettingsConfigDict(case_sensitive=True, frozen=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for field_name in cls.model_fields:
            variable_name(cls, field_name)  # fail at import, not at the first deployment

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest priority first. No .env file and no secrets_dir: Docker secrets come via NAME_FILE.
        return init_settings, _FileSource(settings_cls), env_settings

    @classmethod
    def from_env(cls) -> Self:
        """The settings from the environment; :class:`ConfigError` names each invalid variable and value."""
        try:
            return cls()
        except ValidationError as exc:
            raise ConfigError("; ".join(_describe(error) for error in exc.errors(include_url=False))) from None


class RabbitSettings(EnvSettings):
    host: str = Field("rabbitmq", validation_alias="RABBITMQ_HOST")
    port: Int = Field(5672, validation_alias="RABBITMQ_PORT")
    vhost: str = Field("/", validation_alias="RABBITMQ_VHOST")
    user: UserName = Field("registration", validation_alias="RABBITMQ_USER")
    password: Password = Field(validation_alias="RABBITMQ_PASSWORD")
    rpc_timeout: Float = Field(10.0, validation_alias="RPC_TIMEOUT")
    connect_timeout: Float = Field(0.0, validation_alias="RABBITMQ_CONNECT_TIMEOUT")
    # AMQP heartbeat (s): a broker whose node died sends no RST, and a client notices it only by the
    # heartbeats it stops receiving, after (heartbeat + 1) x 3 s (aiormq's grace). aiormq's default of
    # 60 s kept every RPC of a replica stuck for minutes on a dead connection; 4 s notices it within 15 s.
    heartbeat: Int = Field(4, validation_alias="RABBITMQ_HEARTBEAT")


class RedisSettings(EnvSettings):
    host: str = Field("redis", validation_alias="REDIS_HOST")
    port: Int = Field(6379, validation_alias="REDIS_PORT")
    db: Int = Field(0, validation_alias="REDIS_DB")
    password: OptionalPassword = Field(None, validation_alias="REDIS_PASSWORD")


class PostgresSettings(EnvSettings):
    host: str = Field("postgres", validation_alias="POSTGRES_HOST")
    port: Int = Field(5432, validation_alias="POSTGRES_PORT")
    dbname: str = Field("registration", validation_alias="POSTGRES_DB")
    user: UserName = Field("registration", validation_alias="POSTGRES_USER")
    password: Password = Field(validation_alias="POSTGRES_PASSWORD")
    connect_timeout: Int = Field(5, validation_alias="POSTGRES_CONNECT_TIMEOUT")


class SmtpSettings(EnvSettings):
    host: str = Field("smtp", validation_alias="SMTP_HOST")
    port: Int = Field(25, validation_alias="SMTP_PORT")
    starttls: Bool = Field(False, validation_alias="SMTP_STARTTLS")
    user: OptionalUserName = Field(None, validation_alias="SMTP_USER")
    password: OptionalPassword = Field(None, validation_alias="SMTP_PASSWORD")
    mail_from: str = Field("registration@example.org", validation_alias="MAIL_FROM")
    timeout: Float = Field(10.0, validation_alias="SMTP_TIMEOUT")

    @model_validator(mode="after")
    def _user_needs_password(self) -> Self:
        if self.user and self.password is None:
            raise ValueError("SMTP_USER is set but SMTP_PASSWORD_FILE is not")
        return self
