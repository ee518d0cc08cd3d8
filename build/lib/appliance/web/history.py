"""Motion history and the live feed of the page (server-sent events)."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, jsonify, request

from appliance.events import UnknownEvent
from appliance.live import CLOSED, TooManyClients
from appliance.web.api import camera_body, status_body
from appliance.web.services import NO_CACHE, Services, json_error

bp = Blueprint("history", __name__)

MAX_PAGE = 200
STATUS_EVERY = 2.0  # s between status messages on the live feed; they double as keep-alives


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"'{name}' must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise ValueError(f"'{name}' must be between {low} and {high}, not {value}")
    return value


@bp.get("/api/events")
def list_events() -> Response:
    """Newest first: ``?limit=`` (1..200, default 50) and ``?offset=``."""
    services = Services.of()
    try:
        limit = _int_arg("limit", 50, 1, MAX_PAGE)
        offset = _int_arg("offset", 0, 0, 10**9)
    except ValueError as exc:
        return json_error(400, str(exc))
    events, total = services.events.list(offset, limit)
    return jsonify({"events": events, "total": total, "offset": offset, "limit": limit})


@bp.get("/api/events/<event_id>")
def get_event(event_id: str) -> Response:
    try:
        return jsonify(Services.of().events.get(event_id))
    except UnknownEvent:
        return json_error(404, f"no event {event_id!r}")


@bp.get("/api/events/<event_id>/snapshot.jpg")
def event_snapshot(event_id: str) -> Response:
    try:
        jpeg = Services.of().events.snapshot(event_id)
    except UnknownEvent:
        return json_error(404, f"no snapshot for event {event_id!r}")
    # Events never change once saved: let the browser keep thumbnails.
    return Response(jpeg, mimetype="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


@bp.delete("/api/events/<event_id>")
def delete_event(event_id: str) -> Response:
    try:
        Services.of().events.delete(event_id)
    except UnknownEvent:
        return json_error(404, f"no event {event_id!r}")
    return jsonify({"deleted": event_id})


def _sse(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


@bp.get("/api/events/live")
def live() -> Response:
    """State changes and motion events as they happen, plus a status message every 2 s."""
    services = Services.of()
    try:
        client = services.live.subscribe()
    except TooManyClients as exc:
        return json_error(503, str(exc), retry_after=10)

    def stream() -> Iterator[str]:
        yield f"retry: {int(STATUS_EVERY * 1000)}\n\n"
        yield _sse("state", camera_body(services))
        yield _sse("status", status_body(services))
        while True:
            try:
                message = client.get(timeout=STATUS_EVERY)
            except queue.Empty:
                yield _sse("status", status_body(services))
                continue
            if message is CLOSED:
                return
            yield _sse(message.kind, message.data)

    response = Response(stream(), mimetype="text/event-stream", headers={**NO_CACHE, "X-Accel-Buffering": "no"})
    response.call_on_close(lambda: services.live.unsubscribe(client))
    return response
