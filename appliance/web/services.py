"""The running parts the web layer uses, stored on the app so no module needs a global."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app, jsonify
from werkzeug.wrappers import Response

from appliance import __version__
from appliance.capture.broadcaster import FrameBroadcaster
from appliance.capture.picture import PictureControl
from appliance.config import AppConfig
from appliance.controller import CameraController
from appliance.history.events import EventStore
from appliance.motion.control import MotionControl
from appliance.web.live import LiveFeed


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
