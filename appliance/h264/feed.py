"""The one H.264 encode every consumer shares, on its own ``h264-encoder`` thread.

Consumers (the RTSP server's media today; recordings and the browser next) *subscribe*. A new
subscription first gets a keyframe (for RTSP, the one GStreamer describes the stream from) and then
nothing more until it *wants* frames (an RTSP client plays); the encoder runs while any subscription
wants frames or awaits its keyframe, and rests otherwise: a DESCRIBE costs one encoded frame, never a
running encoder. While nobody wants anything, ``wants_frame`` is false and the capture thread hands
over nothing. However many subscriptions there are, each frame is encoded once.

While the encoder runs, the capture thread offers a clean copy of a frame when one is due at
``rtsp.fps``; the encoder thread takes the newest (a frame it had no time for is replaced, never
queued), draws the overlay at its own size, encodes, and hands the access units to each subscription
that wants them. The encoder is opened afresh when the first subscription comes (so the stream starts
with a keyframe and its parameter sets) and let go when the last leaves; a subscription that joins a
running encoder asks for a keyframe instead.

Any exception in that work (the colour conversion, PyAV, the overlay, a consumer's push) is counted,
logged, and followed by a fresh encoder at the next frame: the thread never dies of one. If it dies
anyway, ``died`` says why, and the appliance's health (``/healthz``, the watchdog) turns bad.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from appliance.camera_backends.yuv import size_of
from appliance.capture.overlay import draw_overlay
from appliance.capture.video import VideoFrame
from appliance.config import OverlaySettings, RtspSettings
from appliance.h264.encoder import CLOCK, EncoderUnavailable, H264Encoder, H264Error, Packet

log = logging.getLogger(__name__)

Consumer = Callable[[Packet], None]
"""Takes each encoded access unit; called on the encoder thread, must not block."""


@dataclass(frozen=True)
class FeedStats:
    """For ``/api/status``: whether it encodes, how much, and how fast the bits flow."""

    active: bool  # a subscription wants frames: the encoder runs at its rate
    frames_encoded: int
    bytes_encoded: int
    bitrate: int  # bits/s over the last few seconds
    frame_age_ms: float | None  # capture to handed over, of the newest frame
    errors: int
    last_error: str | None
    subscriptions: int


def encode_size(settings: RtspSettings, default_size: tuple[int, int] | None,
                capture_size: tuple[int, int]) -> tuple[int, int]:
    """The size H.264 is encoded at: ``rtsp.size``, else the default (``stream.size``), else the
    picture as the camera delivers it, turned by ``camera.rotation``; even, as 4:2:0 needs."""
    width, height = settings.size or default_size or capture_size
    return width // 2 * 2, height // 2 * 2


def _dropped(_packet: Packet) -> None:
    """A closed subscription's consumer: takes nothing."""


class Subscription:
    """One consumer of the feed. ``want`` frames or not; ask for a keyframe; ``close`` when done.
    Every method is quick, never blocks, and may be called from any thread."""

    def __init__(self, feed: H264Feed, consumer: Consumer) -> None:
        self._feed = feed
        self.consumer = consumer
        self.wanting = False  # takes every frame (from a keyframe on)
        self.awaiting_key = True  # takes the next keyframe, wanting or not
        self.keyed = False  # a keyframe has reached it since it began wanting: its stream may go on

    def want(self, wanting: bool) -> None:
        """Frames from now on (the first a keyframe, so a picture starts at once), or no more."""
        self._feed._want(self, wanting)

    def request_keyframe(self) -> None:
        """The next frame is a keyframe and reaches this subscription, wanting or not (its consumer
        could not use the last one, or a new client starts)."""
        self._feed._request_keyframe(self)

    def close(self) -> None:
        """No more frames; the last subscription closed lets the encoder go. Safe to call twice."""
        self._feed._unsubscribe(self)

    @property
    def takes_frames(self) -> bool:
        return self.wanting or self.awaiting_key


