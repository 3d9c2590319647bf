"""Who an authorization is for: the signed-in user and the launch context they chose."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AuthorizedUser:
    """The resource owner authlib passes around (`grant_user`), with SMART launch context."""

    username: str
    fhir_user: str | None = None  # "Patient/pat-0001", "Practitioner/prac-01"
    patient: str | None = None
    encounter: str | None = None
    auth_time: float = 0.0

    def get_user_id(self) -> str:
        return self.username
