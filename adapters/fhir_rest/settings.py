"""How the gateway reaches one EHR's FHIR R4 API: address, credentials, limits, cache lifetimes.

Plain data; `fhir_gateway.config` fills it from the TOML file and the environment. Secrets
(bearer token, private key) are read from files or the environment, never kept in the TOML.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

AUTH_KINDS = ("none", "bearer", "backend-services")
TRANSPORTS = ("curl", "httpx")  # the outbound wire: libcurl (pycurl), or httpx's httpcore


@dataclass
class RestSettings:
    base_url: str
    name: str = "ehr"  # shown in messages and the capability table
    vendor: str = "generic"  # a profile in adapters.fhir_rest.vendors
    auth: str = "none"
    bearer_token: str = ""
    client_id: str = ""  # backend services: the gateway's client id at the EHR
    token_url: str = ""  # default: from the EHR's .well-known/smart-configuration
    private_key_pem: bytes = b""  # backend services: RS384 or ES384 private key (PEM)
    key_id: str = ""
    scope: str = "system/*.rs"  # asked for in client_credentials
    granted_scopes: str = ""  # what the clinic's registration was granted; empty: no limit
    allow: tuple[str, ...] = ()  # overrides, "Type.interaction" ("Task.update")
    deny: tuple[str, ...] = ()
    connect_timeout: float = 3.0
    read_timeout: float = 20.0
    write_timeout: float = 20.0
    pool_timeout: float = 5.0
    max_connections: int = 32
    ca_file: str = ""  # PEM bundle of the CAs trusted for TLS to the EHR; "" = certifi's
    transport: str = "curl"  # one of TRANSPORTS (see adapters.fhir_rest.wire)
    retries: int = 2  # extra attempts for idempotent requests
    backoff: float = 0.2  # first backoff in seconds; doubles, with full jitter
    max_wait: float = 10.0  # longest Retry-After slept in a request; longer is reported
    breaker_failures: int = 5  # consecutive failures that open the circuit
    breaker_reset: float = 30.0  # seconds the circuit stays open before one trial request
    cache_ttl: dict[str, int] = field(default_factory=dict)  # per type, seconds; 0 = no cache
    default_cache_ttl: int = 30
    stale_for: int = 24 * 3600  # serve a cached read this old when the EHR is down
    capability_ttl: int = 3600
    cursor_key: bytes = b""  # seals upstream paging links; 32 random bytes
    redis_url: str = ""

    def ttl(self, resource_type: str) -> int:
        return self.cache_ttl.get(resource_type, self.default_cache_ttl)

    def cache_namespace(self) -> str:
        """Whose view of the EHR a shared cache holds: the EHR's base and the gateway's
        credentials there (secrets by digest, never in clear). Two clinics at one EHR base
        with credentials of their own (two Medplum projects) may be shown different data, so
        they never share entries; gateways of one clinic do."""
        secrets = hashlib.sha256(self.bearer_token.encode() + b"\0" + self.private_key_pem)
        return "|".join((self.name, self.base_url, self.auth, self.client_id, self.token_url,
                         self.scope, self.granted_scopes, secrets.hexdigest()))
