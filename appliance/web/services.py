"""The running parts the web layer uses, stored on the app so no module needs a global."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app, jsonify, send_file
from werkzeug.wrappers import Response

from appliance import __version__
from appliance.capture.broadcaster import FrameBroadcaster
from appliance.capture.picture import PictureControl
from appliance.config import AppConfig
from appliance.controller import CameraController
from appliance.history.events import EventStore
from appliance.motion.control import MotionControl
from appliance.recording.folder import RecordingsFolder
from appliance.web.live import LiveFeed

if TYPE_CHECKING:
    from appliance.arming.control import ArmControl
    from appliance.mse.service import H264Viewers
    from appliance.notify.service import Notifier
    from appliance.onvif.service import OnvifService


class Gate:
    """At most ``limit`` holders at once, and how many there are now (for ``/api/status``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self.held = 0

    def enter(self) -> bool:
        with self._lock:
            if self.held >= self.limit:
                return False
            self.held += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.held = max(0, self.held - 1)


NO_CACHE = {"Cache-Control": "no-cache, no-store, private", "Pragma": "no-cache"}


@dataclass
class Services:
    """What ``create_app`` was given; ``integrations`` reports MQTT and GPIO for /api/status."""

    controller: CameraController
    broadcaster: FrameBroadcaster
    config: AppConfig
    backend_name: str
    backend_description: str
    events: EventStore
    live: LiveFeed
    motion: MotionControl
    integrations: Callable[[], dict[str, Any]] = dict
    clip_counters: Callable[[], dict[str, int]] = dict  # frames encoded and dropped by the clip writer
    started_at: float = field(default_factory=time.monotonic)
    version: str = __version__
    stopping: threading.Event = field(default_factory=threading.Event)  # set at shutdown: replays end
    clip_viewers: Gate = field(default_factory=lambda: Gate(4))
    picture: PictureControl | None = None
    recordings: RecordingsFolder | None = None  # continuous recording and timelapses, when enabled
    arming: ArmControl | None = None
    notifier: Notifier | None = None  # notifications, when targets are configured
    h264_viewers: H264Viewers | None = None  # the page's H.264 live view, when it runs here
    h264_off: str | None = None  # why it does not, when it was asked for
    onvif: OnvifService | None = None  # ONVIF's device and media services, when on

    @classmethod
    def of(cls, app: Flask | None = None) -> Services:
        return (app or current_app).extensions["appliance"]


def json_error(status: int, message: str, retry_after: int | None = None, **extra: Any) -> Response:
    """Every error the appliance answers is JSON with an ``error`` key saying what was wrong.

    ``retry_after`` (s) goes into the ``Retry-After`` header of a 503 that will pass by itself.
    """
    response = jsonify({"error": message, **extra})
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def send_video(path: Path, growing: bool, download_name: str | None = None) -> Response:
    """An MP4 file with range requests (a player seeks by them), cached for a day once finished; a
    file that grows (a clip being recorded) is sent as it is now, never cached. 404 when it went
    (deleted, or pruned for space) before it could be opened."""
    try:
        response = send_file(path, mimetype="video/mp4", conditional=True, etag=not growing,
                             as_attachment=download_name is not None, download_name=download_name,
                             max_age=None if growing else 86400)
    except FileNotFoundError:
        return json_error(404, f"{path.name} is gone (deleted, or removed to make room)")
    if growing:
        response.headers.update(NO_CACHE)
    else:
        response.headers["Cache-Control"] = "private, max-age=86400"
    return response
