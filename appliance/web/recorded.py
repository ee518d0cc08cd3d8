"""Continuous recordings and timelapses: listed by time, served with range requests.

``GET /api/recordings?start=&end=`` lists what overlaps a span (wall-clock seconds; the page asks
for one local day), with the motion events in it for the timeline; ``GET /api/recordings/<name>``
serves one file by the name the list gave. Only catalogued names are served, so no name can reach
a file outside the folder. Same login and Host allow-list as every route.
"""

from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify, request

from appliance.web.services import Services, json_error, send_video

bp = Blueprint("recorded", __name__)

MAX_SPAN = 8 * 86400  # s one listing may cover
MAX_EVENTS = 1000  # events scanned for a timeline (the history keeps 500 by default)


def _time_arg(name: str, default: float) -> float:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"'{name}' must be a time in seconds since 1970, not {raw!r}") from None
    if not 0 <= value < 2**40:
        raise ValueError(f"'{name}' must be a time in seconds since 1970, not {raw!r}")
    return value


@bp.get("/api/recordings")
def list_recordings() -> Response:
    """What overlaps ``[start, end)`` (default: the last 24 hours): continuous segments and
    timelapses, oldest first, each with its URL; the motion events of that span; the status."""
    services = Services.of()
    folder = services.recordings
    if folder is None:
        return json_error(404, "recording is off (recording.continuous.enabled, recording.timelapse.enabled)")
    now = time.time()
    try:
        end = _time_arg("end", now)
        start = _time_arg("start", end - 86400)
    except ValueError as exc:
        return json_error(400, str(exc))
    if not start < end or end - start > MAX_SPAN:
        return json_error(400, f"'start' must come before 'end', at most {MAX_SPAN // 86400} days before it")
    events, _ = services.events.list(0, MAX_EVENTS)
    marks = [{"id": event["id"], "kind": event.get("kind"), "start": event["started_at"],
              "end": event.get("ended_at"), "labels": event.get("labels", [])} for event in events
             if isinstance(event.get("started_at"), int | float) and start <= event["started_at"] < end]
    return jsonify({
        "start": start, "end": end,
        "continuous": [r.as_dict(f"/api/recordings/{r.name}") for r in folder.files("continuous", start, end)],
        "timelapse": [r.as_dict(f"/api/recordings/{r.name}") for r in folder.files("timelapse", start, end)],
        "events": marks[::-1],
        "status": folder.summary(),
    })


@bp.get("/api/recordings/<path:name>")
def recording_file(name: str) -> Response:
    """One recording by the name its listing gave, as MP4 with range requests; ``?download=1`` as
    an attachment."""
    folder = Services.of().recordings
    path = folder.path_of(name) if folder is not None else None
    if path is None:
        return json_error(404, f"no recording {name!r}")
    download = path.name if request.args.get("download") in ("1", "true") else None
    return send_video(path, growing=False, download_name=download)
