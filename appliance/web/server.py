"""The production WSGI server, in-process, guarded against clients that cost too much.

cheroot is chosen because it is the one server (of waitress, gunicorn, cheroot, Werkzeug) that frees
the thread of a viewer who stays connected but stops reading (its socket timeout), and its pool is
sized here for the viewer limit plus API calls so the page never waits behind streams.

Out of the box a cheroot worker thread reads each request itself, so sixteen clients that trickle a
header byte every few seconds hold sixteen threads and a plain GET times out; running out of file
descriptors made its accept loop spin writing tracebacks. ``GuardedServer`` changes three things:

- **A request costs a thread only once it is complete.** Plain-HTTP connections wait in cheroot's
  selector while their bytes arrive; the selector thread moves what came into the connection's own
  read buffer and hands the connection to the pool only when the headers (and a declared body up to
  ``max_body_bytes``) are there. A request not complete within ``request_timeout`` gets ``408``;
  headers over ``max_header_bytes`` get ``431``; a body over ``max_body_bytes`` gets ``413`` before
  a byte of it is read.
- **Connections are counted**, per client address and in all; beyond either limit a new connection
  gets ``503`` and is closed at once.
- **Running out of descriptors** pauses accepting for a moment and is logged once per interval.

With HTTPS the TLS handshake runs in the selector loop too, without blocking (cheroot's own adapter
would do it there *blocking*, so one client that stalls its handshake would stop every new
connection for the socket timeout); it is bound by the same request deadline.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import http.client
import json
import logging
import re
import selectors
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cheroot import connections, server, wsgi

from appliance.web.fanout import CAN_HAND_OFF, STREAM_HANDOFF, STREAM_SLOT, HandOff, StreamFanout

log = logging.getLogger(__name__)

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*(\d{1,12})[ \t]*(?=\r\n|$)", re.IGNORECASE)
_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_ACCEPT_PAUSE = 0.5  # s without accepting after running out of descriptors
_LOG_EVERY = 10.0  # s between two log lines about the same resource problem


def request_state(buffer: bytes, max_header: int, max_body: int) -> str:
    """Whether ``buffer`` holds a whole request: ``wait``, ``ready`` or ``too_large`` (headers).

    A body is waited for only when it is declared and allowed; a larger one is refused by the
    worker (413) from the headers alone, and a chunked one is bounded by cheroot while read.
    """
    start = len(buffer) - len(buffer.lstrip(b"\r\n"))  # RFC 9112: ignore empty lines before a request
    end = buffer.find(b"\r\n\r\n", start)
    if end < 0:
        return "too_large" if len(buffer) - start > max_header else "wait"
    if end - start > max_header:
        return "too_large"
    match = _CONTENT_LENGTH.search(buffer, start, end + 2)
    if match is not None:
        length = int(match.group(1))
        if length <= max_body and len(buffer) - (end + 4) < length:
            return "wait"
    return "ready"


def _json_reply(status: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode("ascii") + body


class _Throttled:
    """Logs a recurring problem once per interval, with how often it happened meanwhile."""

    def __init__(self, message: str) -> None:
        self._message = message
        self._last = float("-inf")
        self._count = 0

    def __call__(self, *args: Any) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last >= _LOG_EVERY:
            log.warning(self._message + " (%d time(s) since the last report)", *args, self._count)
            self._last, self._count = now, 0


class GuardedConnection(server.HTTPConnection):
    """A connection that knows its deadline and gives its slot back when closed."""

    deadline = 0.0
    counted: Counter[str] | None = None
    counted_lock: threading.Condition | None = None
    handed_off = False  # a live stream: the stream writer owns the socket and closes it

    def close(self) -> None:
        self._discard_unsent()
        if self.handed_off:
            # Only our file objects go (they hold references that would keep the descriptor open
            # after the writer closes the socket); the socket and its count are the writer's now.
            self.rfile.close()
            self.wfile.close()
            return
        self.close_slot(self)
        super().close()

    def _discard_unsent(self) -> None:
        """Drop what a client that left mid-response never took. Its bytes stay in the write buffer;
        with the socket closed they can never go, and the buffer's finaliser would try, whenever the
        garbage collector reached it, and print a traceback for the closed descriptor."""
        pending = getattr(self.wfile, "_write_buf", None)
        if isinstance(pending, bytearray):
            del pending[:]

    @staticmethod
    def close_slot(conn: Any) -> None:
        """Give the connection's place in the per-client count back, once."""
        counted, lock = conn.counted, conn.counted_lock
        if counted is not None and lock is not None:
            conn.counted = None
            with lock:
                counted[conn.remote_addr] -= 1
                if counted[conn.remote_addr] <= 0:
                    del counted[conn.remote_addr]
                lock.notify_all()


