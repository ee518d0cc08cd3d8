"""Browser viewers of the H.264 feed: one subscription for all of them, one thread writing to all.

While any viewer is there, ``H264Viewers`` holds one subscription to the feed (the encoder runs for
it as for an RTSP client; with no viewer it does not run for them). The encoder thread hands each
access unit to ``_on_packet``, which makes its MP4 fragment once and offers the same bytes to every
viewer's ``Outbox`` (a few list operations under a lock: the encoder never waits for a socket).
The ``h264-viewers`` thread writes the outboxes to the sockets without blocking, and watches each
socket for reading, so a closed tab is gone at once.

A viewer starts with the init segment and a keyframe: joining a running feed asks it for one, so a
picture comes within a frame, not a keyframe interval. The media timeline counts 90 kHz ticks of
capture time from the session's origin, whose wall-clock time the response's ``X-Media-Epoch``
header gives: the page knows when each frame it shows was captured. Each fragment lasts the nominal
frame period, so the timeline has no gaps while the camera keeps its rate.

Every viewer is dropped when the camera goes off (the page sees its response end), when it takes
nothing for ``stall_timeout`` seconds, or when no keyframe reached it within ``first_frame_timeout``.
An outbox holds about half a second of video at ``rtsp.bitrate``, and each socket's kernel buffer is
set to as much: about a second in all waits for a slow viewer, so falling behind shows as a skip
forward, never as a growing delay.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.h264 import fmp4
from appliance.h264.encoder import Packet
from appliance.h264.feed import H264Feed, Subscription
from appliance.mse.outbox import Outbox
from appliance.state import CameraState, StateChange

log = logging.getLogger(__name__)

_MAX_CLIENT_BYTES = 65536  # a viewer has nothing to say after its request; one that talks is dropped
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
MIN_OUTBOX = 64 * 1024  # bytes: room for a keyframe at low bitrates


class TooManyH264Viewers(Exception):
    """``stream.max_h264_viewers`` are watching."""


class CameraOff(LookupError):
    """The camera is not on: there is nothing to watch."""


@dataclass(eq=False)
class Viewer:
    """One browser's H.264 stream: reserved by the request, attached once its headers went out."""

    outbox: Outbox
    reserved_at: float
    epoch: float  # wall-clock time of the media timeline's zero (the X-Media-Epoch header)
    sock: socket.socket | None = None
    on_close: Callable[[], None] | None = None
    last_progress: float = 0.0
    ending: str | None = None  # why it is to be closed by the writer thread
    writing: bool = False  # registered for EVENT_WRITE too
    received: int = 0


@dataclass
class _Session:
    """One run of the subscription, from the first viewer to the last."""

    subscription: Subscription | None
    origin: float  # monotonic time of tick 0 on the media timeline
    epoch: float  # its wall-clock time
    init: fmp4.InitSegment | None = None
    sequence: int = 0
    last_decode: int = -1
    viewers: list[Viewer] = field(default_factory=list)


@dataclass(frozen=True)
class ViewerStats:
    viewers: int
    max_viewers: int
    bytes_sent: int
    fragments: int
    skipped: int  # fragments lost by viewers that fell behind
    fell_behind: int
    dropped: int  # viewers dropped for taking nothing, or no keyframe in time
    refused: int  # viewers turned away at the limit


