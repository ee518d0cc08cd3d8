"""Who may talk to the appliance, checked before any route does work.

Threat model: a home LAN with devices we do not trust and browsers that open hostile web pages.

- **Host allow-list** (421): after DNS rebinding a hostile page's own domain points at the Pi, so
  ``Origin`` and ``Host`` agree and a same-origin check passes. Only names we know are ours pass:
  IP literals, ``localhost``, this machine's host name and ``<hostname>.local``, plus
  ``server.allowed_hosts``.
- **Cross-site requests** (403): browsers mark every request with ``Sec-Fetch-Site``; anything a
  foreign page triggers (an ``<img>`` taking a viewer slot, a form post) is refused unless it is a
  top-level navigation to the page. Browsers without fetch metadata still send ``Origin`` on
  state-changing requests, which must then name this host.
- **HTTP Basic authentication** (401, optional): compared in constant time; an address that keeps
  guessing gets 429 for the rest of the minute. With the password itself known (``password_file``)
  Digest is offered first, beside Basic (``DigestLogin``). The count is shared with RTSP: a guess on either
  port counts against the one limit of that address.
- **Response headers**: no framing, no MIME sniffing, no referrer, and camera pictures readable
  only by pages of this origin.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import secrets
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import urlsplit

from flask import Flask, request
from werkzeug.datastructures import Authorization
from werkzeug.wrappers import Response

from appliance.config import ServerSettings
from appliance.passwords import PasswordCheck
from appliance.web.services import json_error

log = logging.getLogger(__name__)

# What the page really needs: its own script, style, pictures and API, and the H.264 view's MediaSource
# (a blob: URL). Nothing inline, nothing foreign.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
                           "connect-src 'self'; media-src 'self' blob:; manifest-src 'self'; object-src 'none'; "
                           "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
OPEN_PATHS = frozenset({"/healthz"})  # the watchdog's probe and monitoring, which know no password
SOAP_PREFIX = "/onvif/"  # ONVIF's calls carry their own login (WS-Security), checked by appliance/onvif/


def split_host(host: str) -> tuple[str, int | None]:
    """``"Cam.Local:8000"`` → ``("cam.local", 8000)``; ``"[fe80::1]:80"`` → ``("fe80::1", 80)``."""
    host = host.strip().lower()
    port: int | None = None
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
        return name, port
    if host.count(":") == 1:
        name, _, tail = host.partition(":")
        if tail.isdigit():
            port = int(tail)
        host = name
    return host.rstrip("."), port


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.split("%")[0])
    except ValueError:
        return False
    return True


class HostAllowList:
    """Names that are ours; an entry with a port matches only that port, ``*.suffix`` any subdomain."""

    def __init__(self, extra: Iterable[str], hostname: str | None = None) -> None:
        self._any = "*" in extra
        hostname = (hostname if hostname is not None else socket.gethostname()).lower().rstrip(".")
        names = {"localhost", hostname, f"{hostname}.local", hostname.split(".")[0]}
        self._entries = [(name, None) for name in names if name] + [split_host(e) for e in extra if e != "*"]

    def allows(self, host_header: str | None) -> bool:
        if self._any:
            return True
        if not host_header:
            return False
        name, port = split_host(host_header)
        if _is_ip(name):
            return True
        for allowed, allowed_port in self._entries:
            if allowed_port is not None and allowed_port != port:
                continue
            if name == allowed or (allowed.startswith("*.") and name.endswith(allowed[1:])):
                return True
        return False


class FailureLimiter:
    """Counts failed logins per address over a sliding minute; bounded in the addresses it keeps."""

    def __init__(self, max_failures: int, window: float = 60.0, max_addresses: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._max = max_failures
        self._window = window
        self._max_addresses = max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float] | None:
        times = self._failures.get(address)
        while times and times[0] <= now - self._window:
            times.popleft()
        if times is not None and not times:
            del self._failures[address]
            return None
        return times

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or None while it is under the limit."""
        with self._lock:
            now = self._clock()
            times = self._recent(address, now)
            if times is None or len(times) < self._max:
                return None
            return max(1, int(times[0] + self._window - now + 0.999))

    def failed(self, address: str) -> None:
        with self._lock:
            now = self._clock()
            times = self._recent(address, now)
            if times is None:
                times = self._failures[address] = deque(maxlen=self._max)
            times.append(now)
            self._failures.move_to_end(address)
            while len(self._failures) > self._max_addresses:
                self._failures.popitem(last=False)


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """User and password of a Basic ``Authorization`` header (HTTP and RTSP alike), or None."""
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


