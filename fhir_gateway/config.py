"""Configuration: one TOML file, environment variables over it, problems explained in plain words.

Precedence: defaults < TOML file (`--config` or `FHIR_GATEWAY_CONFIG`) < environment. Every
setting has an environment name `FHIR_GATEWAY_<SECTION>_<KEY>` (e.g.
`FHIR_GATEWAY_LIMITS_MAX_COUNT`); the common ones also have short names listed in `ENV_ALIASES`.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "FHIR_GATEWAY_"
_TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
ADAPTERS = ("embedded", "fhir_rest")
SECTIONS = ("server", "adapter", "embedded", "fhir_rest", "outbox", "database", "limits", "auth",
            "portal")


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    base_url: str = ""  # public URL of the FHIR base; default http://host:port/fhir
    workers: int = 1
    threads: int = 8
    timeout: int = 60
    fast_reads: bool = True  # GET reads and searches skip Flask's machinery (http/fastpath.py)


@dataclass
class AdapterConfig:
    kind: str = "embedded"


@dataclass
class EmbeddedConfig:
    database_url: str = ""  # default: sqlite file ehr.sqlite3 under the data dir


@dataclass
class FhirRestConfig:
    """The EHR behind `adapter.kind = "fhir_rest"` (see adapters.fhir_rest.settings)."""

    base_url: str = ""
    name: str = "ehr"
    vendor: str = "generic"  # generic, epic, oracle, hapi, medplum, fhir-gateway
    auth: str = "none"  # none, bearer, backend-services
    bearer_token: str = ""  # from the environment only (FHIR_GATEWAY_FHIR_REST_BEARER_TOKEN)
    bearer_token_file: str = ""
    client_id: str = ""
    token_url: str = ""
    private_key_file: str = ""  # PEM, RS384 or ES384
    key_id: str = ""
    scope: str = "system/*.rs"
    granted_scopes: str = ""
    allow: str = ""  # comma-separated Type.interaction overrides
    deny: str = ""
    connect_timeout: float = 3.0
    read_timeout: float = 20.0
    transport: str = "curl"  # the outbound wire: curl (libcurl via pycurl) or httpx
    ca_file: str = ""  # PEM bundle of the CAs trusted for the EHR's TLS; default certifi's
    retries: int = 2
    backoff: float = 0.2
    max_wait: float = 10.0
    breaker_failures: int = 5
    breaker_reset: float = 30.0
    cache_ttl: str = ""  # per type, "Patient=300,Observation=60"
    default_cache_ttl: int = 30
    stale_for: int = 86400
    capability_ttl: int = 3600


@dataclass
class OutboxConfig:
    """Writes the EHR could not take right away, replayed by the worker."""

    worker: bool = True  # replay in a background thread of each gateway process
    interval: float = 2.0  # seconds between replay rounds
    max_attempts: int = 50  # transient failures before an entry is given up (failed)
    keep_days: float = 30.0  # stored and dropped entries are purged after this; 0 keeps all


@dataclass
class DatabaseConfig:
    url: str = ""  # the gateway's own state; default: sqlite file gateway.sqlite3 under data dir


@dataclass
class LimitsConfig:
    max_body_bytes: int = 16 * 1024 * 1024
    max_json_depth: int = 64
    default_count: int = 50
    max_count: int = 1000
    max_bundle_entries: int = 5000


@dataclass
class AuthConfig:
    # SMART App Launch on every FHIR request. Turn off only for local experiments: with it off
    # anyone who can reach the port reads and writes everything.
    enabled: bool = True
    secret_key: str = ""  # signs browser sessions; default: a key file under the data dir
    # The access log is written behind the request, in one transaction per this many
    # milliseconds (0: every request waits for its own entry). A process killed outright
    # loses at most this window; a normal stop writes everything.
    audit_batch_ms: int = 10


@dataclass
class PortalConfig:
    """Clinic rules for the portal actions."""

    cancellation_window_hours: int = 24  # cancel or reschedule online until this long before
    hold_minutes: int = 10  # how long Appointment/$hold keeps a slot
    no_online_refill: str = "1049621"  # RxNorm codes (comma-separated): controlled substances
    max_attachment_bytes: int = 5 * 1024 * 1024
    attachment_types: str = "application/pdf,image/jpeg,image/png,text/plain"


@dataclass
class Config:
    data_dir: str = "var"
    server: ServerConfig = field(default_factory=ServerConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    embedded: EmbeddedConfig = field(default_factory=EmbeddedConfig)
    fhir_rest: FhirRestConfig = field(default_factory=FhirRestConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    portal: PortalConfig = field(default_factory=PortalConfig)
    redis_url: str = ""  # shared cache for the REST adapter; in process when empty
    # Several clinics in one gateway: name -> config file of that clinic, served at
    # /t/{name}/fhir with its own adapter, state and discovery document.
    tenants: dict[str, str] = field(default_factory=dict)
    source: str = "defaults"

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def ehr_database_url(self) -> str:
        return self.embedded.database_url or f"sqlite:///{self.data_path / 'ehr.sqlite3'}"

    @property
    def state_database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_path / 'gateway.sqlite3'}"

    @property
    def public_base(self) -> str:
        if self.server.base_url:
            return self.server.base_url.rstrip("/")
        return f"http://{self.server.host}:{self.server.port}/fhir"


# Short environment names, as documented in the README.
ENV_ALIASES: dict[str, tuple[str, str]] = {
    "FHIR_GATEWAY_HOST": ("server", "host"),
    "FHIR_GATEWAY_PORT": ("server", "port"),
    "FHIR_GATEWAY_BASE_URL": ("server", "base_url"),
    "FHIR_GATEWAY_WORKERS": ("server", "workers"),
    "FHIR_GATEWAY_THREADS": ("server", "threads"),
    "FHIR_GATEWAY_ADAPTER": ("adapter", "kind"),
    "FHIR_GATEWAY_EHR_DATABASE_URL": ("embedded", "database_url"),
    "DATABASE_URL": ("database", "url"),
    "FHIR_GATEWAY_DATA": ("", "data_dir"),
    "REDIS_URL": ("", "redis_url"),
}


class ConfigError(Exception):
    """The configuration cannot be used; `problems` says why, one plain sentence each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _coerce(section: str, key: str, value: Any, target: Any, problems: list[str]) -> Any:
    where = f"{section}.{key}" if section else key
    want = type(target)
    if want is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        problems.append(f"'{where}' must be true or false, not {value!r}.")
        return target
    if want in (int, float):
        try:
            if isinstance(value, bool):
                raise ValueError
            return want(value)
        except (TypeError, ValueError):
            kind = "a whole number" if want is int else "a number"
            problems.append(f"'{where}' must be {kind}, not {value!r}.")
            return target
    if want is str:
        if not isinstance(value, str | int | float):
            problems.append(f"'{where}' must be text, not {value!r}.")
            return target
        return str(value)
    return value