class H264Viewers:
    """The browsers watching the H.264 feed; ``start``/``stop`` own the writer thread."""

    def __init__(self, feed: H264Feed, max_viewers: int, fps: float, bitrate: int, stall_timeout: float,
                 first_frame_timeout: float, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self._feed = feed
        self.max_viewers = max_viewers
        self._duration = max(1, round(fmp4.TIMESCALE / fps))
        self.outbox_limit = max(MIN_OUTBOX, bitrate // 16)  # about half a second of video
        self._stall_timeout = stall_timeout
        self._first_frame_timeout = first_frame_timeout
        self._monotonic = monotonic
        self._wall = wall
        self._lock = threading.Condition()
        self._session: _Session | None = None
        self._camera_on: Callable[[], bool] = lambda: False
        self._stopping = False
        self._selector = selectors.DefaultSelector()
        self._wake_recv, self._wake_send = socket.socketpair()
        self._wake_recv.setblocking(False)
        self._wake_send.setblocking(False)
        self._selector.register(self._wake_recv, selectors.EVENT_READ, None)
        self._registered: set[Viewer] = set()  # the writer thread's own
        self._thread: threading.Thread | None = None
        self._counts = {"bytes_sent": 0, "fragments": 0, "skipped": 0, "fell_behind": 0, "dropped": 0,
                        "refused": 0}

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self, camera_on: Callable[[], bool]) -> None:
        """Start the writer. ``camera_on`` is the controller's own reading, asked at each new viewer:
        a page told "on" by the live feed may ask before this object's listener has heard it."""
        self._camera_on = camera_on
        self._thread = threading.Thread(target=self._run, name="h264-viewers", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """End every stream and join the thread."""
        with self._lock:
            self._stopping = True
            self._end_all("the appliance is stopping")
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the H.264 viewers' writer did not stop within %.1f s", timeout)
            self._thread = None
        with self._lock:
            session, self._session = self._session, None
        if session is not None and session.subscription is not None:
            session.subscription.close()
        self._selector.close()
        self._wake_recv.close()
        self._wake_send.close()

    def on_state(self, change: StateChange) -> None:
        """A state listener: streams exist only while the camera is on; its going off ends them."""
        if change.state is CameraState.ON:
            return
        with self._lock:
            self._end_all("the camera went off")
        self._wake()

    # --- viewers (the request's thread) ------------------------------------------------------------

    def reserve(self) -> Viewer:
        """A place for a new viewer, subscribing to the feed if it is the first; raises ``CameraOff``
        or ``TooManyH264Viewers``. Its ``epoch`` goes into the response's headers."""
        with self._lock:
            if self._stopping or not self._camera_on():
                raise CameraOff("the camera is off")
            session = self._session
            if session is not None and len(session.viewers) >= self.max_viewers:
                self._counts["refused"] += 1
                raise TooManyH264Viewers(f"H.264 viewer limit of {self.max_viewers} reached")
            now = self._monotonic()
            if session is None:
                # Tick 0 a second back: a frame captured just before the subscription still fits.
                session = self._session = _Session(None, now - 1.0, self._wall() - 1.0)
                session.subscription = self._feed.subscribe(lambda packet, run=session: self._on_packet(run, packet))
                session.subscription.want(True)  # its first frame is a keyframe
            else:
                assert session.subscription is not None
                session.subscription.request_keyframe()
            viewer = Viewer(Outbox(self.outbox_limit), now, session.epoch, last_progress=now)
            session.viewers.append(viewer)
            self._lock.notify_all()
        log.info("H.264 viewer joined (%d watching)", len(session.viewers))
        return viewer

    def attach(self, viewer: Viewer, sock: socket.socket, on_close: Callable[[], None]) -> None:
        """Take over the viewer's socket, its response headers sent; ``on_close`` runs once at its end
        (at once, here, when the viewer was let go meanwhile: the camera went off, the appliance stops)."""
        with contextlib.suppress(OSError):  # Linux doubles it (its own bookkeeping): about the outbox's size
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.outbox_limit // 2)
        sock.setblocking(False)
        with self._lock:
            session = self._session
            kept = session is not None and viewer in session.viewers and not self._stopping
            if kept:
                viewer.sock, viewer.on_close = sock, on_close
        if not kept:
            on_close()
            with contextlib.suppress(OSError):
                sock.close()
            return
        self._wake()

    def release(self, viewer: Viewer) -> None:
        """A viewer whose headers could not be sent gives its place back."""
        with self._lock:
            viewer.ending = "it left before its stream began"
            self._forget(viewer)
        self._wake()

    @property
    def viewers(self) -> int:
        with self._lock:
            return len(self._session.viewers) if self._session is not None else 0

    def stats(self) -> ViewerStats:
        """Counts since start-up, of the viewers watching now too."""
        with self._lock:
            watching = self._session.viewers if self._session is not None else []
            counts = dict(self._counts)
            counts["fragments"] += sum(viewer.outbox.fragments for viewer in watching)
            counts["skipped"] += sum(viewer.outbox.skipped for viewer in watching)
            counts["fell_behind"] += sum(viewer.outbox.behind for viewer in watching)
            return ViewerStats(len(watching), self.max_viewers, **counts)

    def wait_for(self, check: Callable[[H264Viewers], bool], timeout: float) -> bool:
        """Block until ``check(self)`` holds, re-checked as viewers come, go and get fragments: tests."""
        with self._lock:
            return self._lock.wait_for(lambda: check(self), timeout)

    # --- the encoder thread -----------------------------------------------------------------------

    def _on_packet(self, session: _Session, packet: Packet) -> None:
        with self._lock:
            if session is not self._session:
                return  # a packet for a session that has ended
            if packet.keyframe:
                found = fmp4.parameter_sets(packet.data)
                if found is not None and (session.init is None or session.init.parameter_sets != found
                                          or session.init.size != packet.size):
                    session.init = fmp4.init_segment(*found, packet.size)
                    log.info("H.264 viewers: %s at %dx%d", session.init.codec, *packet.size)
            if session.init is None:
                return  # no parameter sets yet: nothing a browser can start from
            decode = max(round((packet.captured_at - session.origin) * fmp4.TIMESCALE), session.last_decode + 1, 0)
            session.last_decode = decode
            session.sequence += 1
            data = fmp4.fragment(session.sequence, decode, self._duration, packet.keyframe, packet.data)
            for viewer in session.viewers:
                if viewer.ending is None:
                    viewer.outbox.offer(session.init.data, data, packet.keyframe)
            self._lock.notify_all()
        self._wake()

    # --- the writer thread ------------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full: a wake-up is pending already; closed: stopping
            self._wake_send.send(b"\0")

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    if self._stopping and not self._registered and not self._waiting_sockets():
                        break
                for key, mask in self._selector.select(self._next_timeout()):
                    viewer = key.data
                    if viewer is None:
                        self._drain_wakes()
                    elif mask & selectors.EVENT_READ:
                        self._read(viewer)
                self._serve(self._monotonic())
        except Exception:
            log.exception("the H.264 viewers' writer failed; ending every stream")
            with self._lock:
                self._end_all("the writer failed")
            self._serve(self._monotonic())

    def _waiting_sockets(self) -> bool:
        session = self._session
        return session is not None and any(viewer.sock is not None for viewer in session.viewers)

    def _drain_wakes(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_recv.recv(4096):
                pass

    def _next_timeout(self) -> float | None:
        """Until the soonest deadline: a stall, or a first keyframe that has not come."""
        with self._lock:
            session = self._session
            if session is None or not session.viewers:
                return None
            soonest = min((self._deadline(viewer) for viewer in session.viewers), default=float("inf"))
        return None if soonest == float("inf") else max(0.0, soonest - self._monotonic())

    def _deadline(self, viewer: Viewer) -> float:
        if not viewer.outbox.started:
            return viewer.reserved_at + self._first_frame_timeout
        if viewer.outbox.queued:
            return viewer.last_progress + self._stall_timeout
        return float("inf")

    def _serve(self, now: float) -> None:
        """Register arrivals, write what each viewer has waiting, close those that are to end."""
        with self._lock:
            session = self._session
            viewers = list(session.viewers) if session is not None else []
        for viewer in viewers:
            if viewer.sock is None:  # its headers are still going out (or never will)
                if now >= viewer.reserved_at + self._first_frame_timeout:
                    with self._lock:
                        self._forget(viewer)
                continue
            if viewer.ending is None and viewer not in self._registered:
                try:
                    self._selector.register(viewer.sock, selectors.EVENT_READ, viewer)
                    self._registered.add(viewer)
                except (OSError, ValueError):
                    self._end(viewer, "its socket was gone")
            if viewer.ending is None:
                self._flush(viewer, now)
            if viewer.ending is None and now >= self._deadline(viewer):
                self._end(viewer, f"it took nothing for {self._stall_timeout:g} s" if viewer.outbox.started
                          else f"no keyframe reached it within {self._first_frame_timeout:g} s")
                with self._lock:
                    self._counts["dropped"] += 1
            if viewer.ending is not None:
                self._close(viewer)

    def _flush(self, viewer: Viewer, now: float) -> None:
        """Write what the socket takes now; watch it for writing while anything is left. Each send
        is made under the lock (it never blocks): the encoder's side may drop what is not begun."""
        assert viewer.sock is not None
        sent = 0
        with self._lock:
            try:
                while (pending := viewer.outbox.pending()) is not None:
                    count = viewer.sock.send(pending)
                    viewer.outbox.sent(count)
                    sent += count
                    if count < len(pending):
                        break
            except _WOULD_BLOCK:
                pass
            except OSError:
                viewer.ending = viewer.ending or "it went away"
                return
            self._counts["bytes_sent"] += sent
            left = viewer.outbox.queued > 0
        if sent:
            viewer.last_progress = now
        self._want_write(viewer, left)

    def _want_write(self, viewer: Viewer, writing: bool) -> None:
        if viewer.writing != writing and viewer in self._registered and viewer.sock is not None:
            viewer.writing = writing
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if writing else 0)
            self._selector.modify(viewer.sock, events, viewer)

    def _read(self, viewer: Viewer) -> None:
        """A viewer sends nothing after its request: what arrives is a close, or is thrown away."""
        if viewer.sock is None:
            return
        try:
            data = viewer.sock.recv(4096)
        except _WOULD_BLOCK:
            return
        except OSError:
            self._end(viewer, "it went away")
            return
        viewer.received += len(data)
        if not data:
            self._end(viewer, "it closed the connection")
        elif viewer.received > _MAX_CLIENT_BYTES:
            self._end(viewer, "it kept sending")

    def _end(self, viewer: Viewer, why: str) -> None:
        with self._lock:
            viewer.ending = viewer.ending or why

    def _end_all(self, why: str) -> None:
        """Mark every viewer to be closed (the lock held); the writer thread closes them."""
        if self._session is not None:
            for viewer in self._session.viewers:
                viewer.ending = viewer.ending or why

    def _close(self, viewer: Viewer) -> None:
        """Close one stream on the writer thread: its place and connection count go back first."""
        sock = viewer.sock
        if viewer in self._registered:
            self._registered.discard(viewer)
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(sock)
        with self._lock:
            self._forget(viewer)
        log.info("H.264 viewer left: %s (%d bytes, %d fragments, %d skipped)", viewer.ending,
                 viewer.outbox.sent_bytes, viewer.outbox.fragments, viewer.outbox.skipped)
        if viewer.on_close is not None:
            try:
                viewer.on_close()
            except Exception:
                log.exception("error while giving a closed H.264 stream's connection back")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        viewer.sock = None

    def _forget(self, viewer: Viewer) -> None:
        """Take the viewer off the session (the lock held); the last one ends the subscription."""
        session = self._session
        if session is None or viewer not in session.viewers:
            return
        session.viewers.remove(viewer)
        self._counts["fragments"] += viewer.outbox.fragments
        self._counts["skipped"] += viewer.outbox.skipped
        self._counts["fell_behind"] += viewer.outbox.behind
        if not session.viewers:
            self._session = None
            if session.subscription is not None:
                session.subscription.close()  # quick; the feed's lock is never held while it calls us
        self._lock.notify_all()

    def describe(self) -> dict[str, Any]:
        """For ``/api/status``."""
        stats = self.stats()
        return {"enabled": True, "viewers": stats.viewers, "max_viewers": stats.max_viewers,
                "bytes_sent": stats.bytes_sent, "fragments": stats.fragments, "skipped": stats.skipped,
                "fell_behind": stats.fell_behind, "dropped": stats.dropped, "refused": stats.refused}
