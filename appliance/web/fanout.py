"""One thread writes every viewer's MJPEG stream.

A thread per viewer, each waking for each frame to push one part through the WSGI layer, cost about
ten times more than writing the part itself: with sixteen viewers at 30 frames/s that is 480 thread
wake-ups a second, most of the appliance's CPU. Here the HTTP server hands a stream's socket over
once its response headers are written, and one thread, woken once per published frame, writes the
same part (built once per frame, never copied per viewer) to every viewer that is due, without
blocking: a viewer whose socket is full keeps its unsent rest and skips the frames that come
meanwhile, so a slow phone never delays the others, and one that takes none for
``stall_timeout`` seconds is dropped. Each socket is also watched for reading, so a viewer that
closes its tab is gone at once rather than at the next frame.
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
from dataclasses import dataclass
from functools import lru_cache

from appliance.capture.broadcaster import FrameBroadcaster, ViewerSlot

log = logging.getLogger(__name__)

BOUNDARY = "frame"
STREAM_SLOT = "appliance.stream_slot"
"""WSGI environ key: the stream view puts the viewer's slot here; the server's gateway, having sent the
headers, hands the socket and the slot to the writer."""
CAN_HAND_OFF = "appliance.can_hand_off"
"""WSGI environ key the appliance's server sets: it can take a stream over after its headers."""
STREAM_HANDOFF = "appliance.stream_handoff"
"""WSGI environ key for any other long stream (the H.264 view): a ``HandOff`` that takes the socket."""


@dataclass(frozen=True)
class HandOff:
    """Who takes a stream's socket once the server has sent its headers: ``attach(sock, on_close)``
    (``on_close`` gives the connection's count back, once), or ``release()`` when they could not be sent."""

    attach: Callable[[socket.socket, Callable[[], None]], None]
    release: Callable[[], None]
_MAX_CLIENT_BYTES = 65536  # a viewer has nothing to say after its request; one that talks is dropped
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


@lru_cache(maxsize=4)
def part_for(jpeg: bytes, taken: float | None = None) -> bytes:
    """One multipart part around ``jpeg``, built once per frame (a bytes object keeps its hash, so
    finding it again costs nothing). ``X-Timestamp`` is the frame's capture time (Unix seconds, as
    µStreamer sends it): a client can tell how old the picture is when it arrives."""
    stamp = "" if taken is None else f"X-Timestamp: {taken:.6f}\r\n"
    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n{stamp}\r\n"
    return head.encode("ascii") + jpeg + b"\r\n"


@dataclass(eq=False)
class _Viewer:
    sock: socket.socket
    slot: ViewerSlot
    on_close: Callable[[], None]
    seq: int = 0  # the newest frame this viewer has been given
    sent_at: float = 0.0  # when that part was started (the keep-alive counts from here)
    pending: memoryview | None = None  # what is left of the part being written
    pending_since: float = 0.0
    received: int = 0
    writing: bool = False  # registered for EVENT_WRITE too


