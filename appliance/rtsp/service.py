"""RTSP as the rest of the appliance sees it: built when configured, or off with the reason why.

``build`` is called once at start-up. When ``rtsp.enabled`` is set but PyAV, an H.264 encoder or
GStreamer's RTSP server is missing here, the appliance still starts, with RTSP off, and logs and
reports (``/api/status``) what is missing and how to install it. With ``rtsp.encoder: auto`` on a
board whose hardware encoder will not open, it falls back to libx264 and says why. Otherwise
``RtspService`` holds the feed and the server, starts and stops them, and follows the camera: only
while it is ``on`` may clients watch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from appliance.config import AppConfig
from appliance.passwords import PasswordCheck
from appliance.rtsp.feed import H264Feed
from appliance.rtsp.h264 import EncoderUnavailable, H264Encoder, choose_codec
from appliance.state import CameraState, StateChange
from appliance.web.security import FailureLimiter

log = logging.getLogger(__name__)

GSTREAMER_HINT = ("GStreamer's RTSP server is not available to this Python ({error}): on Debian and Raspberry "
                  "Pi OS, apt install python3-gst-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good "
                  "gstreamer1.0-plugins-bad, and make the venv from /usr/bin/python3 with "
                  "--system-site-packages (scripts/run.sh does both)")
STOP_BUDGET = 1.5  # s for the server and the encoder together, stuck or not: Appliance.stop() keeps to 5 s


class RtspService:
    """The H.264 feed and the RTSP server of one appliance."""

    def __init__(self, config: AppConfig, login: PasswordCheck | None, password: str | None, codec: str,
                 limiter: FailureLimiter, fallback: str | None = None) -> None:
        from appliance.rtsp.server import RtspServer  # imports GStreamer: build() checked it is there

        self.config = config.rtsp
        self.codec = codec
        self.fallback = fallback  # why the hardware encoder was passed over, when it was
        default = config.stream.size or config.camera.size
        self.feed = H264Feed(codec, config.rtsp, default, config.overlay)
        self.server = RtspServer(config.rtsp, config.server.host, self.feed, config.server.auth, login, password,
                                 limiter)
        self._lock = threading.Lock()  # orders what the server is told of the camera: never a stale state
        self._camera_on: bool | None = None  # the newest the listener heard; None: nothing yet
        self._started = False

    def start(self, camera_on: Callable[[], bool]) -> None:
        """Start the feed and the server. The camera's state is read after the server runs, under the
        lock the listener takes: a change heard meanwhile is never overwritten by an older reading."""
        self.feed.start()
        self.server.start()
        with self._lock:
            if self._camera_on is None:
                self._camera_on = camera_on()
            self._started = True
            self.server.set_live(self._camera_on)

    def stop(self, budget: float = STOP_BUDGET) -> None:
        """Within ``budget`` seconds in all, with the RTSP loop or the encoder stuck."""
        deadline = time.monotonic() + budget
        with self._lock:
            self._started = False
        self.server.stop(budget * 2 / 3)
        self.feed.stop(deadline - time.monotonic())

    def on_state(self, change: StateChange) -> None:
        """A state listener: sessions exist only while the camera is on."""
        with self._lock:
            self._camera_on = change.state is CameraState.ON
            if self._started:
                self.server.set_live(self._camera_on)

    def health(self) -> str | None:
        """None while the RTSP loop and the encoder thread run, else what is wrong."""
        return self.server.health() or self.feed.health()

    def status(self) -> dict[str, Any]:
        feed, server = self.feed.stats(), self.server.stats()
        return {"enabled": True, "reason": None, "port": server.port, "path": self.config.path,
                "clients": server.sessions, "playing": server.playing, "connections": server.connections,
                "refused_connections": server.refused, "max_clients": self.config.max_clients,
                "encoder": self.codec, "encoder_fallback": self.fallback, "encoding": feed.active,
                "frames_encoded": feed.frames_encoded, "bytes_encoded": feed.bytes_encoded, "bitrate": feed.bitrate,
                "target_bitrate": self.config.bitrate, "frame_age_ms": feed.frame_age_ms, "errors": feed.errors,
                "last_error": feed.last_error, "health": self.health()}


def off_status(reason: str | None) -> dict[str, Any]:
    """What ``/api/status`` says of RTSP when it does not run: not configured (no reason), or why not."""
    return {"enabled": False, "reason": reason}


def build(config: AppConfig, login: PasswordCheck | None, password: str | None,
          limiter: FailureLimiter) -> tuple[RtspService | None, str | None]:
    """The RTSP service when ``rtsp.enabled`` and everything it needs is here; else None and why not
    (None when it is simply not configured)."""
    settings = config.rtsp
    if not settings.enabled:
        return None, None
    try:
        codec = choose_codec(settings.encoder)
    except EncoderUnavailable as exc:
        return None, f"no H.264 encoder: {exc}"
    try:
        from appliance.rtsp.server import check_gstreamer
    except (ImportError, ValueError) as exc:  # gi missing, or a typelib missing (ValueError from require_version)
        return None, GSTREAMER_HINT.format(error=exc)
    try:
        check_gstreamer()
    except RuntimeError as exc:
        return None, str(exc)
    size = H264Feed(codec, settings, config.stream.size or config.camera.size, config.overlay).frame_size(
        config.camera.size)
    fallback = None
    try:  # opens at the size it will encode, with the options it will use, or says why not
        H264Encoder(codec, size, settings).close()
    except EncoderUnavailable as exc:
        if settings.encoder != "auto" or codec == "libx264":
            return None, f"no H.264 encoder: {exc}"
        fallback = f"the hardware encoder did not open, so libx264 encodes: {exc}"
        log.warning("H.264: %s", fallback)
        try:
            codec = choose_codec("libx264")
            H264Encoder(codec, size, settings).close()
        except EncoderUnavailable as again:
            return None, f"no H.264 encoder: {again}"
    log.info("H.264 encoder for RTSP: %s", codec)
    return RtspService(config, login, password, codec, limiter, fallback), None
