"""The one H.264 encode every RTSP client shares, on its own ``h264-encoder`` thread.

The RTSP server attaches the feed when its shared media is built (``activate``) and detaches it when
that media ends (``deactivate``). Attached, the feed *primes*: it encodes until one keyframe has gone
out, which is what GStreamer needs to describe the stream (its SDP is made from the parameter sets),
and then takes no more frames until a client actually plays (``set_playing``). So a DESCRIBE costs one
encoded frame, never a running encoder, and only PLAYing clients keep the encoder busy. While the feed
wants nothing, ``wants_frame`` is false and the capture thread hands over nothing.

While it does, the capture thread offers a clean copy of a frame when one is due at ``rtsp.fps``; the
encoder thread takes the newest (a frame it had no time for is replaced, never queued), draws the
overlay at its own size, encodes, and gives the access units to the server. Each attach opens a fresh
encoder, so the stream starts with a keyframe and its parameter sets.

Any exception in that work (the colour conversion, PyAV, the overlay, the server's push) is counted,
logged, and followed by a fresh encoder at the next frame: the thread never dies of one. If it dies
anyway, ``died`` says why, and the appliance's health (``/healthz``, the watchdog) turns bad.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from appliance.capture.overlay import draw_overlay
from appliance.capture.video import VideoFrame
from appliance.config import OverlaySettings, RtspSettings
from appliance.rtsp.h264 import CLOCK, EncoderUnavailable, H264Encoder, H264Error, Packet

log = logging.getLogger(__name__)

Consumer = Callable[[Packet], None]
"""Takes each encoded access unit; called on the encoder thread, must not block."""


@dataclass(frozen=True)
class FeedStats:
    """For ``/api/status``: whether it encodes, how much, and how fast the bits flow."""

    active: bool
    frames_encoded: int
    bytes_encoded: int
    bitrate: int  # bits/s over the last few seconds
    frame_age_ms: float | None  # capture to handed over, of the newest frame
    errors: int
    last_error: str | None
    playing: bool  # a client plays: frames are encoded at the full rate


class H264Feed:
    """A ``VideoSink`` for the capture thread; owns the encoder thread between ``start`` and ``stop``."""

    def __init__(self, codec: str, settings: RtspSettings, default_size: tuple[int, int] | None,
                 overlay: OverlaySettings, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.codec = codec
        self._settings = settings
        self._default_size = default_size
        self._overlay = overlay
        self._monotonic = monotonic
        self._period = 1.0 / settings.fps
        self._cond = threading.Condition()
        self._consumer: Consumer | None = None
        self._playing = False  # a client plays: encode at the rate
        self._priming = False  # attached, not played yet: encode until one keyframe is out
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
        return (self._playing or self._priming) and self._consumer is not None and now >= self._due

    def frame_size(self, capture_size: tuple[int, int]) -> tuple[int, int]:
        width, height = self._settings.size or self._default_size or capture_size
        return width // 2 * 2, height // 2 * 2  # 4:2:0 needs even sizes

    def offer(self, frame: VideoFrame) -> None:
        with self._cond:
            if self._consumer is None or not (self._playing or self._priming):
                return
            # Keep the rate; after a stall (or at the start) count again from this frame, never catch up.
            now = frame.captured_at
            self._due = self._due + self._period if self._due > now - self._period else now + self._period
            self._pending = frame
            self._cond.notify_all()

    # --- the RTSP server's thread ----------------------------------------------------------------

    def activate(self, consumer: Consumer) -> None:
        """The shared media is being built: a fresh encoder feeds ``consumer``, first with the one
        keyframe that describes the stream, then only while a client plays."""
        with self._cond:
            self._consumer, self._fresh, self._due, self._priming = consumer, True, 0.0, True
            self._cond.notify_all()
        log.info("H.264 encoder attached (%s)", self.codec)

    def set_playing(self, playing: bool) -> None:
        """Whether any client plays. From not playing to playing the next frame is a keyframe, so the
        first client's picture starts at once."""
        with self._cond:
            if playing and not self._playing:
                self._keyframe = True  # the rate goes on from the primed frames: time never runs back
            changed = playing != self._playing
            self._playing = playing
            self._cond.notify_all()
        if changed:
            log.info("H.264 encoding %s", "started: a client plays" if playing else "paused: no client plays")

    def deactivate(self, consumer: Consumer | None = None) -> None:
        """The shared media ended: no more frames, no more encodes. With ``consumer``, only if that is
        still the one fed (a media ending late must not stop the next one's feed)."""
        with self._cond:
            if consumer is not None and consumer != self._consumer:
                return
            was = self._consumer is not None
            self._consumer, self._pending, self._priming, self._playing = None, None, False, False
            self._cond.notify_all()
        if was:
            log.info("H.264 encoder detached: the stream ended")

    def request_keyframe(self) -> None:
        """A client starts playing, or the consumer could not use the last keyframe: make the next
        frame a keyframe, so a picture starts at once. While nobody plays, this primes again: one more
        frame is encoded, for the keyframe alone."""
        with self._cond:
            self._keyframe = True
            if self._consumer is not None and not self._playing:
                self._priming = True

    @property
    def active(self) -> bool:
        """Whether frames are being encoded for a playing client."""
        return self._playing and self._consumer is not None

    @property
    def attached(self) -> bool:
        return self._consumer is not None

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
            self._stopping, self._consumer, self._pending, self._priming, self._playing = True, None, None, False, False
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
                             self.last_error, self._playing)

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

    def _next(self) -> tuple[VideoFrame, Consumer | None, bool, bool] | None:
        """Wait for the next offered frame; None once stopping."""
        with self._cond:
            self._cond.wait_for(lambda: self._stopping or self._pending is not None)
            if self._stopping:
                return None
            frame, self._pending = self._pending, None
            taken = (frame, self._consumer, self._fresh, self._keyframe)
            self._fresh = self._keyframe = False
            self._cond.notify_all()  # idle
        assert frame is not None
        return taken

    def _run(self) -> None:
        encoder: H264Encoder | None = None
        start_at = 0.0
        refused = False  # the encoder would not open: not again (nor its error in the log) at every frame
        while (taken := self._next()) is not None:
            frame, consumer, fresh, keyframe = taken
            if fresh:
                refused = False
            if consumer is None or refused:  # an encoder that would not open is tried again next start
                continue
            size = (frame.image.shape[1], frame.image.shape[0])
            if fresh or encoder is None or encoder.size != size:
                if encoder is not None:
                    encoder.close()
                encoder = self._open(size)
                if encoder is None:
                    refused = True
                    continue
                start_at = frame.captured_at
            try:
                self._encode(encoder, frame, consumer, start_at, keyframe)
            except Exception as exc:  # whatever failed, the next frame gets a fresh encoder
                self._failed(exc)
                encoder.close()
                encoder = None
        if encoder is not None:
            encoder.close()

    def _encode(self, encoder: H264Encoder, frame: VideoFrame, consumer: Consumer, start_at: float,
                keyframe: bool) -> None:
        draw_overlay(frame.image, frame.timestamp, frame.motion, self._overlay, scale=frame.scale, zones=frame.zones)
        packets = encoder.encode(frame.image, round((frame.captured_at - start_at) * CLOCK), keyframe,
                                 frame.captured_at)
        now = self._monotonic()
        with self._cond:
            self.frames_encoded += 1
            for packet in packets:
                self.bytes_encoded += len(packet.data)
                self._window.append((now, len(packet.data)))
            self._trim(now)
            self._age = now - frame.captured_at
            if self._priming and any(packet.keyframe for packet in packets):
                self._priming = False  # the stream can be described; more only for a playing client
            self._cond.notify_all()
        for packet in packets:
            consumer(packet)

    def _failed(self, exc: Exception) -> None:
        with self._cond:
            self.errors += 1
            first = self.last_error is None
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._cond.notify_all()
        if isinstance(exc, EncoderUnavailable):
            log.error("H.264 encoder: %s", exc)
        elif isinstance(exc, H264Error):
            log.warning("%s; opening a new encoder", exc)
        elif first or self.errors % 100 == 0:  # a bug: its trace once, then a line every hundred
            log.error("H.264 encoding failed (%d in all); opening a new encoder", self.errors, exc_info=exc)

    def _open(self, size: tuple[int, int]) -> H264Encoder | None:
        try:
            return H264Encoder(self.codec, size, self._settings)
        except EncoderUnavailable as exc:
            self._failed(exc)
            return None