class StreamFanout:
    """Writes the broadcaster's newest frame to every attached viewer from one thread."""

    def __init__(self, broadcaster: FrameBroadcaster, keepalive: float, stall_timeout: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._broadcaster = broadcaster
        self._keepalive = keepalive
        self._stall_timeout = stall_timeout
        self._monotonic = monotonic
        self._selector = selectors.DefaultSelector()
        self._wake_recv, self._wake_send = socket.socketpair()
        self._wake_recv.setblocking(False)
        self._wake_send.setblocking(False)
        self._selector.register(self._wake_recv, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._arriving: list[_Viewer] = []
        self._viewers: set[_Viewer] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        broadcaster.add_waker(self._wake)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stream-fanout", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """End every stream and join the thread."""
        self._stopping.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the stream writer did not stop within %.1f s", timeout)
            self._thread = None
        else:
            self._close_all()
        self._broadcaster.remove_waker(self._wake)
        self._selector.close()
        self._wake_recv.close()
        self._wake_send.close()

    def attach(self, sock: socket.socket, slot: ViewerSlot, on_close: Callable[[], None]) -> None:
        """Take over a viewer's socket, its response headers already sent; ``on_close`` runs once when
        the stream ends, whatever ends it."""
        sock.setblocking(False)
        viewer = _Viewer(sock, slot, on_close)
        with self._lock:
            if not self._stopping.is_set():
                self._arriving.append(viewer)
                viewer = None  # type: ignore[assignment]
        if viewer is not None:
            self._close(viewer)
        self._wake()

    def release(self, slot: ViewerSlot) -> None:
        """A stream that never reached ``attach`` (its headers could not be sent) gives its slot back."""
        self._broadcaster.remove_viewer(slot)

    # --- the writer thread ------------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full: a wake-up is already pending; closed: we are stopping
            self._wake_send.send(b"\0")

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                for key, mask in self._selector.select(self._next_timeout()):
                    viewer = key.data
                    if viewer is None:
                        self._drain_wakes()
                        continue
                    if mask & selectors.EVENT_READ:
                        self._read(viewer)
                    if mask & selectors.EVENT_WRITE and viewer in self._viewers:
                        self._flush(viewer)
                self._take_arrivals()
                self._serve(self._monotonic())
        except Exception:
            log.exception("the stream writer failed; ending every stream")
        finally:
            self._close_all()

    def _drain_wakes(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_recv.recv(4096):
                pass

    def _take_arrivals(self) -> None:
        with self._lock:
            arriving, self._arriving = self._arriving, []
        for viewer in arriving:
            try:
                self._selector.register(viewer.sock, selectors.EVENT_READ, viewer)
            except (OSError, ValueError):
                self._close(viewer)
                continue
            self._viewers.add(viewer)

    def _next_timeout(self) -> float | None:
        """Until the next thing that is due without a wake-up: a rate-limited viewer's next frame, a
        keep-alive, or a stalled viewer's deadline. None (sleep until woken) with nobody attached."""
        if not self._viewers:
            return None
        now = self._monotonic()
        newest = self._broadcaster.newest_seq
        soonest = float("inf")
        for viewer in self._viewers:
            if viewer.pending is not None:
                soonest = min(soonest, viewer.pending_since + self._stall_timeout)
                continue
            soonest = min(soonest, viewer.sent_at + self._keepalive)
            if newest != viewer.seq:
                soonest = min(soonest, viewer.slot.due)
        return max(0.0, soonest - now)

    def _serve(self, now: float) -> None:
        """Start the newest frame on every viewer that is due, the same one again as a keep-alive, and
        drop viewers of an ended camera run or that stopped reading."""
        current = self._broadcaster.current()
        for viewer in list(self._viewers):
            if current is None or viewer.slot.generation != current.generation:
                self._close(viewer)  # the camera went off (or restarted): the stream ends
                continue
            if viewer.pending is not None:
                if now - viewer.pending_since >= self._stall_timeout:
                    log.info("dropping a viewer that took no data for %.0f s", self._stall_timeout)
                    self._close(viewer)
                continue
            if current.jpeg is None:
                continue
            fresh = current.seq != viewer.seq and now >= viewer.slot.due
            if fresh or now - viewer.sent_at >= self._keepalive:
                viewer.seq, viewer.sent_at = current.seq, now
                viewer.pending, viewer.pending_since = memoryview(part_for(current.jpeg, current.taken)), now
                self._broadcaster.sent(viewer.slot)
                self._flush(viewer)

    def _flush(self, viewer: _Viewer) -> None:
        """Write as much of the pending part as the socket takes now."""
        pending = viewer.pending
        try:
            while pending:
                pending = pending[viewer.sock.send(pending):]
        except _WOULD_BLOCK:
            viewer.pending = pending
            self._want_write(viewer, True)
            return
        except OSError:
            self._close(viewer)  # the viewer went away
            return
        viewer.pending = None
        if viewer.writing:
            self._want_write(viewer, False)

    def _want_write(self, viewer: _Viewer, writing: bool) -> None:
        if viewer.writing != writing:
            viewer.writing = writing
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if writing else 0)
            self._selector.modify(viewer.sock, events, viewer)

    def _read(self, viewer: _Viewer) -> None:
        """A viewer sends nothing after its request: what arrives is a close, or is thrown away."""
        try:
            data = viewer.sock.recv(4096)
        except _WOULD_BLOCK:
            return
        except OSError:
            self._close(viewer)
            return
        viewer.received += len(data)
        if not data or viewer.received > _MAX_CLIENT_BYTES:
            self._close(viewer)

    def _close(self, viewer: _Viewer) -> None:
        """End one stream: its slot and connection count are given back before the viewer sees the
        close, so a client that reconnects at once finds its place free."""
        if viewer in self._viewers:
            self._viewers.discard(viewer)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(viewer.sock)
        self._broadcaster.remove_viewer(viewer.slot)
        try:
            viewer.on_close()
        except Exception:
            log.exception("error while giving a closed stream's connection back")
        with contextlib.suppress(OSError):
            viewer.sock.close()

    def _close_all(self) -> None:
        with self._lock:
            arriving, self._arriving = self._arriving, []
        for viewer in [*self._viewers, *arriving]:
            self._close(viewer)
