"""Motion history, event clips, and the live feed of the page (server-sent events)."""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

from flask import Blueprint, Response, jsonify, request

from appliance.history.avi import avi_size, avi_stream
from appliance.history.clip_files import ClipEntry
from appliance.history.events import EventStore, UnknownEvent
from appliance.web.api import camera_body, status_body
from appliance.web.fanout import BOUNDARY
from appliance.web.live import CLOSED, TooManyClients
from appliance.web.services import NO_CACHE, Services, json_error, send_video

bp = Blueprint("history", __name__)

MAX_PAGE = 200
LABEL = re.compile(r"[a-z][a-z0-9 _-]{0,39}")
KEEP = {"Cache-Control": "private, max-age=86400"}
"""A saved event's snapshot and a finished clip never change: the browser may keep them."""
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


def _with_footage(services: Services, record: dict[str, Any]) -> dict[str, Any]:
    """The event, and where its start is in the continuous recording when that holds it."""
    if services.recordings is None or not isinstance(record.get("started_at"), int | float):
        return record
    found = services.recordings.covering(float(record["started_at"]))
    if found is None:
        return record
    segment, offset = found
    return {**record, "footage": {"url": f"/api/recordings/{segment.name}", "offset": round(offset, 2),
                                  "start": segment.start}}


@bp.get("/api/events")
def list_events() -> Response:
    """Newest first: ``?limit=`` (1..200, default 50), ``?offset=``, and ``?label=person``: only the
    events in which an object of that label alerted."""
    services = Services.of()
    try:
        limit = _int_arg("limit", 50, 1, MAX_PAGE)
        offset = _int_arg("offset", 0, 0, 10**9)
    except ValueError as exc:
        return json_error(400, str(exc))
    label = request.args.get("label") or None
    if label is not None and not LABEL.fullmatch(label):
        return json_error(400, f"'label' must be an object label such as person or car, not {label[:40]!r}")
    events, total = services.events.list(offset, limit, label=label)
    events = [_with_footage(services, event) for event in events]
    return jsonify({"events": events, "total": total, "offset": offset, "limit": limit})


@bp.get("/api/events/<event_id>")
def get_event(event_id: str) -> Response:
    services = Services.of()
    try:
        return jsonify(_with_footage(services, services.events.get(event_id)))
    except UnknownEvent:
        return json_error(404, f"no event {event_id!r}")


@bp.get("/api/events/<event_id>/snapshot.jpg")
def event_snapshot(event_id: str) -> Response:
    try:
        jpeg = Services.of().events.snapshot(event_id)
    except UnknownEvent:
        return json_error(404, f"no snapshot for event {event_id!r}")
    return Response(jpeg, mimetype="image/jpeg", headers=KEEP)


@bp.get("/api/events/<event_id>/objects/<int:number>.jpg")
def object_snapshot(event_id: str, number: int) -> Response:
    """The best snapshot of the event's ``number``-th object (``objects[].number``), its box drawn."""
    try:
        jpeg = Services.of().events.object_snapshot(event_id, number)
    except UnknownEvent:
        return json_error(404, f"no object {number} in event {event_id!r}")
    return Response(jpeg, mimetype="image/jpeg", headers={"Cache-Control": "private, no-cache"})


@bp.get("/api/events/<event_id>/clip.mp4")
def clip_mp4(event_id: str) -> Response:
    """The event's clip as H.264 MP4, with range requests: a ``<video>`` plays and seeks it, on
    phones too. A clip being recorded is sent as far as it is written (fragment by fragment)."""
    events = Services.of().events
    try:
        path, recording = events.mp4_clip(event_id)
    except UnknownEvent:
        try:
            kind = events.clip_format(event_id)
        except UnknownEvent:
            kind = None
        if kind == "mjpeg":
            return json_error(404, f"the clip of {event_id!r} is Motion-JPEG (kept before MP4 clips, or without "
                                   "PyAV): play clip.mjpg, download clip")
        return json_error(404, f"no clip for event {event_id!r}")
    return send_video(path, recording)


def _open_clip(event_id: str) -> tuple[Any, BinaryIO, bool] | Response:
    """The clip's index, its data file opened (so a delete meanwhile cannot cut the answer short) and
    whether it is still recording; or the 404 to answer."""
    try:
        index, data_path, recording = Services.of().events.clip(event_id)
        return index, open(data_path, "rb"), recording  # closed when the response is
    except (UnknownEvent, FileNotFoundError):
        return json_error(404, f"no clip for event {event_id!r}")