class DigestLogin:
    """HTTP Digest authentication (RFC 7616, MD5, ``qop=auth``), offered beside Basic when the password
    itself is known (``password_file``): what ONVIF clients and NVRs try first for the snapshot, and a
    login whose password never crosses the network. The server's nonces carry their own time and an
    HMAC of it under a secret of this run, so none is stored; one is good for ``lifetime`` seconds,
    after which the client is told it is ``stale`` and signs again."""

    def __init__(self, username: str, password: str, realm: str, clock: Callable[[], float] = time.time,
                 lifetime: float = 300.0) -> None:
        self._username = username
        self._ha1 = hashlib.md5(f"{username}:{realm}:{password}".encode(), usedforsecurity=False).hexdigest()
        self._realm = realm
        self._clock = clock
        self._lifetime = lifetime
        self._secret = secrets.token_bytes(32)

    def _sign(self, stamp: str) -> str:
        return hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:32]

    def challenge(self, stale: bool = False) -> str:
        stamp = str(int(self._clock()))
        return (f'Digest realm="{self._realm}", qop="auth", algorithm=MD5, nonce="{stamp}.{self._sign(stamp)}"'
                + (", stale=true" if stale else ""))

    def check(self, parameters: Mapping[str, str], method: str, path: str) -> str:
        """``ok``, ``stale`` (a good answer to an expired nonce: sign again) or ``wrong``."""
        stamp, _, signature = parameters.get("nonce", "").partition(".")
        if not stamp.isdigit() or not hmac.compare_digest(signature, self._sign(stamp)):
            return "wrong"
        uri = parameters.get("uri", "")
        if urlsplit(uri).path != path or parameters.get("realm") != self._realm:
            return "wrong"
        ha2 = hashlib.md5(f"{method}:{uri}".encode(), usedforsecurity=False).hexdigest()
        qop = parameters.get("qop")
        if qop == "auth":
            parts = [self._ha1, parameters.get("nonce", ""), parameters.get("nc", ""), parameters.get("cnonce", ""),
                     qop, ha2]
        elif qop is None:
            parts = [self._ha1, parameters.get("nonce", ""), ha2]
        else:
            return "wrong"
        expected = hashlib.md5(":".join(parts).encode(), usedforsecurity=False).hexdigest()
        if not (hmac.compare_digest(expected, parameters.get("response", ""))
                and hmac.compare_digest(parameters.get("username", "").encode(), self._username.encode())):
            return "wrong"
        return "stale" if self._clock() - int(stamp) > self._lifetime else "ok"


def password_check(settings: ServerSettings) -> PasswordCheck | None:
    """The configured login, or None when authentication is off. Raises OSError for an unreadable file."""
    auth = settings.auth
    if auth.username is None:
        return None
    if auth.password_hash is not None:
        return PasswordCheck(auth.username, password_hash=auth.password_hash.get_secret_value())
    return PasswordCheck(auth.username, password=plain_password(settings))


def plain_password(settings: ServerSettings) -> str | None:
    """The password itself when it is given as ``password_file`` (RTSP's Digest needs it), else None.
    Raises OSError for an unreadable file."""
    path = settings.auth.password_file
    return None if path is None else path.read_text(encoding="utf-8").rstrip("\r\n")


def install(app: Flask, settings: ServerSettings, hostname: str | None = None,
            clock: Callable[[], float] = time.monotonic, limiter: FailureLimiter | None = None) -> None:
    """Register the checks (in order: Host, cross-site, login) and the response headers on ``app``.
    ``limiter`` counts wrong passwords per address, HTTP's and those of other ports (RTSP) together."""
    hosts = HostAllowList(settings.allowed_hosts, hostname)
    login = password_check(settings)
    limiter = limiter or FailureLimiter(settings.auth.max_failures, clock=clock)
    challenge = f'Basic realm="{settings.auth.realm}", charset="UTF-8"'
    plain = plain_password(settings)
    digest = DigestLogin(settings.auth.username, plain, settings.auth.realm) \
        if plain is not None and settings.auth.username is not None else None

    @app.before_request
    def check_host() -> Response | None:
        if hosts.allows(request.host):
            return None
        return json_error(421, f"this appliance does not answer to the host name {request.host!r}; "
                               "add it to server.allowed_hosts if it is really its name")

    @app.before_request
    def refuse_cross_site() -> Response | None:
        """A page of another site must not use the camera through a visitor's browser."""
        site = request.headers.get("Sec-Fetch-Site")
        navigation = request.method == "GET" and request.headers.get("Sec-Fetch-Mode") == "navigate" \
            and request.headers.get("Sec-Fetch-Dest", "document") == "document"
        if site == "cross-site" and not navigation:
            return json_error(403, "cross-site request refused")
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return None
        # Browsers always send Origin on these; curl, scripts and Home Assistant send none.
        origin = request.headers.get("Origin")
        if origin is None or urlsplit(origin).netloc.lower() == request.host.lower():
            return None
        return json_error(403, f"cross-site request from {origin} refused")

    @app.before_request
    def require_login() -> Response | None:
        if login is None or request.path in OPEN_PATHS or request.path.startswith(SOAP_PREFIX):
            return None
        address = request.remote_addr or "unknown"
        wait = limiter.retry_after(address)
        if wait is not None:
            return json_error(429, "too many failed logins from this address; try again later", retry_after=wait)
        header = request.headers.get("Authorization")
        stale = False
        if digest is not None and header and header[:7].lower() == "digest ":
            parsed = Authorization.from_header(header)
            verdict = digest.check(parsed.parameters if parsed else {}, request.method, request.path)
            if verdict == "ok":
                return None
            stale = verdict == "stale"
            if not stale:
                limiter.failed(address)
                log.warning("failed digest login from %s", address)
        credentials = basic_credentials(header)
        if credentials is not None and login.check(*credentials):
            return None
        if credentials is not None:
            limiter.failed(address)
            log.warning("failed login from %s for user %r", address, credentials[0][:64])
        response = json_error(401, "authentication required")
        if digest is not None:  # the stronger first: a client takes the first it knows
            response.headers.add("WWW-Authenticate", digest.challenge(stale))
        response.headers.add("WWW-Authenticate", challenge)
        return response

    @app.after_request
    def security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response
