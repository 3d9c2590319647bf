"""What the portal needs to know to run: which SMART server, which client it is, its secret."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PortalSettings:
    """Configuration passed to `create_portal`; nothing is read from globals.

    `fhir_base` is the SMART server's FHIR base URL (the `iss` of a launch). Timeouts are in
    seconds: `idle_timeout` signs a patient out after inactivity, `absolute_timeout` after that
    long whatever they do.
    """

    fhir_base: str
    client_id: str
    redirect_uri: str
    secret_key: str
    language: str = "en"
    scope: str = "openid fhirUser online_access patient/*.cruds"
    idle_timeout: int = 15 * 60
    absolute_timeout: int = 12 * 60 * 60
    secure_cookies: bool | None = None  # None: Secure exactly when redirect_uri is https
    # The server's rules for message attachments (the gateway's `[portal] attachment_types`
    # and `max_attachment_bytes`; its defaults), checked here before anything is sent.
    attachment_types: tuple[str, ...] = ("application/pdf", "image/jpeg", "image/png",
                                         "text/plain")
    max_attachment_bytes: int = 5 * 1024 * 1024

    @property
    def cookies_secure(self) -> bool:
        if self.secure_cookies is None:
            return self.redirect_uri.startswith("https://")
        return self.secure_cookies
