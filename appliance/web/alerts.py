"""Arming and notifications over HTTP: the armed state and its reason, the targets' results, a test."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from appliance.web.services import Services, json_error

bp = Blueprint("alerts", __name__)


@bp.get("/api/arming")
def get_arming() -> Response:
    """Whether events notify now, why (``schedule``, ``manual until Tue 06:30``, ...) and until when."""
    arming = Services.of().arming
    if arming is None:
        return json_error(404, "arming is not available")
    return jsonify(arming.poll().public())


@bp.put("/api/arming")
def put_arming() -> Response:
    """``{"armed": true|false}``: by hand, until the schedule's next change (for good without one)."""
    services = Services.of()
    if services.arming is None:
        return json_error(404, "arming is not available")
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or set(body) != {"armed"}:
        return json_error(400, "expected a JSON object {\"armed\": true|false}")
    try:
        state = services.arming.set(body["armed"], source="api")
    except ValueError as exc:
        return json_error(400, str(exc))
    except OSError as exc:
        return json_error(500, f"cannot keep the arming: {exc.strerror or exc}")
    return jsonify(state.public())


@bp.get("/api/notify")
def get_notify() -> Response:
    """Each target's results (sent, failed, dropped, held by the cooldown, the last try); never its URL."""
    notifier = Services.of().notifier
    if notifier is None:
        return jsonify({"enabled": False, "targets": []})
    return jsonify({"enabled": True, **notifier.status()})


@bp.post("/api/notify/test")
def notify_test() -> Response:
    """Send a test message to every target, or to ``{"target": name}``; 202: queued (see ``/api/notify``)."""
    notifier = Services.of().notifier
    if notifier is None:
        return json_error(409, "no notification targets are configured (notify.targets)")
    body = request.get_json(silent=True) if request.content_length else {}
    if not isinstance(body, dict) or not set(body) <= {"target"} or \
            not isinstance(body.get("target", ""), str):
        return json_error(400, "expected nothing, or a JSON object {\"target\": name}")
    try:
        queued = notifier.send_test(body.get("target"))
    except KeyError:
        return json_error(404, f"no notification target named {str(body.get('target'))[:40]!r}")
    response = jsonify({"queued": queued})
    response.status_code = 202
    return response
