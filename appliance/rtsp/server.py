"""GStreamer's RTSP server, serving the one H.264 feed to every client on its own ``rtsp`` thread.

We use GStreamer's ``gst-rtsp-server`` rather than an RTSP/RTP stack of our own: it is the
maintained server behind many cameras and tools, speaks RTP over TCP (interleaved) and UDP, answers
keep-alives and RTCP, times sessions out, and drops what a client that stops reading cannot take
(``drop-backlog``) instead of slowing the others. Its media is *shared*: one pipeline,
``appsrc ! h264parse ! rtph264pay``, fed by ``H264Feed``, serves every client, so each frame is
encoded once; the pipeline starts with the first client (``media-configure``: the feed starts
encoding) and ends with the last (``unprepared``: it stops).

The same rules as HTTP: the web login (``server.auth``) with the failure limit per address that HTTP
counts in too, Basic and, when the password itself is known (``password_file``), Digest; at most
``rtsp.max_clients`` sessions (more get 503); while the camera is off every session is closed and a
new one gets ``503 Service Unavailable`` at once. Connections are bounded before GStreamer makes a
client of them: ``rtsp.max_connections`` in all and ``rtsp.max_connections_per_client`` from one
address (the rest are closed on accept), and one that has set up no session ``rtsp.request_timeout``
after it connected (or after its last TEARDOWN) is closed.

Threads: the ``rtsp`` thread's main loop accepts connections, times sessions and connections out, and
runs the work other threads hand it (they wait with a bound). Each client's requests are handled on
a thread of its own from GStreamer's thread pool (bounded by the connection limit), so one client
whose password is being checked (scrypt: tens of milliseconds, more on a Pi) holds up nobody else.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402  (after require_version)

from appliance.config import AuthSettings, RtspSettings  # noqa: E402
from appliance.h264.encoder import Packet  # noqa: E402
from appliance.h264.feed import H264Feed, Subscription  # noqa: E402
from appliance.passwords import PasswordCheck  # noqa: E402
from appliance.web.security import FailureLimiter, basic_credentials  # noqa: E402

log = logging.getLogger(__name__)

REQUIRED_ELEMENTS = ("appsrc", "h264parse", "rtph264pay")
CHECK_CONNECT = GstRtspServer.RTSP_AUTH_CHECK_CONNECT  # a new connection, before a client is made of it
CHECK_CLIENT_SETTINGS = GstRtspServer.RTSP_AUTH_CHECK_TRANSPORT_CLIENT_SETTINGS  # denied with no auth object
ROLE = "viewer"
# A live source that never blocks the encoder: when the pipeline cannot keep up, old data goes.
PIPELINE = ("( appsrc name=src is-live=true format=time do-timestamp=false block=false leaky-type=downstream "
            "max-bytes=4000000 caps=video/x-h264,stream-format=byte-stream,alignment=au "
            "! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 )")


def check_gstreamer() -> None:
    """Raise RuntimeError saying what is missing when the RTSP pipeline cannot be built here."""
    Gst.init(None)
    missing = [name for name in REQUIRED_ELEMENTS if Gst.ElementFactory.find(name) is None]
    if missing:
        raise RuntimeError(f"GStreamer lacks {', '.join(missing)} (apt install gstreamer1.0-plugins-base "
                           "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)")


@dataclass(frozen=True)
class ServerStats:
    """For ``/api/status``: connections, sessions (clients set up to watch), the port."""

    connections: int
    sessions: int
    port: int | None
    playing: int = 0  # sessions that have played: what keeps the encoder running
    refused: int = 0  # connections closed on accept, over a limit


def _offer_basic_and_digest(auth: GstRtspServer.RTSPAuth) -> None:
    """Make a 401 carry both challenges. ``set_supported_methods`` takes a bit mask in C, but the Python
    binding only lets one method through (the type is declared an enum), so the C function is called
    directly on the object. GStreamer accepts Basic credentials it knows whatever the mask says: the
    mask only decides which challenges a client is offered."""
    capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    capsule_pointer.restype = ctypes.c_void_p
    capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    library = ctypes.CDLL(ctypes.util.find_library("gstrtspserver-1.0") or "libgstrtspserver-1.0.so.0")
    library.gst_rtsp_auth_set_supported_methods.argtypes = [ctypes.c_void_p, ctypes.c_int]
    both = int(GstRtsp.RTSPAuthMethod.BASIC) | int(GstRtsp.RTSPAuthMethod.DIGEST)
    library.gst_rtsp_auth_set_supported_methods(capsule_pointer(auth.__gpointer__, None), both)


class _Gate(GstRtspServer.RTSPAuth):
    """Who may connect, and who may watch: always installed, since GStreamer asks its auth object
    about every new connection before it makes a client of it (``auth.check.connect``, on the
    ``rtsp`` thread), which is where the connection limits are cheapest to apply.

    With a login, our scrypt check and failure limit stand in front of GStreamer's own: GStreamer
    compares Basic credentials as the exact header text, so the first time a header arrives it is
    checked against the stored hash and, when right, added to GStreamer's table; later requests
    cost a table lookup. Digest needs the password itself, so it is offered only with
    ``password_file``. Without a login every check but the connect one passes, as with no auth object.
    """

    def __init__(self, admit: Callable[[str], bool], settings: AuthSettings, login: PasswordCheck | None,
                 password: str | None, limiter: FailureLimiter) -> None:
        super().__init__()
        self._admit = admit
        self._login = login
        self._limiter = limiter
        self._accepted: set[str] = set()
        self._lock = threading.Lock()  # clients' threads authenticate at once
        self._token = GstRtspServer.RTSPToken.new()
        self._token.set_string("media.factory.role", ROLE)
        if login is not None and password is not None and settings.username is not None:
            self.add_digest(settings.username, password, self._token)
            _offer_basic_and_digest(self)
        else:
            self.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
        self.set_realm(settings.realm)

    def do_check(self, ctx: Any, check: str) -> bool:
        if check == CHECK_CONNECT:
            return self._admit(ctx.conn.get_ip() if ctx.conn is not None else "unknown")
        if self._login is None:
            return check != CHECK_CLIENT_SETTINGS  # what GStreamer answers when it has no auth object
        return GstRtspServer.RTSPAuth.do_check(self, ctx, check)

    def do_authenticate(self, ctx: Any) -> bool:
        assert self._login is not None  # only asked through do_check's login branch
        address = ctx.conn.get_ip() if ctx.conn is not None else "unknown"
        if self._limiter.retry_after(address) is not None:
            log.warning("RTSP login from %s refused: too many failed logins", address)
            return False
        _, header = ctx.request.get_header(GstRtsp.RTSPHeaderField.AUTHORIZATION, 0)
        if header and header[:6].lower() == "basic ":
            encoded = header[6:].strip()
            credentials = basic_credentials(header)
            with self._lock:
                known = encoded in self._accepted
            # On this client's own thread: a slow check holds up this client alone.
            if not known and credentials is not None and self._login.check(*credentials):
                with self._lock:
                    if encoded not in self._accepted:
                        self._accepted.add(encoded)
                        self.add_basic(encoded, self._token)
        GstRtspServer.RTSPAuth.do_authenticate(self, ctx)  # looks the header up in its tables
        accepted = ctx.token is not None  # GStreamer's own answer is always "go on"; the token says who
        if not accepted and header:
            self._limiter.failed(address)
            log.warning("failed RTSP login from %s", address)
        return True


class RtspServer:
    """Owns the ``rtsp`` thread and GStreamer's server between ``start()`` and ``stop()``."""

    def __init__(self, settings: RtspSettings, host: str, feed: H264Feed, auth: AuthSettings,
                 login: PasswordCheck | None, password: str | None, limiter: FailureLimiter) -> None:
        self._settings = settings
        self._host = host
        self._feed = feed
        self._auth_settings = auth
        self._login = login
        self._password = password
        self._limiter = limiter  # the same one HTTP counts in: one failure limit per address
        self._context = GLib.MainContext.new()
        self._loop = GLib.MainLoop.new(self._context, False)
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._sources: list[Any] = []
        self._live = False
        self._peers: dict[str, int] = {}  # open connections per address
        self._refused = 0  # connections closed on accept: over a limit
        self._sessions: set[str] = set()  # ids of the sessions in GStreamer's pool
        self._playing: set[str] = set()  # of those, the ones that have played
        self._subscription: Subscription | None = None  # the shared media's, while there is one
        self._changes = threading.Condition(threading.RLock())  # notified at every connection and session change
        self._calls = threading.Condition()  # work handed to the loop is attached only while it runs
        self._open = False
        self._ended = False
        self.port: int | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on ``rtsp.port`` (raises OSError when it cannot) and run the loop on its thread."""
        Gst.init(None)
        server = GstRtspServer.RTSPServer()
        server.set_address(self._host)
        server.set_service(str(self._settings.port))
        server.set_backlog(16)
        threads = GstRtspServer.RTSPThreadPool()
        threads.set_max_threads(-1)  # a thread per client; the connection limits bound how many
        server.set_thread_pool(threads)
        pool = server.get_session_pool()
        pool.set_max_sessions(self._settings.max_clients)  # GStreamer answers 503 beyond it
        pool.connect("session-removed", self._session_removed)
        server.set_auth(_Gate(self._admit, self._auth_settings, self._login, self._password, self._limiter))
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(PIPELINE)
        factory.set_shared(True)
        factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP)
        factory.set_latency(0)
        if self._login is not None:
            permissions = GstRtspServer.RTSPPermissions()
            permissions.add_role_from_structure(Gst.Structure.new_from_string(
                f"{ROLE}, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"))
            factory.set_permissions(permissions)
        factory.connect("media-configure", self._media_configure)
        server.get_mount_points().add_factory(self._settings.path, factory)
        server.connect("client-connected", self._client_connected)
        source_id = server.attach(self._context)
        if not source_id:
            raise OSError(f"cannot listen for RTSP on {self._host}:{self._settings.port}")
        self._sources.append(self._context.find_source_by_id(source_id))
        watch = pool.create_watch()  # fires when a session has timed out
        watch.set_callback(lambda *_: self._expire(pool))
        watch.attach(self._context)
        self._sources.append(watch)
        self._server = server
        self.port = server.get_bound_port()
        self._thread = threading.Thread(target=self._run_loop, name="rtsp", daemon=True)
        with self._calls:
            self._open, self._ended = True, False
        self._thread.start()
        log.info("RTSP on rtsp://%s:%s%s (%s)", self._host, self.port, self._settings.path,
                 "login required" if self._login is not None else "no login")

    def stop(self, timeout: float = 1.0) -> None:
        """Close every client, stop listening, end the loop and its thread: within ``timeout`` in all,
        even with the loop stuck (its thread, a daemon, is then left to end on its own)."""
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout

        def shut() -> None:
            self._live = False
            self._close_clients()
            for source in self._sources:
                source.destroy()
            self._sources.clear()
            self._loop.quit()

        self._call(shut, timeout, last=True)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            log.warning("the RTSP thread did not end within %.1f s; left to end on its own", timeout)
        with self._changes:
            subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.close()
        self._thread = None

    def set_live(self, live: bool) -> None:
        """The camera is on (clients may watch) or off (every session is closed, new ones get 503).
        Returns at once: the closing is the loop's work, and is skipped if the camera is back on by then."""
        self._live = live
        if not live:
            self._call(lambda: None if self._live else self._close_clients(), 0)

    def health(self) -> str | None:
        """None while the loop runs as it should, else what is wrong with it."""
        thread = self._thread
        if thread is not None and not thread.is_alive():
            return "the RTSP server's thread is not running"
        return None

    def stats(self) -> ServerStats:
        # Our own counts: GStreamer's would take its locks, and it calls us back under them.
        with self._changes:
            return ServerStats(sum(self._peers.values()), len(self._sessions), self.port, len(self._playing),
                               self._refused)

    def wait_for(self, check: Callable[[ServerStats], bool], timeout: float) -> bool:
        """Block until ``check(stats())`` holds (re-checked at every connection or session change), or
        ``timeout``: for tests and benches."""
        with self._changes:
            return self._changes.wait_for(lambda: check(self.stats()), timeout)  # the lock is re-entrant

    # --- on the rtsp thread ----------------------------------------------------------------------

    def _call(self, work: Callable[[], None], timeout: float, last: bool = False) -> bool:
        """Run ``work`` on the loop's thread and wait for it (at most ``timeout``, and not past the
        loop's end); False, without waiting, when the loop is not running or stopping (``last``: this
        is what stops it)."""
        if threading.current_thread() is self._thread:
            work()
            return True
        done: list[bool] = []

        def run(*_: object) -> bool:
            try:
                work()
            finally:
                with self._calls:
                    done.append(True)
                    self._calls.notify_all()
            return False  # once

        with self._calls:
            if not self._open:
                return False
            self._open = not last
            self._attach(run)
            return self._calls.wait_for(lambda: done or self._ended, timeout)

    def _attach(self, callback: Callable[..., bool], delay: float | None = None, context: Any = None) -> Any:
        """Run ``callback`` on the loop's next turn (or after ``delay`` seconds; or on another loop's
        ``context``); it returns False to run once. The source is returned, so it can be destroyed
        before it runs."""
        source = GLib.idle_source_new() if delay is None else GLib.timeout_source_new(round(delay * 1000))
        source.set_callback(callback)
        source.attach(context or self._context)
        return source

    def _run_loop(self) -> None:
        try:
            self._loop.run()
        finally:
            with self._calls:
                self._ended = True  # work handed over too late will not run: its callers stop waiting
                self._calls.notify_all()

    def _close_clients(self) -> None:
        """End every session (a UDP client's outlives its connection), then every connection. In this
        order: removing a session unlinks its client from the media first, so no streaming thread is
        still writing to a connection while it is closed (GStreamer 1.22 can then spin on the dead
        socket)."""
        if self._server is not None:
            self._server.get_session_pool().filter(lambda *_: GstRtspServer.RTSPFilterResult.REMOVE)
            self._server.client_filter(lambda *_: GstRtspServer.RTSPFilterResult.REMOVE)

    def _admit(self, address: str) -> bool:
        """GStreamer asks before it makes a client of a new connection: over a limit, it closes it."""
        with self._changes:
            total = sum(self._peers.values())
            over = total >= self._settings.max_connections or \
                self._peers.get(address, 0) >= self._settings.max_connections_per_client
            if over:
                self._refused += 1
                refused = self._refused
        if over and (refused == 1 or refused % 100 == 0):  # a flood logs a line per hundred, not each
            log.warning("RTSP connection from %s refused: too many open (%d refused in all)", address, refused)
        return not over

    def _client_connected(self, _server: Any, client: Any) -> None:
        """On the loop's thread, right after ``_admit`` let the connection in."""
        address = client.get_connection().get_ip()
        client.peer = address
        with self._changes:
            self._peers[address] = self._peers.get(address, 0) + 1
            self._changes.notify_all()
        client.connect("closed", self._client_closed)
        client.connect("pre-describe-request", self._pre_request)
        client.connect("pre-setup-request", self._pre_request)
        client.connect("pre-play-request", self._pre_request)
        client.connect("play-request", self._play_request)
        client.connect("teardown-request", self._teardown_request)  # no closure over the client: it would
        # hold the client's wrapper, and so the client, for ever (and the media it described with it)
        client.connect("new-session", self._new_session)
        self._watch_request_time(client)

    def _teardown_request(self, client: Any, _ctx: Any) -> None:
        self._watch_request_time(client)

    def _watch_request_time(self, client: Any) -> None:
        """A connection must set up a session within ``rtsp.request_timeout`` of connecting (or of its
        last TEARDOWN), or it is closed: a connection that only DESCRIBEs, sends nothing or trickles
        its request otherwise holds a file and a thread for ever."""
        def expire(*_: object) -> bool:
            client.request_timer = None
            if not client.session_filter(None):
                log.info("RTSP connection from %s closed: no session after %.0f s", client.peer,
                         self._settings.request_timeout)
                client.close()
            return False  # once

        def rearm(*_: object) -> bool:
            old = getattr(client, "request_timer", None)
            if old is not None:
                old.destroy()
            # A timer refers to its client (and the client to it): none for a client already closed,
            # or it would hold the client, its socket with it, until the timer fires.
            client.request_timer = None if getattr(client, "gone", False) else \
                self._attach(expire, self._settings.request_timeout)
            return False  # once

        self._attach(rearm)  # timers live on the loop's thread, whichever thread the request came on

    def _client_closed(self, client: Any) -> None:
        client.gone = True
        timer = getattr(client, "request_timer", None)
        if timer is not None:
            timer.destroy()  # thread-safe in GLib; the timer holds the client otherwise
            client.request_timer = None
        with self._changes:
            address = getattr(client, "peer", None)
            left = self._peers.get(address, 0) - 1 if address is not None else 0
            if left > 0:
                self._peers[address] = left
            else:
                self._peers.pop(address, None)
            self._changes.notify_all()

    def _pre_request(self, _client: Any, _ctx: Any) -> Any:
        """DESCRIBE, SETUP and PLAY while the camera is off get 503 at once, not a pipeline waiting for
        frames."""
        return GstRtsp.RTSPStatusCode.OK if self._live else GstRtsp.RTSPStatusCode.SERVICE_UNAVAILABLE

    def _play_request(self, _client: Any, ctx: Any) -> None:
        """A PLAY is being answered: encoding runs (or goes on) for this session, and the client's
        picture should start with the next frame. Not before the answer has gone out, though: ffmpeg
        (inside Home Assistant, Frigate, go2rtc) throws away what arrives before it, and a keyframe lost
        that way leaves the client waiting for the next interval's. GStreamer sends the answer once
        this handler returns, so the keyframe is asked for from the next turn of this client's own
        loop (its thread's: our loop's next turn may come before the answer is out)."""
        session = ctx.session.get_sessionid() if ctx.session is not None else None

        def play(*_: object) -> bool:
            with self._changes:
                if session is not None and session in self._sessions:
                    self._playing.add(session)
                playing, subscription = bool(self._playing), self._subscription
                self._changes.notify_all()
            if subscription is not None:
                subscription.want(playing)
                subscription.request_keyframe()
            return False  # once

        current = GLib.main_current_source()
        self._attach(play, context=current.get_context() if current is not None else None)

    def _new_session(self, client: Any, session: Any) -> None:
        session.set_timeout(self._settings.session_timeout)
        client.had_session = True
        with self._changes:
            self._sessions.add(session.get_sessionid())
            self._changes.notify_all()

    def _expire(self, pool: Any) -> bool:
        """Sessions timed out (a client that stopped reading sends no keep-alive): remove them, and then
        their connections, rather than leave those waiting for a reuse that will not come. Only after
        a timeout: a client that ends its session itself (TEARDOWN) closes its own connection, and
        closing it from here at the same moment makes GStreamer 1.22 spin on the dead socket."""
        if pool.cleanup() > 0:
            self._attach(lambda *_: self._close_idle_clients())  # not from inside GStreamer's pool
        return True  # keep watching

    def _session_removed(self, _pool: Any, session: Any) -> None:
        with self._changes:
            session_id = session.get_sessionid()
            self._sessions.discard(session_id)
            self._playing.discard(session_id)
            playing, subscription = bool(self._playing), self._subscription
            self._changes.notify_all()
        if not playing and subscription is not None:
            subscription.want(False)  # the last player gone: the encoder rests, unless others want it

    def _close_idle_clients(self) -> bool:
        """Close connections that had a session and have none left."""
        def idle(_server: Any, client: Any, *_: object) -> Any:
            if getattr(client, "had_session", False) and not client.session_filter(None):
                return GstRtspServer.RTSPFilterResult.REMOVE
            return GstRtspServer.RTSPFilterResult.KEEP

        if self._server is not None:
            self._server.client_filter(idle)
        return False  # once

    def _media_configure(self, _factory: Any, media: Any) -> None:
        appsrc = media.get_element().get_by_name("src")
        subscription: Subscription | None = None

        def push(packet: Packet) -> None:
            """Stamp the access unit with its capture time on the pipeline's clock (GStreamer's system
            clock and ``time.monotonic`` are both CLOCK_MONOTONIC), so RTP timestamps say when each
            frame was taken, however long it took to encode. A frame that cannot be placed in time
            is dropped and a keyframe asked for instead (the media may not be described yet)."""
            if appsrc.get_clock() is None:  # not running yet
                if subscription is not None:
                    subscription.request_keyframe()
                return
            pts = round(packet.captured_at * Gst.SECOND) - appsrc.get_base_time()
            if pts < 0:  # taken before this media started
                if subscription is not None:
                    subscription.request_keyframe()
                return
            buffer = Gst.Buffer.new_wrapped(packet.data)
            buffer.pts = buffer.dts = pts
            appsrc.emit("push-buffer", buffer)

        def unprepared(*_: object) -> None:
            assert subscription is not None
            subscription.close()
            with self._changes:
                if self._subscription is subscription:  # a media ending late leaves the next one's alone
                    self._subscription = None

        subscription = self._feed.subscribe(push)
        with self._changes:
            self._subscription = subscription
        media.connect("unprepared", unprepared)
