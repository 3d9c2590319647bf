"""The gateway's signing keys (RS256) for access tokens and id_tokens, published at `jwks_uri`.

Keys live as private JWKs under `<data>/keys/smart/` (mode 0600). The newest key signs; every key
in the folder is published and accepted, so a key can be rotated by adding a new one and removing
the old one once its tokens have expired.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from joserfc.jwk import KeySet, RSAKey


class SigningKeys:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        files = sorted(folder.glob("*.jwk.json"))
        if not files:
            files = [self._create()]
        self.keys = [RSAKey.import_key(json.loads(p.read_text())) for p in files]
        self.current = self.keys[-1]  # file names sort by creation time

    def _create(self) -> Path:
        key = RSAKey.generate_key(2048, parameters={"use": "sig", "alg": "RS256"}, private=True)
        kid = key.thumbprint()
        data = dict(key.as_dict(private=True), kid=kid)
        stamp = f"{time.time_ns():020d}"
        path = self.folder / f"{stamp}-{kid[:12]}.jwk.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(data))
        return path

    @property
    def kid(self) -> str:
        return self.current.kid

    def private_set(self) -> KeySet:
        """Only the signing key, so signatures always carry the current `kid`."""
        return KeySet([self.current])

    def public_set(self) -> KeySet:
        return KeySet([RSAKey.import_key(k.as_dict(private=False)) for k in self.keys])

    def jwks(self) -> dict:
        return {"keys": [dict(k.as_dict(private=False), kid=k.kid, use="sig", alg="RS256")
                         for k in self.keys]}