class GuardedConnectionManager(connections.ConnectionManager):
    """cheroot's selector loop, with connection limits, request deadlines and descriptor back-off."""

    def __init__(self, guarded: GuardedServer) -> None:
        super().__init__(guarded)
        self._guarded = guarded
        self._per_client: Counter[str] = Counter()
        self._count_lock = threading.Condition()
        self._accept_paused_until: float | None = None
        self._log_no_descriptors = _Throttled("out of file descriptors (%s); pausing new connections")
        self._log_refused = _Throttled("refused a connection from %s: %s")

    @property
    def open_connections(self) -> int:
        with self._count_lock:
            return sum(self._per_client.values())

    def wait_for_connections(self, count: int, timeout: float) -> bool:
        """Block until exactly ``count`` connections are open (tests, shutdown)."""
        with self._count_lock:
            return self._count_lock.wait_for(lambda: sum(self._per_client.values()) == count, timeout)

    def _from_server_socket(self, server_socket: socket.socket) -> Any:
        try:
            conn = self._accept_tls(server_socket) if self._guarded.ssl_adapter is not None \
                else super()._from_server_socket(server_socket)
        except OSError as exc:
            if exc.errno not in _OUT_OF_DESCRIPTORS:
                raise
            # The listening socket stays readable: without a pause select() would return at once, forever.
            self._log_no_descriptors(errno.errorcode.get(exc.errno or 0, str(exc.errno)))
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(server_socket.fileno())
            self._accept_paused_until = time.monotonic() + _ACCEPT_PAUSE
            return None
        if conn is None:
            return None
        limits = self._guarded.limits
        address = conn.remote_addr or "unknown"
        with self._count_lock:
            total = sum(self._per_client.values())
            refused = ("too many connections from this address" if self._per_client[address] >= limits.per_client
                       else "too many connections" if total >= limits.total else None)
            if refused is None:
                self._per_client[address] += 1
                conn.counted, conn.counted_lock = self._per_client, self._count_lock
        if refused is not None:
            self._log_refused(address, refused)
            _send_and_close(conn, _json_reply("503 Service Unavailable", refused))
            return None
        conn.deadline = time.monotonic() + limits.request_timeout
        return conn

    def _accept_tls(self, server_socket: socket.socket) -> _Handshake | None:
        """Accept and start a TLS handshake that the selector loop drives without blocking."""
        try:
            raw, address = server_socket.accept()
        except (BlockingIOError, InterruptedError, TimeoutError):
            return None
        connections.prevent_socket_inheritance(raw)
        context = self._guarded.ssl_adapter.context
        tls = context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        tls.settimeout(0.0)
        return _Handshake(tls, address, time.monotonic() + self._guarded.limits.request_timeout)

    def stop(self) -> None:
        """End the selector loop now: wake its select() with a connection instead of waiting it out."""
        self._stop_requested = True
        with contextlib.suppress(OSError):
            host, port = self._guarded.socket.getsockname()[:2]
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as poke:
                poke.settimeout(0.5)
                poke.connect(("127.0.0.1" if host == "0.0.0.0" else "::1" if host == "::" else host, port))
        super().stop()

    def wait_for_more(self, conn: Any) -> None:
        """Keep an incomplete request in the selector until more of it arrives."""
        conn.last_used = time.time()
        self._selector.register(conn.socket.fileno(), selectors.EVENT_READ, data=conn)

    def put(self, conn: GuardedConnection) -> None:
        """A kept-alive connection after its response: the next request has a deadline of its own."""
        conn.deadline = time.monotonic() + max(self._guarded.limits.request_timeout, self._guarded.timeout)
        super().put(conn)

    def _expire(self, threshold: float) -> None:
        now = time.monotonic()
        if self._accept_paused_until is not None and now >= self._accept_paused_until:
            self._accept_paused_until = None
            with contextlib.suppress(KeyError, ValueError):
                self._selector.register(self._guarded.socket.fileno(), selectors.EVENT_READ, data=self._guarded)
        expired = [(fd, conn) for fd, conn in self._selector.connections
                   if conn is not self._guarded and getattr(conn, "deadline", 0.0) < now]
        for fd, conn in expired:
            self._selector.unregister(fd)
            started = isinstance(conn, GuardedConnection) and conn.rfile.has_data()
            if started:
                _send_and_close(conn, _json_reply("408 Request Timeout", "the request did not arrive in time"))
            else:
                conn.close()  # an idle kept-alive connection: nothing to say


