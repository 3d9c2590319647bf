"""Sealed paging links: the EHR's `next` link becomes an encrypted cursor.

Apps never see upstream addresses, hosts or tokens a server may put in its links. A link that
leaves the EHR's own base (another host, another path) is refused, never followed.
"""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken

from adapters.errors import Invalid


class LinkSealer:
    def __init__(self, key: bytes, base: str) -> None:
        digest = hashlib.sha256(b"fhir-rest paging\0" + key).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))
        self.base = base.rstrip("/") + "/"

    def relative(self, link: str) -> str | None:
        """The link relative to the EHR's base, or None when it points anywhere else."""
        if not isinstance(link, str):
            return None
        if link.startswith(self.base):
            return link[len(self.base):]
        parts, base = urlsplit(link), urlsplit(self.base)
        if not parts.scheme and not parts.netloc and link.startswith(base.path):
            return link[len(base.path):]  # an absolute path on the same server
        return None

    def seal(self, relative: str) -> str:
        return self._fernet.encrypt(relative.encode()).decode()

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except (InvalidToken, ValueError):
            raise Invalid("The paging cursor is not valid", expression="_cursor") from None
