"""The adapter a configuration asks for: the embedded store, or an EHR's FHIR REST API."""

from __future__ import annotations

from pathlib import Path

from adapters.base import Adapter
from fhir_gateway.config import Config, cache_ttls, items
from fhir_gateway.paging import load_or_create_key


def rest_settings(config: Config):
    """RestSettings from the [fhir_rest] section; secrets come from files or (the main app's
    only: `load_config` read them) the environment, never from here: a clinic of several
    (`tenants`) must not call its EHR with the main app's token."""
    from adapters.fhir_rest import RestSettings

    rc = config.fhir_rest
    token = rc.bearer_token
    if not token and rc.bearer_token_file:
        token = Path(rc.bearer_token_file).read_text().strip()
    key = Path(rc.private_key_file).read_bytes() if rc.private_key_file else b""
    return RestSettings(
        base_url=rc.base_url, name=rc.name, vendor=rc.vendor, auth=rc.auth, bearer_token=token,
        client_id=rc.client_id, token_url=rc.token_url, private_key_pem=key, key_id=rc.key_id,
        scope=rc.scope, granted_scopes=rc.granted_scopes, allow=items(rc.allow),
        deny=items(rc.deny), connect_timeout=rc.connect_timeout, read_timeout=rc.read_timeout,
        write_timeout=rc.read_timeout, transport=rc.transport, ca_file=rc.ca_file,
        retries=rc.retries,
        backoff=rc.backoff, max_wait=rc.max_wait,
        breaker_failures=rc.breaker_failures, breaker_reset=rc.breaker_reset,
        cache_ttl=cache_ttls(rc.cache_ttl), default_cache_ttl=rc.default_cache_ttl,
        stale_for=rc.stale_for, capability_ttl=rc.capability_ttl,
        cursor_key=load_or_create_key(config.data_path / "keys" / "upstream-cursor.key"),
        redis_url=config.redis_url)


def build_adapter(config: Config) -> Adapter:
    if config.adapter.kind == "embedded":
        from adapters.embedded import EmbeddedAdapter

        config.data_path.mkdir(parents=True, exist_ok=True)
        return EmbeddedAdapter(config.ehr_database_url)
    if config.adapter.kind == "fhir_rest":
        from adapters.fhir_rest import FhirRestAdapter

        return FhirRestAdapter(rest_settings(config))
    raise ValueError(f"Unknown adapter {config.adapter.kind!r}")
