"""Encryption at rest for the few secrets the gateway must read back (TOTP seeds).

Hashes cannot serve here: verifying a TOTP code needs the seed itself. `SecretBox` seals such
values with Fernet (AES-128-CBC + HMAC-SHA256, authenticated), under a key kept in a file of its
own, outside the state database, so a copy of the database alone reveals nothing.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

log = logging.getLogger(__name__)


class SecretBoxError(Exception):
    """A key that is not a Fernet key, or a token this key cannot open (wrong key, damaged)."""


class SecretBox:
    """Encrypts and decrypts short text secrets with one Fernet key."""

    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise SecretBoxError(
                "the secret key is not a Fernet key (32 bytes, url-safe base64)") from None

    @staticmethod
    def generate_key() -> bytes:
        return Fernet.generate_key()

    @classmethod
    def from_file(cls, path: Path) -> SecretBox:
        """Load the key in `path`, or create it (mode 0600, parent directory 0700) if missing.

        Creation is atomic: the key is written to a private temporary file and hard-linked into
        place, so two processes starting together end up sharing one key.
        """
        path = Path(path)
        if not path.exists():
            _create_key_file(path, Fernet.generate_key())
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("secret key file %s is readable by others (mode %o); chmod 600 it",
                        path, mode)
        key = path.read_bytes().strip()
        try:
            return cls(key)
        except SecretBoxError as exc:
            raise SecretBoxError(f"{path}: {exc}") from None

    def encrypt(self, text: str) -> str:
        return self._fernet.encrypt(text.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise SecretBoxError(
                "cannot decrypt a stored secret: the secret key is not the one it was "
                "encrypted with, or the stored value is damaged") from None


def _create_key_file(path: Path, key: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, key + b"\n")
        os.fsync(fd)
        os.close(fd)
        fd = -1
        try:
            os.link(tmp, path)  # fails if another process created the key meanwhile: use theirs
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links: exclusive create instead
            _write_exclusive(path, key)
    finally:
        if fd >= 0:
            os.close(fd)
        os.unlink(tmp)


def _write_exclusive(path: Path, key: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.write(fd, key + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
