"""API keys: where they come from (flags, environment, files), how a bearer token is matched, and the
per-installation secret that turns a key into a stored identity.

A key never leaves this module: callers get a role and an identity, ``HMAC-SHA256(secret, key)`` in hex. The
secret (32 random bytes, a 0600 file in a 0700 directory) keeps identities in the learning store from being
matched against guessed keys by whoever reads the store.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

USER_KEYS_ENV = "APHRODITE_API_KEYS"
"""Comma-separated user keys."""
ADMIN_KEY_ENV = "APHRODITE_ADMIN_KEY"
"""The admin key (comma-separated if several)."""
SECRET_BYTES = 32

Role = Literal["admin", "user"]


def default_secret_path(env: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CACHE_HOME/aphrodite/secret``, ``~/.cache/aphrodite/secret`` without it."""
    cache = env.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(cache) / "aphrodite" / "secret"


def load_or_create_secret(path: Path) -> bytes:
    """Read the installation secret, creating it (0600, directory 0700) on first use."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(SECRET_BYTES) + "\n")
            f.flush()
            os.fsync(f.fileno())
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("the secret file %s is readable by other users; chmod 600 it", path)
    text = path.read_text().strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"the secret file {path} is not hex; delete it to make a new one") from None
    if len(secret) < 16:
        raise ValueError(f"the secret file {path} holds fewer than 16 bytes; delete it to make a new one")
    return secret


def _keys_from_file(path: str) -> list[str]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise ValueError(f"cannot read key file {path}: {e.strerror}") from None
    if os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("the key file %s is readable by other users; chmod 600 it", path)
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def collect_keys(flag_keys: list[str], env_value: str | None, file: str | None) -> list[str]:
    """Keys from a flag, an environment variable (comma-separated) and a file, without duplicates."""
    keys = [k.strip() for k in flag_keys if k.strip()]
    keys += [k.strip() for k in (env_value or "").split(",") if k.strip()]
    if file:
        keys += _keys_from_file(file)
    for k in keys:
        if not k.isprintable() or any(c.isspace() for c in k) or not k.isascii():
            raise ValueError("an API key must be printable ASCII without spaces")
    return list(dict.fromkeys(keys))


@dataclass(frozen=True)
class KeyMatch:
    """A bearer token that matched a configured key."""

    role: Role
    identity: str
    """HMAC-SHA256(secret, key) in hex."""


class KeyRing:
    """The configured keys and their identities; matching is constant-time against every key."""

    def __init__(self, user_keys: list[str], admin_keys: list[str], secret: bytes | None) -> None:
        both = set(user_keys) & set(admin_keys)
        if both:
            raise ValueError("the same key is configured as a user key and as the admin key")
        if (user_keys or admin_keys) and secret is None:
            raise ValueError("keys need the installation secret")
        self._entries = [(k.encode(), KeyMatch(role, identity_of(secret, k)))  # type: ignore[arg-type]
                         for role, keys in (("admin", admin_keys), ("user", user_keys)) for k in keys]
        self.has_user_keys = bool(user_keys)
        self.has_admin_key = bool(admin_keys)

    @property
    def any(self) -> bool:
        return bool(self._entries)

    def match(self, token: bytes) -> KeyMatch | None:
        """The key ``token`` equals, comparing against every key so the time does not tell which matched."""
        found = None
        for key, entry in self._entries:
            if hmac.compare_digest(token, key):
                found = entry
        return found

    @classmethod
    def from_config(cls, api_key: list[str], api_key_file: str | None, admin_key: str | None,
                    admin_key_file: str | None, secret_file: str | None,
                    env: Mapping[str, str] = os.environ) -> KeyRing:
        """Gather keys from flags, environment and files; load the secret only when there is a key."""
        users, admins = gather_keys(api_key, api_key_file, admin_key, admin_key_file, env)
        secret = None
        if users or admins:
            secret = load_or_create_secret(Path(secret_file).expanduser() if secret_file
                                           else default_secret_path(env))
        return cls(users, admins, secret)


def gather_keys(api_key: list[str], api_key_file: str | None, admin_key: str | None, admin_key_file: str | None,
                env: Mapping[str, str] = os.environ) -> tuple[list[str], list[str]]:
    """(user keys, admin keys) from flags, environment and files; raises ValueError for unusable sources."""
    users = collect_keys(api_key, env.get(USER_KEYS_ENV), api_key_file)
    admins = collect_keys([admin_key] if admin_key else [], env.get(ADMIN_KEY_ENV), admin_key_file)
    if set(users) & set(admins):
        raise ValueError("the same key is configured as a user key and as the admin key")
    return users, admins


def identity_of(secret: bytes, key: str) -> str:
    """The stored identity of a key: HMAC-SHA256 keyed with the installation secret, in hex."""
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()
