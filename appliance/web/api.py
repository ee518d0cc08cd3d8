"""The JSON API: camera switch, status and health."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, jsonify, request

from appliance.capture.picture import PictureSettingsError
from appliance.capture.picture import public as picture_public
from appliance.health import capture_health
from appliance.motion.control import MotionSettingsError, public
from appliance.web.services import Services, json_error

bp = Blueprint("api", __name__)


def camera_body(services: Services) -> dict[str, Any]:
    return {**services.controller.status(), "backend": services.backend_name,
            "camera": services.backend_description}


@bp.get("/api/camera")
def get_camera() -> Response:
    return jsonify(camera_body(Services.of()))


@bp.put("/api/camera")
def put_camera() -> Response:
    """``{"on": true|false}``; answers once the camera has started (or failed) or stopped."""
    services = Services.of()
    if request.mimetype != "application/json":
        # A browser can send a cross-site simple request only with a form or text type; JSON needs a preflight.
        return json_error(415, f"Content-Type must be application/json, not {request.mimetype or 'none'!r}")
    body = request.get_json(force=True, silent=True)
    if body is None:
        return json_error(400, 'body must be a JSON object such as {"on": true}')
    if not isinstance(body, dict):
        return json_error(400, f'body must be a JSON object, not {type(body).__name__}')
    unknown = sorted(set(body) - {"on"})
    if unknown:
        return json_error(400, f"unknown key(s): {', '.join(unknown)}; only 'on' is accepted")
    if "on" not in body:
        return json_error(400, "missing key 'on'")
    if not isinstance(body["on"], bool):
        return json_error(400, f"'on' must be true or false, not {body['on']!r}")
    controller = services.controller
    result = controller.on(source="api") if body["on"] else controller.off(source="api")
    return switch_response(services, result)


@bp.get("/api/motion")
def get_motion() -> Response:
    """Detection on/off, sensitivity and zones, as they are now."""
    return jsonify(public(Services.of().motion.settings))


@bp.put("/api/motion")
def put_motion() -> Response:
    """Change any of ``enabled``, ``sensitivity`` (or ``threshold``) and ``zones``; the capture thread
    uses them from its next frame, and they are kept across restarts. All or nothing: one invalid
    value changes nothing and is named in the 400."""
    control = Services.of().motion
    return put_settings(lambda body: public(control.update(body)), MotionSettingsError, "motion",
                        '{"enabled": false}')


@bp.get("/api/camera/settings")
def get_camera_settings() -> Response:
    """The picture: the controls the camera offers (with ranges) and their values, night mode and
    whether it is on now, the privacy masks, and the orientation (set in the config file)."""
    return jsonify(picture_body(Services.of()))


@bp.put("/api/camera/settings")
def put_camera_settings() -> Response:
    """Change any of ``controls`` (merged; null restores a control's default), ``night_mode`` and
    ``masks`` (replaced); applied from the next frame and kept across restarts. All or nothing: a
    control the camera does not offer, or a value out of its range, changes nothing and is named."""
    services = Services.of()
    control = services.picture
    assert control is not None

    def apply(body: Any) -> dict[str, Any]:
        control.update(body)
        return picture_body(services)  # with what the camera offers and the orientation, as GET shows it

    return put_settings(apply, PictureSettingsError, "picture", '{"night_mode": "auto"}')


def picture_body(services: Services) -> dict[str, Any]:
    control = services.picture
    assert control is not None
    camera = services.config.camera
    return picture_public(control.settings, control.offered(), control.night_active,
                          (camera.rotation, camera.hflip, camera.vflip))


def put_settings(apply: Callable[[Any], dict[str, Any]], refused: type[Exception], what: str,
                 example: str) -> Response:
    """A settings ``PUT``: JSON only, applied whole or not at all (400 says why), 503 if it cannot be kept."""
    if request.mimetype != "application/json":
        return json_error(415, f"Content-Type must be application/json, not {request.mimetype or 'none'!r}")
    body = request.get_json(force=True, silent=True)
    if body is None:
        return json_error(400, f"body must be a JSON object such as {example}")
    try:
        return jsonify(apply(body))
    except refused as exc:
        return json_error(400, str(exc))
    except OSError as exc:  # a full or failing card: the change is refused whole, not half-kept
        return json_error(503, f"could not save the {what} settings, nothing changed: {exc}", retry_after=30)


@bp.post("/api/camera/toggle")
def toggle_camera() -> Response:
    services = Services.of()
    return switch_response(services, services.controller.toggle(source="api"))


def switch_response(services: Services, result: dict[str, Any]) -> Response:
    """200 when the switch is where it was asked to be; 503 when the camera failed to start, 504 when it
    gave no frame in time (it keeps trying in both cases), with the state and the reason."""
    body = camera_body(services)
    details = {**{key: value for key, value in body.items() if key != "error"}, "reason": body["error"]}
    if result.get("timed_out"):
        return json_error(504, f"the camera did not start in time: {body['error'] or 'no frame yet'}", **details)
    if body["on"] and body["state"] == "error":
        return json_error(503, f"the camera did not start: {body['error']}", **details)
    return jsonify(body)


@bp.get("/api/status")
def status() -> Response:
    return jsonify(status_body(Services.of()))


def status_body(services: Services) -> dict[str, Any]:
    """Everything /api/status reports; the live feed sends it periodically too."""
    stats = services.controller.pipeline.stats()
    body: dict[str, Any] = {
        "camera": camera_body(services),
        "frame_size": list(stats.frame_size) if stats.frame_size else None,
        "fps": stats.fps,
        "viewers": services.broadcaster.viewers,
        "max_viewers": services.config.stream.max_viewers,
        "h264_viewers": services.h264_viewers.viewers if services.h264_viewers is not None else 0,
        "frames_captured": stats.frames_captured,
        "frames_encoded": stats.frames_encoded,
        "frames_analysed": stats.frames_analysed,
        "encoder": services.controller.pipeline.encoder_name,
        "motion": {"active": stats.motion_active, "last_event": stats.last_event},
        "uptime": round(time.monotonic() - services.started_at, 1),
        "version": services.version,
        "name": services.config.name,
        "live_clients": services.live.clients,
        "events_stored": services.events.count(),
        "clips": {"enabled": services.config.events.clip.enabled, "recording": stats.clips_recording,
                  "frames_taken": stats.clip_frames_taken, "replaying": services.clip_viewers.held,
                  **services.clip_counters()},
        "state_file": {"ok": services.controller.state_file_problem is None,
                       "problem": services.controller.state_file_problem},
        **services.integrations(),
    }
    return body


@bp.get("/healthz")
def healthz() -> Response:
    services = Services.of()
    camera = services.config.camera
    healthy, reason = capture_health(services.controller, camera.read_timeout, camera.open_timeout)
    if healthy:  # a part that reports its own health (RTSP: its loop and its encoder thread)
        reason = next((part["health"] for part in services.integrations().values()
                       if isinstance(part, dict) and part.get("health")), "ok")
        healthy = reason == "ok"
    if not healthy:
        return json_error(503, reason, state=services.controller.state.value)
    return jsonify({"status": "ok", "state": services.controller.state.value})