@bp.get("/api/events/<event_id>/clip.mjpg")
def clip_replay(event_id: str) -> Response:
    """The clip as MJPEG at the pace it was recorded (an ``<img>`` plays it; so do ffmpeg and VLC).
    A clip still recording is followed to its end. Each part carries ``X-Timestamp`` (wall clock) and
    ``X-Clip-Time`` (seconds into the clip). At most ``events.clip.max_viewers`` replays run at once:
    each holds a server thread for the clip's length."""
    services = Services.of()
    opened = _open_clip(event_id)
    if isinstance(opened, Response):
        return opened
    index, data, recording = opened
    if not services.clip_viewers.enter():
        data.close()
        limit = services.clip_viewers.limit
        return json_error(503, f"{limit} clips are being replayed already (events.clip.max_viewers)", retry_after=5)
    released = threading.Event()

    def release() -> None:
        data.close()
        if not released.is_set():
            released.set()
            services.clip_viewers.leave()

    body = _paced_parts(services.events, event_id, index.entries, data, recording, services.stopping)
    response = Response(body, mimetype=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                        headers={**NO_CACHE, "X-Accel-Buffering": "no"})
    response.call_on_close(release)
    return response


def _paced_parts(events: EventStore, event_id: str, entries: list[ClipEntry], data: BinaryIO, recording: bool,
                 stopping: threading.Event) -> Iterator[bytes]:
    """Each frame when its time in the clip comes, counted from the first; ends at shutdown."""
    started = time.monotonic()
    sent = 0
    while True:
        for entry in entries[sent:]:
            delay = started + entry.t - time.monotonic()
            if delay > 0 and stopping.wait(delay):
                return
            data.seek(entry.offset)
            jpeg = data.read(entry.size)
            head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
                    f"X-Timestamp: {entry.wall:.3f}\r\nX-Clip-Time: {entry.t:.3f}\r\n\r\n")
            yield head.encode("ascii") + jpeg + b"\r\n"
        sent = len(entries)
        if not recording:
            return
        while not events.wait_clip(event_id, sent, timeout=1.0):  # the post-roll is still coming
            if stopping.is_set():
                return
        try:
            index, _, recording = events.clip(event_id)
        except UnknownEvent:
            return  # deleted while it played
        entries = index.entries


@bp.get("/api/events/<event_id>/clip.json")
def clip_frames(event_id: str) -> Response:
    """The clip's frames as a list: ``times`` (seconds into the clip) and ``walls`` (wall clock), one
    per frame. A page that cannot play MJPEG (iOS WebKit) shows ``clip/<n>.jpg`` one after another
    at these times instead."""
    try:
        index, _, recording = Services.of().events.clip(event_id)
    except UnknownEvent:
        return json_error(404, f"no clip for event {event_id!r}")
    return jsonify({"frames": len(index.entries), "recording": recording,
                    "times": [round(entry.t, 3) for entry in index.entries],
                    "walls": [round(entry.wall, 3) for entry in index.entries]})


@bp.get("/api/events/<event_id>/clip/<int:number>.jpg")
def clip_frame(event_id: str, number: int) -> Response:
    """Frame ``number`` (from 0) of the clip, as it was recorded; cached, since it never changes."""
    opened = _open_clip(event_id)
    if isinstance(opened, Response):
        return opened
    index, data, _ = opened
    with data:
        if not 0 <= number < len(index.entries):
            return json_error(404, f"the clip of {event_id!r} has {len(index.entries)} frames, not frame {number}")
        entry = index.entries[number]
        data.seek(entry.offset)
        jpeg = data.read(entry.size)
    return Response(jpeg, mimetype="image/jpeg", headers=KEEP)


@bp.get("/api/events/<event_id>/clip")
def clip_download(event_id: str) -> Response:
    """The clip to keep: the MP4 as it is, or an earlier Motion-JPEG clip as an AVI file (no
    re-encode either way), for any player."""
    events = Services.of().events
    try:
        path, recording = events.mp4_clip(event_id)
        return send_video(path, recording, download_name=f"{event_id}.mp4")
    except UnknownEvent:
        pass
    opened = _open_clip(event_id)
    if isinstance(opened, Response):
        return opened
    index, data, recording = opened
    headers = {"Content-Length": str(avi_size(index)),
               "Content-Disposition": f'attachment; filename="{event_id}.avi"',
               **(NO_CACHE if recording else KEEP)}
    response = Response(avi_stream(index, data), mimetype="video/x-msvideo", headers=headers)
    response.call_on_close(data.close)
    return response


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
