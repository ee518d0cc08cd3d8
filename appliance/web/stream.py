"""The live streams: MJPEG and snapshots from the broadcaster's one encoded frame, and H.264 for the
page (fragmented MP4 from the one H.264 encode, ``appliance/mse/``)."""

from __future__ import annotations

from functools import partial

from flask import Blueprint, Response, request

from appliance.capture.broadcaster import TooManyViewers
from appliance.mse.service import CameraOff, TooManyH264Viewers
from appliance.web.fanout import BOUNDARY, CAN_HAND_OFF, STREAM_HANDOFF, STREAM_SLOT, HandOff
from appliance.web.services import NO_CACHE, Services, json_error

bp = Blueprint("stream", __name__)

def _camera_off() -> Response:
    return json_error(503, "camera is off", retry_after=5, state=Services.of().controller.state.value)


@bp.get("/stream.mjpg")
def stream() -> Response:
    """Live view; ends when the camera goes off. A viewer costs neither an encode nor a thread.

    ``?fps=N`` (0.1 up to ``stream.max_fps``) sends at most N frames a second, for thumbnails and
    dashboards; the camera then encodes only as often as some viewer is due. The body is written by
    the one stream writer thread, which the server hands the socket to once these headers are sent.
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
    if not request.environ.get(CAN_HAND_OFF):
        return json_error(501, "the live stream needs the appliance's own HTTP server")
    headers = {**NO_CACHE, "X-Accel-Buffering": "no", "Connection": "close"}
    mimetype = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
    if request.method == "HEAD":
        if not broadcaster.live:
            return _camera_off()
        return Response(iter(()), mimetype=mimetype, headers=headers)
    try:
        slot = broadcaster.add_viewer(max_fps)
    except LookupError:
        return _camera_off()
    except TooManyViewers as exc:
        return json_error(503, str(exc), retry_after=10, max_viewers=services.config.stream.max_viewers)
    request.environ[STREAM_SLOT] = slot
    return Response(iter(()), mimetype=mimetype, headers=headers)


@bp.get("/stream.mp4")
def stream_h264() -> Response:
    """The live view in H.264 for the page's Media Source Extensions: an init segment, then one MP4
    fragment per frame from a keyframe on, until the camera goes off. ``X-Media-Epoch`` is the Unix
    time of 0 on the stream's timeline, so a frame's capture time is the epoch plus its media time.
    Written by the H.264 viewers' thread, like MJPEG by the stream writer."""
    services = Services.of()
    viewers = services.h264_viewers
    if viewers is None:
        why = services.h264_off or "stream.h264 is off in the configuration"
        return json_error(404, f"the H.264 live view is not available: {why}")
    if not request.environ.get(CAN_HAND_OFF):
        return json_error(501, "the live stream needs the appliance's own HTTP server")
    headers = {**NO_CACHE, "X-Accel-Buffering": "no", "Connection": "close"}
    if request.method == "HEAD":
        if not services.broadcaster.live:
            return _camera_off()
        return Response(iter(()), mimetype="video/mp4", headers=headers)
    try:
        viewer = viewers.reserve()
    except CameraOff:
        return _camera_off()
    except TooManyH264Viewers as exc:
        return json_error(503, str(exc), retry_after=10, max_h264_viewers=viewers.max_viewers)
    headers["X-Media-Epoch"] = f"{viewer.epoch:.6f}"
    request.environ[STREAM_HANDOFF] = HandOff(partial(viewers.attach, viewer), partial(viewers.release, viewer))
    return Response(iter(()), mimetype="video/mp4", headers=headers)


@bp.get("/snapshot.jpg")
def snapshot() -> Response:
    """One current JPEG at the capture's full size; ``?size=stream``: at ``stream.size``, as the
    stream shows it (the page's snapshot mode). Encodes a frame only if none fresh enough exists."""
    services = Services.of()
    size = request.args.get("size", "full")
    if size not in ("full", "stream"):
        return json_error(400, f"'size' must be 'full' or 'stream', not {size!r}")
    timeout, max_age = services.config.camera.snapshot_timing()
    take = services.broadcaster.stream_snapshot if size == "stream" else services.broadcaster.snapshot
    jpeg = take(timeout=timeout, max_age=max_age)
    if jpeg is None:
        if not services.broadcaster.live:
            return _camera_off()
        return json_error(503, "no frame from the camera in time", state=services.controller.state.value)
    return Response(jpeg, mimetype="image/jpeg", headers=NO_CACHE)
