"""The MJPEG stream and snapshots, both served from the broadcaster's one encoded frame."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

from flask import Blueprint, Response, request

from appliance.broadcaster import TooManyViewers
from appliance.web.services import NO_CACHE, Services, json_error

bp = Blueprint("stream", __name__)

BOUNDARY = "frame"


def _camera_off() -> Response:
    return json_error(503, "camera is off", retry_after=5, state=Services.of().controller.state.value)


@lru_cache(maxsize=8)
def _part(jpeg: bytes) -> bytes:
    """One multipart part, built once per frame and shared by every viewer (a bytes object keeps its
    hash, so finding it again costs nothing)."""
    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
    return head.encode("ascii") + jpeg + b"\r\n"


@bp.get("/stream.mjpg")
def stream() -> Response:
    """Live view; ends when the camera goes off. Each viewer costs a thread, never an encode.

    ``?fps=N`` (0.1 up to ``stream.max_fps``) sends at most N frames a second, for thumbnails and
    dashboards; the camera then encodes only as often as some viewer is due.
    """
    services = Services.of()
    broadcaster = services.broadcaster
    ceiling = services.config.stream.max_fps
    raw = request.args.get("fps")
    try:
        max_fps = None if raw is None else float(raw)
    except ValueError:
        return json_error(400, f"'fps' must be a number of frames per second, not {raw!r}")
    if max_fps is not None and not 0.1 <= max_fps <= ceiling:
        return json_error(400, f"'fps' must be between 0.1 and {ceiling:g} (stream.max_fps), not {raw}")
    try:
        slot = broadcaster.add_viewer(max_fps)
    except LookupError:
        return _camera_off()
    except TooManyViewers as exc:
        return json_error(503, str(exc), retry_after=10, max_viewers=services.config.stream.max_viewers)
    keepalive = services.config.stream.keepalive

    def frames() -> Iterator[bytes]:
        seq = 0
        while True:
            if not broadcaster.wait_until_due(slot):
                return
            frame = broadcaster.wait_for_frame(slot.generation, seq, keepalive)
            if frame is None:
                return
            if frame.jpeg is None:
                continue
            # On a timeout this re-sends the same frame: it keeps proxies from closing an idle
            # stream and lets the server notice a viewer that is gone.
            seq = frame.seq
            broadcaster.sent(slot)
            yield _part(frame.jpeg)

    response = Response(frames(), mimetype=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                        headers={**NO_CACHE, "X-Accel-Buffering": "no"})
    response.call_on_close(lambda: broadcaster.remove_viewer(slot))
    return response


@bp.get("/snapshot.jpg")
def snapshot() -> Response:
    """One current JPEG; encodes a frame only if none fresh enough exists."""
    services = Services.of()
    timeout, max_age = services.config.camera.snapshot_timing()
    jpeg = services.broadcaster.snapshot(timeout=timeout, max_age=max_age)
    if jpeg is None:
        if not services.broadcaster.live:
            return _camera_off()
        return json_error(503, "no frame from the camera in time", state=services.controller.state.value)
    return Response(jpeg, mimetype="image/jpeg", headers=NO_CACHE)