def _apply(cfg: Config, section: str, key: str, value: Any, problems: list[str],
           origin: str) -> None:
    obj = cfg if not section else getattr(cfg, section, None)
    names = {f.name for f in fields(obj)} if obj is not None else set()
    if obj is None or key not in names or key == "source":
        problems.append(f"{origin}: there is no setting '{section + '.' if section else ''}{key}'.")
        return
    found: list[str] = []
    setattr(obj, key, _coerce(section, key, value, getattr(obj, key), found))
    problems.extend(f"{origin}: {p}" for p in found)


def load_config(path: str | os.PathLike | None = None,
                env: dict[str, str] | None = None) -> Config:
    """Build the configuration; raise ConfigError listing every problem found."""
    env = dict(os.environ if env is None else env)
    cfg = Config()
    problems: list[str] = []
    path = path or env.get("FHIR_GATEWAY_CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError([f"The config file {path} does not exist."]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"The config file {path} is not valid TOML: {exc}."]) from None
        cfg.source = str(path)
        for key, value in data.items():
            if key == "tenants" and isinstance(value, dict):
                base = Path(path).parent
                for name, file in value.items():
                    if not isinstance(file, str) or not _TENANT_RE.match(name):
                        problems.append(f"In {path}: tenants.{name} must be a config file path "
                                        "and the name letters, digits and dashes.")
                        continue
                    cfg.tenants[name] = str((base / file).resolve())
                continue
            if isinstance(value, dict):
                for sub, subval in value.items():
                    _apply(cfg, key, sub, subval, problems, f"In {path}")
            else:
                _apply(cfg, "", key, value, problems, f"In {path}")
    for name, (section, key) in ENV_ALIASES.items():
        if env.get(name):
            _apply(cfg, section, key, env[name], problems, f"Environment {name}")
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_ALIASES or name == "FHIR_GATEWAY_CONFIG":
            continue
        rest = name[len(ENV_PREFIX):].lower()
        section = next((s for s in sorted(SECTIONS, key=len, reverse=True)
                        if rest.startswith(s + "_")), None)
        if section:
            _apply(cfg, section, rest[len(section) + 1:], value, problems,
                   f"Environment {name}")
    problems.extend(check(cfg))
    if problems:
        raise ConfigError(problems)
    return cfg


def items(text: str) -> tuple[str, ...]:
    """A comma-separated setting as its items."""
    return tuple(filter(None, (p.strip() for p in text.split(","))))


def cache_ttls(text: str) -> dict[str, int]:
    """`fhir_rest.cache_ttl`, "Patient=300,Observation=60", as seconds per type."""
    out = {}
    for part in items(text):
        rtype, _, seconds = part.partition("=")
        if not seconds.strip().isdigit():
            raise ValueError(f"fhir_rest.cache_ttl: {part!r} must look like Patient=300.")
        out[rtype.strip()] = int(seconds)
    return out


def check(cfg: Config) -> list[str]:
    """Problems with values that parsed but cannot work."""
    out = []
    if not 0 < cfg.server.port < 65536:
        out.append(f"server.port must be between 1 and 65535, not {cfg.server.port}.")
    if cfg.server.workers < 1 or cfg.server.threads < 1:
        out.append("server.workers and server.threads must be at least 1.")
    if cfg.adapter.kind not in ADAPTERS:
        out.append(f"adapter.kind {cfg.adapter.kind!r} is unknown; choose one of "
                   f"{', '.join(ADAPTERS)}.")
    lim = cfg.limits
    if lim.max_body_bytes < 1024:
        out.append("limits.max_body_bytes must be at least 1024 bytes.")
    if not 8 <= lim.max_json_depth <= 512:
        out.append("limits.max_json_depth must be between 8 and 512.")
    if not 1 <= lim.default_count <= lim.max_count:
        out.append("limits.default_count must be at least 1 and at most limits.max_count.")
    for label, url in (("embedded.database_url", cfg.embedded.database_url),
                       ("database.url", cfg.database.url)):
        if url and not url.startswith(("sqlite", "postgresql")):
            out.append(f"{label} must be a sqlite:/// or postgresql+psycopg:// URL, not {url!r}.")
    rest = cfg.fhir_rest
    if cfg.adapter.kind == "fhir_rest":
        if not rest.base_url.startswith(("http://", "https://")):
            out.append("fhir_rest.base_url must be the EHR's FHIR base (http:// or https://).")
        from adapters.fhir_rest.settings import AUTH_KINDS, TRANSPORTS
        from adapters.fhir_rest.vendors import PROFILES

        if rest.vendor not in PROFILES:
            out.append(f"fhir_rest.vendor {rest.vendor!r} is unknown; choose one of "
                       f"{', '.join(sorted(PROFILES))}.")
        if rest.auth not in AUTH_KINDS:
            out.append(f"fhir_rest.auth must be one of {', '.join(AUTH_KINDS)}.")
        if rest.transport not in TRANSPORTS:
            out.append(f"fhir_rest.transport {rest.transport!r} is unknown; choose one of "
                       f"{', '.join(TRANSPORTS)}.")
        if rest.ca_file and not Path(rest.ca_file).is_file():
            out.append(f"fhir_rest.ca_file {rest.ca_file} is not a readable file.")
        if rest.auth == "bearer" and not (rest.bearer_token or rest.bearer_token_file):
            out.append("fhir_rest.auth = bearer needs FHIR_GATEWAY_FHIR_REST_BEARER_TOKEN or "
                       "fhir_rest.bearer_token_file.")
        from adapters.fhir_rest.matrix import override_target

        for label, text in (("allow", rest.allow), ("deny", rest.deny)):
            for entry in items(text):
                try:
                    override_target(entry)
                except ValueError as exc:
                    out.append(f"fhir_rest.{label}: {exc}.")
        try:
            cache_ttls(rest.cache_ttl)
        except ValueError as exc:
            out.append(str(exc))
        if rest.auth == "backend-services" and not (rest.client_id and rest.private_key_file):
            out.append("fhir_rest.auth = backend-services needs fhir_rest.client_id and "
                       "fhir_rest.private_key_file.")
    if cfg.redis_url and not cfg.redis_url.startswith(("redis://", "rediss://", "unix://")):
        out.append("redis_url must be a redis:// URL.")
    if cfg.server.base_url and not cfg.server.base_url.startswith(("http://", "https://")):
        out.append("server.base_url must start with http:// or https://.")
    return out
