"""The WS-Security UsernameToken every ONVIF call is signed with, checked against the web login.

ONVIF clients (Home Assistant, NVRs, ONVIF Device Manager) send the user and either a
*PasswordDigest*, Base64(SHA-1(nonce + Created + password)), or the password itself (*PasswordText*,
as Basic authentication does). A digest is checked against the password itself (the login's
``password_file``; a hash cannot make one); it is refused when its ``Created`` is more than
``window`` seconds from this clock (a recording of an old call), or when its nonce was used before
within that window (a replay). Every refusal counts against the address in the failure limit that
HTTP and RTSP share, and an address over it is refused before anything is checked.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from xml.etree.ElementTree import Element

from appliance.onvif.soap import split
from appliance.passwords import PasswordCheck

PROFILE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
DIGEST = f"{PROFILE}#PasswordDigest"
WINDOW = 300.0  # s either side of this clock that a token's Created may be
MAX_NONCES = 10_000  # remembered at once: about 30 calls a second for the whole window


class FailureLimit(Protocol):
    """The per-address count of failed logins HTTP and RTSP share (``web.security.FailureLimiter``)."""

    def retry_after(self, address: str) -> int | None: ...

    def failed(self, address: str) -> None: ...


@dataclass(frozen=True)
class Token:
    username: str
    password: str
    digest: bool
    nonce: bytes
    created: str


def _child(element: Element | None, name: str) -> Element | None:
    if element is None:
        return None
    return next((child for child in element if split(child.tag)[1] == name), None)


def _text(element: Element | None, name: str) -> str:
    child = _child(element, name)
    return "" if child is None else (child.text or "")


def token_of(header: Element | None) -> Token | None:
    """The UsernameToken in a SOAP header, or None when there is none. (An element without children
    is false in a test of truth: every lookup here compares with None.)"""
    username_token = _child(_child(header, "Security"), "UsernameToken")
    if username_token is None:
        return None
    password = _child(username_token, "Password")
    try:
        nonce = base64.b64decode(_text(username_token, "Nonce").strip(), validate=True)
    except binascii.Error:
        nonce = b""
    return Token(username=_text(username_token, "Username"), password=_text(username_token, "Password"),
                 digest=password is not None and password.get("Type", "").endswith("#PasswordDigest"),
                 nonce=nonce, created=_text(username_token, "Created"))


def _seconds(created: str) -> float | None:
    try:
        when = datetime.datetime.fromisoformat(created.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


class TokenCheck:
    """Checks the tokens of one login; ``clock`` is wall time (tests set it)."""

    def __init__(self, username: str, login: PasswordCheck, password: str | None, limiter: FailureLimit,
                 clock: Callable[[], float] = time.time, window: float = WINDOW,
                 max_nonces: int = MAX_NONCES) -> None:
        self._username = username
        self._login = login
        self._password = password
        self._limiter = limiter
        self._clock = clock
        self._window = window
        self._max_nonces = max_nonces
        self._nonces: OrderedDict[bytes, float] = OrderedDict()  # nonce -> when it may be forgotten
        self._lock = threading.Lock()

    def check(self, header: Element | None, address: str) -> str | None:
        """None when the call's token is good, else why not (for a ``ter:NotAuthorized`` fault)."""
        if self._limiter.retry_after(address) is not None:
            return "too many failed logins from this address; try again later"
        token = token_of(header)
        if token is None:
            return "this operation needs a WS-Security UsernameToken"
        problem = self._judge(token)
        if problem is not None:
            self._limiter.failed(address)
        return problem

    def _judge(self, token: Token) -> str | None:
        if not hmac.compare_digest(token.username.encode(), self._username.encode()):
            return "wrong user or password"
        if not token.digest:
            return None if self._login.check(token.username, token.password) else "wrong user or password"
        if self._password is None:
            return "password digests need the password itself (server.auth.password_file)"
        created = _seconds(token.created)
        now = self._clock()
        if created is None or abs(now - created) > self._window:
            return (f"the token's Created ({token.created[:40]!r}) is not within {self._window:g} s "
                    "of the camera's clock")
        if not token.nonce:
            return "a password digest needs a nonce"
        expected = base64.b64encode(hashlib.sha1(token.nonce + token.created.encode() + self._password.encode(),
                                                 usedforsecurity=False).digest()).decode()
        if not hmac.compare_digest(expected.encode(), token.password.strip().encode()):
            return "wrong user or password"
        with self._lock:
            while self._nonces and next(iter(self._nonces.values())) < now:
                self._nonces.popitem(last=False)
            if token.nonce in self._nonces:
                return "this nonce was used before (a replayed call)"
            self._nonces[token.nonce] = now + 2 * self._window
            while len(self._nonces) > self._max_nonces:
                self._nonces.popitem(last=False)
        return None
