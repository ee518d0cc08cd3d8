"""Password hashes for the web login: scrypt from the standard library, compared in constant time.

A hash reads ``scrypt$<n>$<r>$<p>$<salt>$<key>`` (salt and key in unpadded URL-safe base64), so
the cost parameters travel with it and can be raised later without breaking stored hashes.
``python -m appliance hash-password`` prints one for the config file.

scrypt costs about 16 MiB and tens of milliseconds per check on purpose; a browser sends its Basic
credentials with every request (stream, API, thumbnails), so ``PasswordCheck`` remembers the
credentials it has already accepted, as a keyed digest, and answers those at the cost of one HMAC.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict

SCHEME = "scrypt"
N, R, P = 2**14, 8, 1
KEY_BYTES = 32
SALT_BYTES = 16
_MAX_N = 2**20  # a hash from a config file must not make one login cost a gigabyte


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, salt: bytes | None = None) -> str:
    """A new hash of ``password`` with a random salt."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=N, r=R, p=P, maxmem=64 * 1024 * 1024,
                         dklen=KEY_BYTES)
    return f"{SCHEME}${N}${R}${P}${_b64(salt)}${_b64(key)}"


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes]:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise ValueError("not a password hash of this appliance (expected scrypt$n$r$p$salt$key; "
                         "make one with: python -m appliance hash-password)")
    try:
        n, r, p = (int(part) for part in parts[1:4])
        salt, key = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        raise ValueError("the password hash is damaged (its numbers or base64 do not parse)") from None
    if not (2 <= n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16 and salt and len(key) >= 16):
        raise ValueError("the password hash has parameters out of range")
    return n, r, p, salt, key


def check_hash_format(stored: str) -> None:
    """Raise ValueError (without echoing the hash) when ``stored`` is not a usable hash."""
    _parse(stored)


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches the hash ``stored``; the comparison takes constant time."""
    n, r, p, salt, key = _parse(stored)
    candidate = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                               maxmem=128 * r * (n + p + 2) + 1024 * 1024, dklen=len(key))
    return hmac.compare_digest(candidate, key)


class PasswordCheck:
    """Checks one user's credentials against a hash or a plain password read from a file.

    Accepted credentials are remembered as an HMAC under a key that lives only in this process, so
    the cache holds nothing an attacker could use, and a browser's repeated requests cost one HMAC.
    """

    def __init__(self, username: str, *, password_hash: str | None = None, password: str | None = None,
                 cache_size: int = 16) -> None:
        if (password_hash is None) == (password is None):
            raise ValueError("give exactly one of password_hash and password")
        self._username = username.encode("utf-8")
        self._hash = password_hash
        self._key = secrets.token_bytes(32)
        self._password = None if password is None else self._digest(password.encode("utf-8"))
        self._accepted: OrderedDict[bytes, None] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._verifying = threading.Lock()

    def _digest(self, data: bytes) -> bytes:
        return hmac.new(self._key, data, hashlib.sha256).digest()

    def check(self, username: str, password: str) -> bool:
        """Constant-time in the password and the user name (both are compared as digests)."""
        user_ok = hmac.compare_digest(self._digest(username.encode("utf-8")), self._digest(self._username))
        token = self._digest(username.encode("utf-8") + b"\0" + password.encode("utf-8"))
        if self._password is not None:
            return hmac.compare_digest(self._digest(password.encode("utf-8")), self._password) and user_ok
        if self._remembered(token):
            return user_ok
        assert self._hash is not None
        # One scrypt at a time: each takes 16 MiB, and RTSP clients and HTTP threads check at once.
        # The same credentials from many requests together cost one check: the rest find it cached.
        with self._verifying:
            if self._remembered(token):
                return user_ok
            if not (verify_password(password, self._hash) and user_ok):
                return False
            with self._lock:
                self._accepted[token] = None
                while len(self._accepted) > self._cache_size:
                    self._accepted.popitem(last=False)
        return True

    def _remembered(self, token: bytes) -> bool:
        with self._lock:
            if token in self._accepted:
                self._accepted.move_to_end(token)
                return True
        return False
