"""The one H.264 encode every RTSP client shares, on its own ``h264-encoder`` thread.

The RTSP server switches the feed on when its shared media starts (the first client) and off when
that media ends (the last client gone, or the camera switched off): while off, ``wants_frame`` is
false, the capture thread hands over nothing and nothing is encoded. While on, the capture thread
offers a clean copy of a frame when one is due at ``rtsp.fps``; the encoder thread takes the newest
(a frame it had no time for is replaced, never queued), draws the overlay at its own size, encodes,
and gives the access units to the server. Each switch-on opens a fresh encoder, so the stream starts
with a keyframe and its parameter sets.
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
        self._active = False
        self._consumer: Consumer | None = None
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
        self._age: float | None = None

    # --- the capture thread (VideoSink) ----------------------------------------------------------

    def wants_frame(self, now: float) -> bool:
        return self._active and now >= self._due

    def frame_size(self, capture_size: tuple[int, int]) -> tuple[int, int]:
        width, height = self._settings.size or self._default_size or capture_size
        return width // 2 * 2, height // 2 * 2  # 4:2:0 needs even sizes

    def offer(self, frame: VideoFrame) -> None:
        with self._cond:
            if not self._active:
                return
            # Keep the rate; after a stall (or at the start) count again from this frame, never catch up.
            now = frame.captured_at
            self._due = self._due + self._period if self._due > now - self._period else now + self._period
            self._pending = frame
            self._cond.notify_all()

    # --- the RTSP server's thread ----------------------------------------------------------------

    def activate(self, consumer: Consumer) -> None:
        """The shared media started: encode from the next frame on, into ``consumer``."""
        with self._cond:
            self._active, self._consumer, self._fresh, self._due = True, consumer, True, 0.0
            self._cond.notify_all()
        log.info("H.264 encoding started (%s)", self.codec)

    def deactivate(self, consumer: Consumer | None = None) -> None:
        """The shared media ended: no more frames, no more encodes. With ``consumer``, only if that is
        still the one fed (a media ending late must not stop the next one's feed)."""
        with self._cond:
            if consumer is not None and consumer != self._consumer:
                return
            was = self._active
            self._active, self._consumer, self._pending = False, None, None
            self._cond.notify_all()
        if was:
            log.info("H.264 encoding stopped: no RTSP client")

    def request_keyframe(self) -> None:
        """A client starts playing: make the next frame a keyframe, so its picture starts at once."""
        with self._cond:
            self._keyframe = True

    @property
    def active(self) -> bool:
        return self._active

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
        self._thread = threading.Thread(target=self._run, name="h264-encoder", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._stopping, self._active, self._consumer, self._pending = True, False, None, None
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the H.264 encoder did not end within %.1f s", timeout)

    def stats(self) -> FeedStats:
        now = self._monotonic()
        with self._cond:
            self._trim(now)
            bits = sum(size for _, size in self._window) * 8
            span = max(1.0, now - self._window[0][0]) if self._window else 1.0
            return FeedStats(self._active, self.frames_encoded, self.bytes_encoded, round(bits / span),
                             None if self._age is None else round(self._age * 1000, 1), self.errors)

    def _trim(self, now: float) -> None:
        while self._window and self._window[0][0] < now - 5.0:
            self._window.popleft()

    # --- the encoder thread ----------------------------------------------------------------------

    def _run(self) -> None:
        encoder: H264Encoder | None = None
        start_at = 0.0
        refused = False  # the encoder would not open: not again (nor its error in the log) at every frame
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or self._pending is not None)
                if self._stopping:
                    break
                frame, self._pending = self._pending, None
                consumer, fresh, keyframe = self._consumer, self._fresh, self._keyframe
                self._fresh = self._keyframe = False
                self._cond.notify_all()  # idle
            assert frame is not None
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
            draw_overlay(frame.image, frame.timestamp, frame.motion, self._overlay, scale=frame.scale,
                         zones=frame.zones)
            try:
                packets = encoder.encode(frame.image, round((frame.captured_at - start_at) * CLOCK), keyframe,
                                         frame.captured_at)
            except H264Error as exc:
                self._failed()
                log.warning("%s; opening a new encoder", exc)
                encoder.close()
                encoder = None
                continue
            now = self._monotonic()
            with self._cond:
                self.frames_encoded += 1
                for packet in packets:
                    self.bytes_encoded += len(packet.data)
                    self._window.append((now, len(packet.data)))
                self._trim(now)
                self._age = now - frame.captured_at
                self._cond.notify_all()
            for packet in packets:
                consumer(packet)
        if encoder is not None:
            encoder.close()

    def _failed(self) -> None:
        with self._cond:
            self.errors += 1
            self._cond.notify_all()

    def _open(self, size: tuple[int, int]) -> H264Encoder | None:
        try:
            return H264Encoder(self.codec, size, self._settings)
        except EncoderUnavailable as exc:
            self._failed()
            log.error("H.264 encoder: %s", exc)
            return None
