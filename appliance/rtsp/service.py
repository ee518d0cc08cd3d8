"""RTSP as the rest of the appliance sees it: built when configured, or off with the reason why.

``build`` is called once at start-up with the H.264 feed (``appliance/h264/``) the appliance made.
When ``rtsp.enabled`` is set but the feed could not be made (PyAV or an encoder missing) or
GStreamer's RTSP server is missing here, the appliance still starts, with RTSP off, and logs and
reports (``/api/status``) what is missing and how to install it. Otherwise ``RtspService`` holds the
server, starts and stops it, and follows the camera: only while it is ``on`` may clients watch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from appliance.config import AppConfig
from appliance.h264.feed import H264Feed
from appliance.passwords import PasswordCheck
from appliance.state import CameraState, StateChange
from appliance.web.security import FailureLimiter

log = logging.getLogger(__name__)

GSTREAMER_HINT = ("GStreamer's RTSP server is not available to this Python ({error}): on Debian and Raspberry "
                  "Pi OS, apt install python3-gst-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good "
                  "gstreamer1.0-plugins-bad, and make the venv from /usr/bin/python3 with "
                  "--system-site-packages (scripts/run.sh does both)")
STOP_BUDGET = 1.0  # s for the server, stuck or not (the feed has its own): Appliance.stop() keeps to 5 s


class RtspService:
    """The RTSP server of one appliance, serving the appliance's H.264 feed."""

    def __init__(self, config: AppConfig, feed: H264Feed, login: PasswordCheck | None, password: str | None,
                 limiter: FailureLimiter) -> None:
        from appliance.rtsp.server import RtspServer  # imports GStreamer: build() checked it is there

        self.config = config.rtsp
        self.feed = feed
        self.server = RtspServer(config.rtsp, config.server.host, feed, config.server.auth, login, password,
                                 limiter)
        self._lock = threading.Lock()  # orders what the server is told of the camera: never a stale state
        self._camera_on: bool | None = None  # the newest the listener heard; None: nothing yet
        self._started = False

    def start(self, camera_on: Callable[[], bool]) -> None:
        """Start the server. The camera's state is read after it runs, under the lock the listener
        takes: a change heard meanwhile is never overwritten by an older reading."""
        self.server.start()
        with self._lock:
            if self._camera_on is None:
                self._camera_on = camera_on()
            self._started = True
            self.server.set_live(self._camera_on)

    def stop(self, budget: float = STOP_BUDGET) -> None:
        """Within ``budget`` seconds, with the RTSP loop stuck."""
        with self._lock:
            self._started = False
        self.server.stop(budget)

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
                "encoder": self.feed.codec, "encoder_fallback": self.feed.fallback, "encoding": feed.active,
                "encoder_consumers": feed.subscriptions, "frames_encoded": feed.frames_encoded,
                "bytes_encoded": feed.bytes_encoded, "bitrate": feed.bitrate, "target_bitrate": self.config.bitrate,
                "frame_age_ms": feed.frame_age_ms, "errors": feed.errors, "last_error": feed.last_error,
                "health": self.health()}


def off_status(reason: str | None) -> dict[str, Any]:
    """What ``/api/status`` says of RTSP when it does not run: not configured (no reason), or why not."""
    return {"enabled": False, "reason": reason}


def build(config: AppConfig, feed: H264Feed | None, feed_problem: str | None, login: PasswordCheck | None,
          password: str | None, limiter: FailureLimiter) -> tuple[RtspService | None, str | None]:
    """The RTSP service when ``rtsp.enabled`` and everything it needs is here; else None and why not
    (None when it is simply not configured). ``feed_problem`` is why there is no feed, if there is none."""
    if not config.rtsp.enabled:
        return None, None
    if feed is None:
        return None, feed_problem or "no H.264 feed"
    try:
        from appliance.rtsp.server import check_gstreamer
    except (ImportError, ValueError) as exc:  # gi missing, or a typelib missing (ValueError from require_version)
        return None, GSTREAMER_HINT.format(error=exc)
    try:
        check_gstreamer()
    except RuntimeError as exc:
        return None, str(exc)
    return RtspService(config, feed, login, password, limiter), None