def _recv_now(sock: socket.socket) -> bytes:
    """What has arrived, without waiting: a socket with a timeout would poll first, even when told not to."""
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        return sock.recv(65536)
    finally:
        sock.settimeout(timeout)


def _send_and_close(conn: Any, reply: bytes) -> None:
    """A short last word to a client we are dropping; never waits for it to read."""
    with contextlib.suppress(OSError, ValueError):
        timeout = conn.socket.gettimeout()
        conn.socket.settimeout(0.0)
        conn.socket.send(reply)
        conn.socket.settimeout(timeout)
    conn.close()


class _Handshake:
    """A TLS connection whose handshake is still under way; it waits in the selector like a request."""

    def __init__(self, sock: ssl.SSLSocket, address: Any, deadline: float) -> None:
        self.socket = sock
        self.address = address
        self.deadline = deadline
        self.last_used = time.time()
        self.counted: Counter[str] | None = None
        self.counted_lock: threading.Condition | None = None
        self.remote_addr = address[0] if isinstance(address, tuple) else "unknown"

    def close(self) -> None:
        GuardedConnection.close_slot(self)
        with contextlib.suppress(OSError):
            self.socket.close()


@dataclass(frozen=True)
class _Limits:
    request_timeout: float
    max_header: int
    max_body: int
    per_client: int
    total: int


class StreamGateway(wsgi.Gateway_10):
    """cheroot's WSGI 1.0 gateway, able to hand a live stream's socket to the stream writer.

    When the app marks a response as a stream (an MJPEG ``STREAM_SLOT`` or another stream's
    ``STREAM_HANDOFF`` in the environ), the gateway writes its headers itself (``Connection: close``,
    no chunking: the body runs until either side closes) and gives the socket to the stream's writer
    (``StreamFanout``, ``H264Viewers``); the worker thread is free again at once.
    """

    def respond(self) -> None:
        fanout: StreamFanout | None = self.req.server.streams
        if fanout is not None:
            self.env[CAN_HAND_OFF] = True
        response = self.req.server.wsgi_app(self.env, self.start_response)
        slot = self.env.get(STREAM_SLOT)
        if fanout is not None and slot is not None:
            handoff: HandOff | None = HandOff(lambda sock, on_close: fanout.attach(sock, slot, on_close),
                                              lambda: fanout.release(slot))
        else:
            handoff = self.env.get(STREAM_HANDOFF) if fanout is not None else None
        if handoff is None:
            try:
                for chunk in filter(None, response):
                    if not isinstance(chunk, bytes):
                        raise ValueError("WSGI applications must yield bytes")
                    self.write(chunk)
            finally:
                self.req.ensure_headers_sent()
                if hasattr(response, "close"):
                    response.close()
            return
        if hasattr(response, "close"):
            response.close()
        self._hand_off(handoff)

    def _hand_off(self, handoff: HandOff) -> None:
        req, conn = self.req, self.req.conn
        req.close_connection = True
        lines = [req.server.protocol.encode("ascii") + b" " + req.status]
        lines += [name + b": " + value for name, value in req.outheaders]
        lines += [b"Date: " + email.utils.formatdate(usegmt=True).encode("ascii"),
                  b"Server: " + req.server.server_name.encode("ascii")]
        try:
            conn.wfile.write(b"\r\n".join(lines) + b"\r\n\r\n")
            conn.wfile.flush()
        except OSError:
            handoff.release()  # the viewer left before its headers went out
            return
        req.sent_headers = True
        conn.handed_off = True
        handoff.attach(conn.socket, lambda: GuardedConnection.close_slot(conn))