class H264Feed:
    """A ``VideoSink`` for the capture thread; owns the encoder thread between ``start`` and ``stop``."""

    def __init__(self, codec: str, settings: RtspSettings, default_size: tuple[int, int] | None,
                 overlay: OverlaySettings, monotonic: Callable[[], float] = time.monotonic,
                 fallback: str | None = None) -> None:
        self.codec = codec
        self.fallback = fallback  # why the hardware encoder was passed over, when it was
        self._settings = settings
        self._default_size = default_size
        self._overlay = overlay
        self._monotonic = monotonic
        self._period = 1.0 / settings.fps
        self._cond = threading.Condition()
        self._subscriptions: list[Subscription] = []
        self._pending: VideoFrame | None = None
        self._due = 0.0
        self._fresh = True  # the next frame starts a new encoder
        self._keyframe = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._window: deque[tuple[float, int]] = deque()
        self.frames_encoded = 0
        self.bytes_encoded = 0
        self.errors = 0
        self.last_error: str | None = None
        self.died: str | None = None  # why the encoder thread ended by itself (a bug): health turns bad
        self._age: float | None = None

    # --- the capture thread (VideoSink) ----------------------------------------------------------

    def wants_frame(self, now: float) -> bool:
        return now >= self._due and any(sub.takes_frames for sub in self._subscriptions)

    def frame_size(self, capture_size: tuple[int, int]) -> tuple[int, int]:
        return encode_size(self._settings, self._default_size, capture_size)

    def offer(self, frame: VideoFrame) -> None:
        with self._cond:
            if not any(sub.takes_frames for sub in self._subscriptions):
                return
            # Keep the rate; after a stall (or at the start) count again from this frame, never catch up.
            now = frame.captured_at
            self._due = self._due + self._period if self._due > now - self._period else now + self._period
            self._pending = frame
            self._cond.notify_all()

    # --- consumers -------------------------------------------------------------------------------

    def subscribe(self, consumer: Consumer) -> Subscription:
        """A new consumer: it gets a keyframe, then frames only while it wants them."""
        subscription = Subscription(self, consumer)
        with self._cond:
            if not self._subscriptions:
                self._fresh, self._due = True, 0.0  # the first: a new encoder, a new stream
            self._keyframe = True
            self._subscriptions.append(subscription)
            self._cond.notify_all()
        log.info("H.264 encoder: a consumer subscribed (%d in all, %s)", len(self._subscriptions), self.codec)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        with self._cond:
            if subscription not in self._subscriptions:
                return
            self._subscriptions.remove(subscription)
            subscription.wanting = subscription.awaiting_key = False
            # Let the consumer go now: a consumer that refers back to its subscription (as the RTSP
            # media's push does) would otherwise hold GStreamer's objects until the cyclic collector runs.
            subscription.consumer = _dropped
            if not self._subscriptions:
                self._pending = None
            self._cond.notify_all()
        log.info("H.264 encoder: a consumer left (%d left)", len(self._subscriptions))

    def _want(self, subscription: Subscription, wanting: bool) -> None:
        with self._cond:
            if subscription not in self._subscriptions or wanting == subscription.wanting:
                return
            was = self.active
            subscription.wanting = wanting
            if wanting:  # its stream starts with the next frame, a keyframe
                subscription.keyed = False
                self._keyframe = True  # the rate goes on from what was encoded before: time never runs back
            self._cond.notify_all()
            now = self.active
        if now != was:
            log.info("H.264 encoding %s", "started" if now else "paused: nobody wants frames")

    def _request_keyframe(self, subscription: Subscription) -> None:
        with self._cond:
            if subscription in self._subscriptions:
                self._keyframe = subscription.awaiting_key = True
                self._cond.notify_all()

    @property
    def active(self) -> bool:
        """Whether a subscription wants frames: the encoder runs at its rate."""
        return any(sub.wanting for sub in self._subscriptions)

    @property
    def subscribed(self) -> int:
        return len(self._subscriptions)

    @property
    def idle(self) -> bool:
        """Whether no offered frame waits for the encoder thread."""
        return self._pending is None

    def wait_for(self, check: Callable[[H264Feed], bool], timeout: float) -> bool:
        """Block until ``check(self)`` holds (re-checked whenever the feed switches or encodes), or
        ``timeout``: for tests and benches."""
        with self._cond:
            return self._cond.wait_for(lambda: check(self), timeout)

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            self._stopping = False
            self.died = None
        self._thread = threading.Thread(target=self._main, name="h264-encoder", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """End the thread; one stuck inside an encoder is left behind (a daemon) after ``timeout``."""
        with self._cond:
            self._stopping, self._pending = True, None
            for subscription in self._subscriptions:
                subscription.wanting = subscription.awaiting_key = False
            self._subscriptions.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(max(0.0, timeout))
            if self._thread.is_alive():
                log.warning("the H.264 encoder did not end within %.1f s; left to end on its own", timeout)

    def health(self) -> str | None:
        """None while the encoder thread runs as it should, else what is wrong with it."""
        if self.died is not None:
            return f"the H.264 encoder thread died: {self.died}"
        thread = self._thread
        if thread is not None and not thread.is_alive() and not self._stopping:
            return "the H.264 encoder thread is not running"
        return None

    def stats(self) -> FeedStats:
        now = self._monotonic()
        with self._cond:
            self._trim(now)
            bits = sum(size for _, size in self._window) * 8
            span = max(1.0, now - self._window[0][0]) if self._window else 1.0
            return FeedStats(self.active, self.frames_encoded, self.bytes_encoded, round(bits / span),
                             None if self._age is None else round(self._age * 1000, 1), self.errors,
                             self.last_error, len(self._subscriptions))

    def _trim(self, now: float) -> None:
        while self._window and self._window[0][0] < now - 5.0:
            self._window.popleft()

    # --- the encoder thread ----------------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # a bug of ours: say so where health and status look
            self.died = f"{type(exc).__name__}: {exc}"
            log.critical("the H.264 encoder thread died", exc_info=True)
        finally:
            with self._cond:
                self._cond.notify_all()

    def _next(self) -> tuple[VideoFrame, bool, bool] | None:
        """Wait for the next offered frame; None once stopping."""
        with self._cond:
            self._cond.wait_for(lambda: self._stopping or self._pending is not None)
            if self._stopping:
                return None
            frame, self._pending = self._pending, None
            taken = (frame, self._fresh, self._keyframe)
            self._fresh = self._keyframe = False
            self._cond.notify_all()  # idle
        assert frame is not None
        return taken

    def _run(self) -> None:
        encoder: H264Encoder | None = None
        start_at = 0.0
        refused = False  # the encoder would not open: not again (nor its error in the log) at every frame
        while (taken := self._next()) is not None:
            frame, fresh, keyframe = taken
            if fresh:
                refused = False
            if refused:  # an encoder that would not open is tried again with the next first subscription
                continue
            size = size_of(frame.image)
            if fresh or encoder is None or encoder.size != size:
                if encoder is not None:
                    encoder.close()
                encoder = self._open(size)
                if encoder is None:
                    refused = True
                    continue
                start_at = frame.captured_at
            try:
                self._encode(encoder, frame, start_at, keyframe)
            except Exception as exc:  # whatever failed, the next frame gets a fresh encoder
                self._failed(exc)
                encoder.close()
                encoder = None
        if encoder is not None:
            encoder.close()

    def _encode(self, encoder: H264Encoder, frame: VideoFrame, start_at: float, keyframe: bool) -> None:
        draw_overlay(frame.image, frame.timestamp, frame.motion, self._overlay, scale=frame.scale, zones=frame.zones)
        packets = encoder.encode(frame.image, round((frame.captured_at - start_at) * CLOCK), keyframe,
                                 frame.captured_at)
        if frame.masks:
            packets = [replace(packet, masks=frame.masks) for packet in packets]
        now = self._monotonic()
        key = any(packet.keyframe for packet in packets)
        with self._cond:
            self.frames_encoded += 1
            for packet in packets:
                self.bytes_encoded += len(packet.data)
                self._window.append((now, len(packet.data)))
            self._trim(now)
            self._age = now - frame.captured_at
            # Who gets this frame: those that want frames, from a keyframe on, and those awaiting a
            # keyframe if it is one: a consumer's stream never starts in the middle of a group of pictures.
            receivers = [sub for sub in self._subscriptions
                         if (sub.wanting and (sub.keyed or key)) or (key and sub.awaiting_key)]
            if key:
                for subscription in receivers:
                    subscription.keyed, subscription.awaiting_key = True, False
            self._cond.notify_all()
        for subscription in receivers:
            for packet in packets:
                subscription.consumer(packet)

    def _failed(self, exc: Exception) -> None:
        with self._cond:
            self.errors += 1
            errors = self.errors
            first = self.last_error is None
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._cond.notify_all()
        if isinstance(exc, EncoderUnavailable):
            log.error("H.264 encoder: %s", exc)
        elif isinstance(exc, H264Error):
            log.warning("%s; opening a new encoder", exc)
        elif first or errors % 100 == 0:  # a bug: its trace once, then a line every hundred
            log.error("H.264 encoding failed (%d in all); opening a new encoder", errors, exc_info=exc)

    def _open(self, size: tuple[int, int]) -> H264Encoder | None:
        try:
            return H264Encoder(self.codec, size, self._settings)
        except EncoderUnavailable as exc:
            self._failed(exc)
            return None
