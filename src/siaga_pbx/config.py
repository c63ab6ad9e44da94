"""Service configuration: pydantic-settings from the environment and a file.

Sources, highest first: ``SIAGA_*`` environment variables (nested with ``__``,
e.g. ``SIAGA_ARI__PASSWORD``), then the TOML file named by ``SIAGA_CONFIG_FILE``
(or ``--config``), then the defaults below, which are the *lab* profile.

Outside the lab (``profile = "production"``) start-up refuses the lab's
well-known credentials, so a production centre never runs with them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from . import conference, core
from .people import PeopleSettings

LAB_ARI_PASSWORD = "siaga-lab-ari"  # noqa: S105 - the documented lab credential
LAB_API_TOKEN = "lab-admin-token"  # noqa: S105 - the documented lab credential


Role = Literal["admin", "supervisor", "taker", "ops"]
_ADMIN: Role = "admin"


# The file ``load()`` was asked for; a context variable rather than the process
# environment, so loading one file never leaks into the next load.
_config_file: ContextVar[str | None] = ContextVar("siaga_config_file", default=None)


# Every settings model refuses keys it does not know, at every level, so a
# misspelt ``ring_timout_s`` in a queue or ``pasword`` under ``[ari]`` is an
# error naming its path (in the TOML file, in SIAGA_* variables and in the API),
# never a silently ignored line.
_STRICT = ConfigDict(extra="forbid")

# A queue's or a taker's name: it appears in API paths (/api/queues/{name}).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ConfigError(Exception):
    """The configuration is invalid; the message says which setting and why."""


class AriSettings(BaseModel):
    model_config = _STRICT
    url: str = "http://127.0.0.1:8088"
    username: str = "siaga"
    password: str = LAB_ARI_PASSWORD
    app: str = "siaga-112"
    request_timeout_s: float = Field(5.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")


class HttpSettings(BaseModel):
    model_config = _STRICT
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # bearer token -> role (admin, supervisor, taker, ops)
    tokens: dict[str, Role] = Field(default_factory=lambda: {LAB_API_TOKEN: _ADMIN})


class OverflowSettings(BaseModel):
    model_config = _STRICT
    after_s: float | None = None
    queue: str = ""
    dial: str = ""
    when_no_takers: bool = True


class QueueSettings(BaseModel):
    model_config = _STRICT
    name: str = Field(pattern=NAME_PATTERN)
    strategy: core.Strategy = core.Strategy.LEASTRECENT
    ring_timeout_s: float = 15.0
    retry_delay_s: float = 1.0
    wrapup_s: float = 0.0
    max_misses: int = 3
    overflow: OverflowSettings = Field(default_factory=OverflowSettings)
    hold: core.HoldMode = core.HoldMode.RINGBACK
    music_class: str = "default"
    reassurance_every_s: float | None = 30.0
    announce_position: bool = False
    requeue_dropped_at_head: bool = True
    requeue_on_taker_hangup: bool = False
    normal_priority: int = 5
    repeat_caller_priority: int = 3
    repeat_window_s: float = 600.0
    priority_numbers: dict[str, int] = Field(default_factory=dict)

    def to_core(self) -> core.QueueConfig:
        return core.QueueConfig(
            name=self.name,
            strategy=self.strategy,
            ring_timeout_s=self.ring_timeout_s,
            retry_delay_s=self.retry_delay_s,
            wrapup_s=self.wrapup_s,
            max_misses=self.max_misses,
            overflow=core.Overflow(**self.overflow.model_dump()),
            priorities=core.PriorityRules(
                normal=self.normal_priority,
                repeat_caller=self.repeat_caller_priority,
                repeat_window_s=self.repeat_window_s,
                numbers=dict(self.priority_numbers),
            ),
            hold=self.hold,
            music_class=self.music_class,
            reassurance_every_s=self.reassurance_every_s,
            announce_position=self.announce_position,
            requeue_dropped_at_head=self.requeue_dropped_at_head,
            requeue_on_taker_hangup=self.requeue_on_taker_hangup,
        )


class TakerSettings(BaseModel):
    model_config = _STRICT
    id: str = Field(pattern=NAME_PATTERN)
    endpoint: str
    queues: list[str] = Field(default_factory=lambda: ["main"])
    logged_in: bool = True


def _lab_queues() -> list[QueueSettings]:
    return [
        QueueSettings(name="main", overflow=OverflowSettings(after_s=60.0, queue="backup")),
        QueueSettings(name="backup"),
    ]


def _lab_takers() -> list[TakerSettings]:
    return [
        TakerSettings(id=f"taker{n}", endpoint=f"PJSIP/taker{n}", queues=["main", "backup"])
        for n in (1, 2, 3)
    ]


class AgencySettings(BaseModel):
    """One OPD agency (siaga_pbx.conference.Agency); the database copy wins when reachable."""

    model_config = _STRICT

    code: str
    name: str
    endpoints: list[str] = Field(min_length=1)
    digit: int | None = Field(None, ge=1, le=9)
    strategy: conference.RingStrategy = conference.RingStrategy.RINGALL
    ring_timeout_s: float = Field(20.0, gt=0, le=300)
    fallback: str = ""
    role: conference.Role = conference.Role.TALK
    mass_incident: bool = False

    def to_core(self) -> conference.Agency:
        return conference.Agency(
            code=self.code,
            name=self.name,
            endpoints=tuple(self.endpoints),
            digit=self.digit,
            strategy=self.strategy,
            ring_timeout_s=self.ring_timeout_s,
            fallback=self.fallback,
            role=self.role,
            mass_incident=self.mass_incident,
        )


def _lab_agencies() -> list[AgencySettings]:
    """The lab's agencies, the same as migration 0004's seed."""
    return [
        AgencySettings(
            code="damkar",
            name="Damkar (pemadam kebakaran)",
            digit=1,
            endpoints=["PJSIP/disp-damkar"],
            fallback="polisi",
            mass_incident=True,
        ),
        AgencySettings(
            code="dinkes",
            name="Dinkes PSC 119 (ambulans)",
            digit=2,
            endpoints=["PJSIP/disp-dinkes"],
            fallback="damkar",
            mass_incident=True,
        ),
        AgencySettings(
            code="polisi",
            name="Polisi",
            digit=3,
            endpoints=["PJSIP/disp-polisi"],
            fallback="dinkes",
        ),
    ]


class HandsetSettings(BaseModel):
    """Handsets the service creates in Asterisk itself (adapters.handsets,
    docs/HANDSETS-PROVISIONING.md): every taker's or dispatcher's PJSIP endpoint
    with a password here. Endpoints without one are pjsip.conf's (the lab's).
    The other values are the site's, as in pjsip.conf's handset templates."""

    model_config = _STRICT

    # PJSIP endpoint id (``taker9`` for ``PJSIP/taker9``) -> digest password
    passwords: dict[str, SecretStr] = Field(default_factory=dict)
    transport: str = "transport-udp"
    media_address: str = "127.0.0.1"  # the profile's MEDIA_ADDR
    qualify_frequency_s: int = Field(30, ge=0)  # the profile's AOR_QUALIFY_FREQUENCY

    def password_map(self) -> dict[str, str]:
        return {k: v.get_secret_value() for k, v in self.passwords.items()}


class PromptSettings(BaseModel):
    """ARI media URIs per logical prompt; a recorded file overrides the
    generated Indonesian speech by pointing at it (e.g. ``sound:custom/greeting``)."""

    model_config = _STRICT

    language: str = "id"
    greeting: str = "sound:siaga/greeting"
    reassurance: str = "sound:siaga/reassurance"
    overflow: str = "sound:siaga/overflow"
    ringback: str = "tone:ring"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SIAGA_", env_nested_delimiter="__", extra="forbid"
    )

    profile: Literal["lab", "production"] = "lab"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # The service's event loop. On uvloop (libuv) the service spent about a
    # tenth less CPU per call in the benchmark than on the standard loop
    # (docs/PERFORMANCE.md); "asyncio" is there to compare.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    ari: AriSettings = Field(default_factory=AriSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    database_dsn: str = "postgresql://postgres@127.0.0.1:5432/siaga"
    state_dir: Path = Path("/var/lib/siaga-pbx")
    # Where Asterisk writes recordings, as seen from this host.
    recording_dir: Path = Path("/var/cache/siaga-pbx/asterisk-root/srv/siaga/lab/spool/recording")
    recording_retention_days: int = Field(365, ge=1)
    incident_retention_days: int = Field(730, ge=1)
    repeat_window_s: float = Field(600.0, gt=0)
    prompts: PromptSettings = Field(default_factory=PromptSettings)
    queues: list[QueueSettings] = Field(default_factory=_lab_queues)
    takers: list[TakerSettings] = Field(default_factory=_lab_takers)
    default_queue: str = "main"
    # OPD agencies for conferencing (issue 5): used when the database's
    # directory (table agencies) cannot be read, and until it has been.
    agencies: list[AgencySettings] = Field(default_factory=_lab_agencies)
    agencies_from_database: bool = True
    handsets: HandsetSettings = Field(default_factory=HandsetSettings)
    # How often to look for calls the dialplan fallback carried while we were
    # away (their recordings; see adapters.fallback).
    fallback_scan_s: float = Field(5.0, gt=0)
    # Named users, sessions, personal tokens, sign-in throttling (docs/PEOPLE.md).
    people: PeopleSettings = Field(default_factory=PeopleSettings)

    @model_validator(mode="after")
    def _no_lab_secrets_in_production(self) -> Settings:
        if self.profile == "production":
            if self.ari.password == LAB_ARI_PASSWORD:
                raise ValueError("ari.password is the lab default; set a real secret")
            if LAB_API_TOKEN in self.http.tokens:
                raise ValueError("http.tokens holds the lab admin token; remove it")
            if len(self.ari.password) < 12:
                raise ValueError("ari.password must be at least 12 characters")
            if self.people.seed_lab_users:
                raise ValueError("people.seed_lab_users: the lab users never exist in production")
            weak = sorted(k for k, v in self.handsets.passwords.items() if len(v) < 12)
            if weak:
                raise ValueError(f"handsets.passwords: under 12 characters for {weak}")
        # The core checks the rest (queue names, overflow targets, taker queues).
        self.centre()
        self.agency_directory()
        return self

    @property
    def outbox_path(self) -> Path:
        return self.state_dir / "outbox.sqlite3"

    @property
    def people_path(self) -> Path:
        return self.state_dir / "people.sqlite3"

    def centre(self) -> core.CentreConfig:
        return core.CentreConfig(
            queues=tuple(q.to_core() for q in self.queues),
            takers=tuple(
                core.TakerConfig(
                    taker_id=t.id,
                    endpoint=t.endpoint,
                    queues=tuple(t.queues),
                    logged_in=t.logged_in,
                )
                for t in self.takers
            ),
            default_queue=self.default_queue,
        )

    def agency_directory(self) -> conference.AgencyDirectory:
        return conference.AgencyDirectory(tuple(a.to_core() for a in self.agencies))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file.get() or os.environ.get("SIAGA_CONFIG_FILE")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


def unknown_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """``SIAGA_*`` variables that name no setting.

    A misspelt key *inside* a setting (``SIAGA_ARI__PASWORD``) is refused by
    the strict models; pydantic-settings reads only the variables it knows at
    the top level, so a misspelt top-level name (``SIAGA_DATABSE_DSN``) would
    pass unseen. The tools' own ``SIAGA_*`` variables share the prefix, so
    these are reported (logged at start-up), not refused."""
    env = os.environ if environ is None else environ
    known = {f"SIAGA_{name.upper()}" for name in Settings.model_fields} | {"SIAGA_CONFIG_FILE"}
    return sorted(
        k for k in env if k.upper().startswith("SIAGA_") and k.upper().split("__")[0] not in known
    )


def load(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Load settings, turning every problem into one readable ``ConfigError``."""
    named = config_file or (Path(p) if (p := os.environ.get("SIAGA_CONFIG_FILE")) else None)
    if named is not None and not named.is_file():
        raise ConfigError(f"config file {named} does not exist")
    token = _config_file.set(str(named) if named else None)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc']) or '(settings)'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
    except ValueError as exc:  # raised by the core's own checks
        raise ConfigError(f"invalid configuration: {exc}") from None
    finally:
        _config_file.reset(token)