class GuardedServer(wsgi.Server):
    """cheroot's WSGI server with the guards described in the module docstring."""

    ConnectionClass = GuardedConnection

    def __init__(self, *args: Any, limits: _Limits, streams: StreamFanout | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gateway = StreamGateway
        self.streams = streams
        self.limits = limits
        self.max_request_header_size = limits.max_header
        self.max_request_body_size = limits.max_body

    def prepare(self) -> None:
        super().prepare()
        plain = self._connections
        self._connections = GuardedConnectionManager(self)
        plain._selector.close()  # it only held the listening socket, which stays open

    def process_conn(self, conn: Any) -> None:
        """Hand a connection to a worker only once its request is complete."""
        if isinstance(conn, _Handshake):
            conn = self._finish_handshake(conn)
            if conn is None:
                return
        if not self._request_complete(conn):
            return
        super().process_conn(conn)

    def _finish_handshake(self, pending: _Handshake) -> GuardedConnection | None:
        """One step of a TLS handshake; the connection once it is done, else None (waiting or dropped)."""
        manager: GuardedConnectionManager = self._connections
        try:
            pending.socket.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            manager.wait_for_more(pending)
            return None
        except (OSError, ValueError) as exc:
            log.debug("TLS handshake with %s failed: %s", pending.remote_addr, exc)
            pending.close()
            return None
        sock = pending.socket
        sock.settimeout(self.timeout)
        conn = self.ConnectionClass(self, sock, self.ssl_adapter.makefile)
        conn.remote_addr, conn.remote_port = (pending.address[0], pending.address[1]) \
            if isinstance(pending.address, tuple) else ("unknown", 0)
        conn.ssl_env = self.ssl_adapter.get_environ(sock)
        conn.counted, conn.counted_lock, pending.counted = pending.counted, pending.counted_lock, None
        conn.deadline = pending.deadline
        return conn

    def _request_complete(self, conn: GuardedConnection) -> bool:
        """Move what arrived into the connection's buffer; False when it must wait (or was closed)."""
        rfile = conn.rfile
        manager: GuardedConnectionManager = self._connections
        while True:
            buffered = rfile.peek(0) if rfile.has_data() else b""
            state = request_state(buffered, self.limits.max_header, self.limits.max_body)
            if state == "ready":
                return True
            if state == "too_large":
                _send_and_close(conn, _json_reply("431 Request Header Fields Too Large",
                                                  f"request headers exceed {self.limits.max_header} bytes"))
                return False
            try:
                data = _recv_now(conn.socket)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                manager.wait_for_more(conn)
                return False
            except OSError:
                conn.close()
                return False
            if not data:
                conn.close()  # the client went away before finishing its request
                return False
            # cheroot reads requests through this buffered reader: what we read goes in front of it.
            rfile._read_buf = bytes(rfile._read_buf[rfile._read_pos:]) + data
            rfile._read_pos = 0


class HttpServer:
    """Serves a WSGI app on a thread pool; ``start`` binds and returns, ``stop`` joins."""

    def __init__(self, app: Any, host: str, port: int, threads: int, socket_timeout: float,
                 request_timeout: float = 10.0, max_header_bytes: int = 16384, max_body_bytes: int = 65536,
                 max_connections: int = 512, max_connections_per_client: int = 64,
                 tls: tuple[Path, Path] | None = None, streams: StreamFanout | None = None) -> None:
        limits = _Limits(request_timeout, max_header_bytes, max_body_bytes, max_connections_per_client,
                         max_connections)
        self._server = GuardedServer((host, port), app, numthreads=threads, max=threads,
                                     timeout=int(max(1, socket_timeout)), shutdown_timeout=1,
                                     server_name="appliance", limits=limits, streams=streams,
                                     request_queue_size=128)  # a burst of page loads waits, not refused
        self._server.expiration_interval = 0.25  # how often deadlines are checked
        self.tls = tls is not None
        if tls is not None:
            from cheroot.ssl.builtin import BuiltinSSLAdapter

            self._server.ssl_adapter = BuiltinSSLAdapter(str(tls[0]), str(tls[1]))
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.bind_addr[1])

    @property
    def open_connections(self) -> int:
        return self._manager().open_connections

    def wait_for_connections(self, count: int, timeout: float) -> bool:
        return self._manager().wait_for_connections(count, timeout)

    def _manager(self) -> GuardedConnectionManager:
        manager = getattr(self._server, "_connections", None)
        if not isinstance(manager, GuardedConnectionManager):
            raise RuntimeError("the server has not started")
        return manager

    def start(self) -> None:
        """Bind now (so a busy port fails start-up loudly) and serve in a background thread."""
        self._server.prepare()
        self._thread = threading.Thread(target=self._server.serve, name="http", daemon=True)
        self._thread.start()
        log.info("serving on %s://%s:%d/", "https" if self.tls else "http", self._server.bind_addr[0], self.port)

    def answers(self, timeout: float = 2.0) -> bool:
        """Whether the server answers a request on loopback now: the watchdog's view of the web side."""
        host = self._server.bind_addr[0]
        host = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
        if self.tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # our own certificate, on loopback
            client: http.client.HTTPConnection = http.client.HTTPSConnection(host, self.port, timeout=timeout,
                                                                             context=context)
        else:
            client = http.client.HTTPConnection(host, self.port, timeout=timeout)
        try:
            client.request("GET", "/healthz", headers={"Host": "localhost", "Connection": "close"})
            return client.getresponse().status in (200, 503)
        except (OSError, http.client.HTTPException):
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._server.stop()
        self._thread.join(1.5)
        self._thread = None
