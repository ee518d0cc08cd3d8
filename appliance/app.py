"""Flask application factory: takes the running parts, builds a fresh app, reads no globals."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Flask
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from appliance.capture.broadcaster import FrameBroadcaster
from appliance.capture.picture import PictureControl
from appliance.config import AppConfig
from appliance.controller import CameraController
from appliance.history.events import EventStore
from appliance.motion.control import MotionControl
from appliance.recording.folder import RecordingsFolder
from appliance.web import alerts, api, history, pages, recorded, security, stream
from appliance.web import onvif as soap_routes
from appliance.web.live import LiveFeed
from appliance.web.services import Gate, Services, json_error

if TYPE_CHECKING:
    from appliance.arming.control import ArmControl
    from appliance.mse.service import H264Viewers
    from appliance.notify.service import Notifier
    from appliance.onvif.service import OnvifService

log = logging.getLogger(__name__)


def create_app(controller: CameraController, broadcaster: FrameBroadcaster, config: AppConfig,
               backend_name: str, backend_description: str, events: EventStore, live: LiveFeed,
               integrations: Callable[[], dict[str, Any]] = dict, motion: MotionControl | None = None,
               clip_counters: Callable[[], dict[str, int]] = dict, picture: PictureControl | None = None,
               login_failures: security.FailureLimiter | None = None,
               recordings: RecordingsFolder | None = None, arming: ArmControl | None = None,
               notifier: Notifier | None = None, h264_viewers: H264Viewers | None = None,
               h264_off: str | None = None, onvif: OnvifService | None = None) -> Flask:
    """Build the web app around parts the entry point (or a test) created. ``login_failures`` is the
    per-address count of wrong passwords, shared with the other ports that take the login (RTSP).
    ``h264_viewers``: the page's H.264 view when it runs; else ``h264_off`` says why not (None: not asked for)."""
    app = Flask(__name__, template_folder="web/templates", static_folder="web/static")
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_body_bytes  # the server refuses larger ones first
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["appliance"] = Services(
        controller, broadcaster, config, backend_name, backend_description, events, live,
        motion or MotionControl(config.motion, None), integrations, clip_counters,
        clip_viewers=Gate(config.events.clip.max_viewers),
        picture=picture or PictureControl(config.picture, None), recordings=recordings, arming=arming,
        notifier=notifier, h264_viewers=h264_viewers, h264_off=h264_off, onvif=onvif)
    for blueprint in (pages.bp, stream.bp, api.bp, history.bp, recorded.bp, alerts.bp, soap_routes.bp):
        app.register_blueprint(blueprint)

    security.install(app, config.server, limiter=login_failures)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        response = json_error(exc.code or 500, exc.description or exc.name)
        if exc.code == 405 and exc.valid_methods:  # type: ignore[attr-defined]
            response.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
        return response

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Response:
        log.exception("unhandled error in request")
        return json_error(500, "internal error; see the appliance's log")

    return app
