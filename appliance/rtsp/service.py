"""RTSP as the rest of the appliance sees it: built when configured, or off with the reason why.

``build`` is called once at start-up. When ``rtsp.enabled`` is set but PyAV, an H.264 encoder or
GStreamer's RTSP server is missing here, the appliance still starts, with RTSP off, and logs and
reports (``/api/status``) what is missing and how to install it. Otherwise ``RtspService`` holds the
feed and the server, starts and stops them, and follows the camera: only while it is ``on`` may
clients watch.
"""

from __future__ import annotations

import logging
from typing import Any

from appliance.config import AppConfig
from appliance.passwords import PasswordCheck
from appliance.rtsp.feed import H264Feed
from appliance.rtsp.h264 import EncoderUnavailable, H264Encoder, choose_codec
from appliance.state import CameraState, StateChange

log = logging.getLogger(__name__)

GSTREAMER_HINT = ("GStreamer's RTSP server is not available to this Python ({error}): on Debian and Raspberry "
                  "Pi OS, apt install python3-gst-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good "
                  "gstreamer1.0-plugins-bad, and make the venv from /usr/bin/python3 with "
                  "--system-site-packages (scripts/run.sh does both)")


class RtspService:
    """The H.264 feed and the RTSP server of one appliance."""

    def __init__(self, config: AppConfig, login: PasswordCheck | None, password: str | None, codec: str) -> None:
        from appliance.rtsp.server import RtspServer  # imports GStreamer: build() checked it is there

        self.config = config.rtsp
        self.codec = codec
        default = config.stream.size or config.camera.size
        self.feed = H264Feed(codec, config.rtsp, default, config.overlay)
        self.server = RtspServer(config.rtsp, config.server.host, self.feed, config.server.auth, login, password)

    def start(self, camera_on: bool) -> None:
        self.feed.start()
        self.server.start()
        self.server.set_live(camera_on)

    def stop(self) -> None:
        self.server.stop()
        self.feed.stop()

    def on_state(self, change: StateChange) -> None:
        """A state listener: sessions exist only while the camera is on."""
        self.server.set_live(change.state is CameraState.ON)

    def status(self) -> dict[str, Any]:
        feed, server = self.feed.stats(), self.server.stats()
        return {"enabled": True, "reason": None, "port": server.port, "path": self.config.path,
                "clients": server.sessions, "connections": server.connections, "max_clients": self.config.max_clients,
                "encoder": self.codec, "encoding": feed.active, "frames_encoded": feed.frames_encoded,
                "bytes_encoded": feed.bytes_encoded, "bitrate": feed.bitrate, "target_bitrate": self.config.bitrate,
                "frame_age_ms": feed.frame_age_ms, "errors": feed.errors}


def off_status(reason: str | None) -> dict[str, Any]:
    """What ``/api/status`` says of RTSP when it does not run: not configured (no reason), or why not."""
    return {"enabled": False, "reason": reason}


def build(config: AppConfig, login: PasswordCheck | None,
          password: str | None) -> tuple[RtspService | None, str | None]:
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
    service = RtspService(config, login, password, codec)
    try:  # opens at the size it will encode, or says why not
        H264Encoder(codec, service.feed.frame_size(config.camera.size), settings).close()
    except EncoderUnavailable as exc:
        return None, f"no H.264 encoder: {exc}"
    log.info("H.264 encoder for RTSP: %s", codec)
    return service, None
