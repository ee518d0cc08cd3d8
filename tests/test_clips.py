"""Motion-JPEG event clips over the real server: pre- and post-roll, pace, the AVI download, limits
and deletes. They are what earlier versions kept (and still replay after an upgrade) and what
``events.clip.format: mjpeg`` keeps where PyAV cannot run; MP4 clips are tests/test_recording.py's.

The camera is a still scene in which a square moves only while the test says so, so the event's
start and end, and so the clip's expected frames, are known.
"""

from __future__ import annotations

import json
import queue
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from appliance.history.clip_files import read_index
from appliance.history.events import EventStore
from tests.helpers import (
    SceneCamera,
    decode_jpeg,
    iter_mjpeg,
    next_motion,
    require_tool,
    scene_event,
    start_scene,
)

PRE, POST, FPS = 1.0, 1.0, 10.0  # start_scene's clip settings; the clip's size stays 640x360 at most
MJPEG = {"format": "mjpeg"}
SHORT = {"pre_seconds": 0.5, "post_seconds": 0.5, **MJPEG}
"""For tests of plumbing, not of the rolls' lengths: every second of a clip is a second of waiting."""


def status(app: Any) -> dict[str, Any]:
    return requests.get(app.url + "/api/status", timeout=5).json()


@pytest.fixture
def scene(start_appliance: Any, tmp_path: Path) -> tuple[Any, SceneCamera, queue.Queue[Any]]:
    return start_scene(start_appliance, tmp_path, clip=MJPEG)


def test_an_event_records_its_pre_and_post_roll_and_nothing_is_encoded_before(scene: Any, tmp_path: Path) -> None:
    app, camera, feed = scene
    # Two seconds of a still scene, nobody watching: the pre-roll ring fills, nothing is encoded.
    assert app.pipeline.wait_for_frames(40, timeout=10)
    quiet = status(app)
    assert quiet["frames_encoded"] == 0 and quiet["clips"]["frames_encoded"] == 0
    assert quiet["clips"]["frames_taken"] >= 15  # the ring is filled at the clip's rate, raw
    record = scene_event(app, camera, feed, still_frames=0, moving_frames=30)  # 1.5 s of motion
    clip = record["clip"]
    assert clip["recording"] is False and clip["width"] == 320 and clip["height"] == 240  # never enlarged
    index = read_index(app.events.folder, record["id"])
    assert index is not None and len(index.entries) == clip["frames"]
    walls = [entry.wall for entry in index.entries]
    before = [w for w in walls if w < record["started_at"]]
    after = [w for w in walls if w > record["ended_at"]]
    # pre_seconds before the trigger and post_seconds after the end, at the clip's rate (one frame of slack)
    assert abs(len(before) - PRE * FPS) <= 1, before
    assert abs(len(after) - POST * FPS) <= 1, after
    assert record["started_at"] - walls[0] == pytest.approx(PRE, abs=0.15)
    assert walls[-1] - record["ended_at"] == pytest.approx(POST - 1 / FPS, abs=0.15)
    steps = [b.t - a.t for a, b in zip(index.entries, index.entries[1:], strict=False)]
    assert all(abs(step - 1 / FPS) < 0.03 for step in steps), steps
    assert clip["seconds"] == pytest.approx(len(walls) / FPS, abs=0.1)
    # Encoded once each: the clip's frames, plus the event's snapshot; the stream was never wanted.
    after_event = status(app)
    assert after_event["clips"]["frames_encoded"] == clip["frames"]
    assert after_event["frames_encoded"] == 1 and after_event["clips"]["frames_dropped"] == 0


def test_the_clip_replays_at_its_pace_and_downloads_as_a_file_ffprobe_reads(start_appliance: Any,
                                                                           tmp_path: Path) -> None:
    ffprobe = require_tool("ffprobe")
    app, camera, feed = start_scene(start_appliance, tmp_path, clip=SHORT)  # a 2 s clip: paced replays are real time
    record = scene_event(app, camera, feed, still_frames=10, moving_frames=10)
    clip, url = record["clip"], f"{app.url}/api/events/{record['id']}/clip"
    listed = requests.get(app.url + "/api/events", timeout=5).json()["events"][0]
    assert listed["clip"] == clip

    # ffmpeg's own MJPEG-over-HTTP reader plays the replay too (so do VLC and ffplay), beside ours.
    replayed = subprocess.Popen([ffprobe, "-v", "error", "-count_frames", "-show_entries",
                                 "stream=codec_name,nb_read_frames", "-of", "json", url + ".mjpg"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    began = time.monotonic()
    arrivals, times = [], []
    with requests.get(url + ".mjpg", stream=True, timeout=10) as replay:
        assert replay.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        for headers, jpeg in iter_mjpeg(replay):
            arrivals.append(time.monotonic() - began)
            times.append(float(headers["x-clip-time"]))
            assert decode_jpeg(jpeg).shape == (240, 320, 3)
    assert len(times) == clip["frames"] and times[0] == 0.0
    # Never ahead of the recording, and not far behind it.
    assert all(arrival >= t - 0.02 for arrival, t in zip(arrivals, times, strict=True))
    assert arrivals[-1] == pytest.approx(times[-1], abs=0.5)

    download = requests.get(url, timeout=10)
    assert download.status_code == 200 and download.headers["Content-Type"] == "video/x-msvideo"
    assert int(download.headers["Content-Length"]) == len(download.content)
    assert f'filename="{record["id"]}.avi"' in download.headers["Content-Disposition"]
    path = tmp_path / "clip.avi"
    path.write_bytes(download.content)
    probe = subprocess.run([ffprobe, "-v", "error", "-count_frames", "-show_entries",
                            "stream=codec_name,width,height,nb_read_frames:format=format_name,duration",
                            "-of", "json", str(path)], capture_output=True, text=True, timeout=30, check=True)
    assert probe.stderr == ""  # not even a warning
    info = json.loads(probe.stdout)
    stream = info["streams"][0]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("mjpeg", 320, 240)
    assert int(stream["nb_read_frames"]) == clip["frames"]
    assert info["format"]["format_name"] == "avi"
    assert float(info["format"]["duration"]) == pytest.approx(clip["seconds"], abs=0.2)
    out, err = replayed.communicate(timeout=60)
    assert replayed.returncode == 0, err
    stream = json.loads(out)["streams"][0]
    assert stream["codec_name"] == "mjpeg" and int(stream["nb_read_frames"]) == clip["frames"]


def test_clip_errors_are_json_and_replays_are_limited(start_appliance: Any, tmp_path: Path) -> None:
    app, camera, feed = start_scene(start_appliance, tmp_path, clip={"max_viewers": 1, **SHORT})
    for path in ("/api/events/20260101T000000Z-abcdef/clip", "/api/events/20260101T000000Z-abcdef/clip.mjpg",
                 "/api/events/..%2f..%2fetc/clip"):
        answer = requests.get(app.url + path, timeout=5)
        assert answer.status_code == 404 and "error" in answer.json()
    record = scene_event(app, camera, feed, still_frames=10, moving_frames=10)
    frames = record["clip"]["frames"]
    listing = requests.get(f"{app.url}/api/events/{record['id']}/clip.json", timeout=5).json()
    assert listing["frames"] == frames == len(listing["times"]) and listing["times"][0] == 0.0
    first = requests.get(f"{app.url}/api/events/{record['id']}/clip/0.jpg", timeout=5)
    assert decode_jpeg(first.content).shape == (240, 320, 3) and "max-age" in first.headers["Cache-Control"]
    beyond = requests.get(f"{app.url}/api/events/{record['id']}/clip/{frames}.jpg", timeout=5)
    assert beyond.status_code == 404 and f"has {frames} frames" in beyond.json()["error"]
    assert requests.get(f"{app.url}/api/events/{record['id']}/clip/-1.jpg", timeout=5).status_code == 404
    url = f"{app.url}/api/events/{record['id']}/clip.mjpg"
    with requests.get(url, stream=True, timeout=10) as first:
        next(iter_mjpeg(first))
        second = requests.get(url, timeout=5)
        assert second.status_code == 503 and "max_viewers" in second.json()["error"]
        assert second.headers["Retry-After"]
    # The first replay was closed: its place is free again (the server notices the close at once).
    deadline = time.monotonic() + 5
    while (third := requests.get(url, stream=True, timeout=5)).status_code == 503 and time.monotonic() < deadline:
        third.close()
        app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + 2, timeout=1)  # a moment, paced
    with third:
        assert third.status_code == 200
    # Deleting the event takes its clip with it.
    assert requests.delete(f"{app.url}/api/events/{record['id']}", timeout=5).status_code == 200
    assert not list(app.events.folder.glob(record["id"] + "*"))
    for tail in ("/clip", "/clip.mjpg", "/clip.json", "/clip/0.jpg"):
        assert requests.get(f"{app.url}/api/events/{record['id']}{tail}", timeout=5).status_code == 404


def test_a_clip_followed_while_recording_plays_to_its_end(start_appliance: Any, tmp_path: Path) -> None:
    app, camera, feed = start_scene(start_appliance, tmp_path, clip=SHORT)
    assert app.pipeline.wait_for_frames(10, timeout=10)
    camera.moving.set()
    event_id = next_motion(feed, "start")["id"]
    events = requests.get(app.url + "/api/events", timeout=5).json()["events"]
    assert events[0]["id"] == event_id and events[0]["clip"]["recording"] is True
    with requests.get(f"{app.url}/api/events/{event_id}/clip.mjpg", stream=True, timeout=10) as replay:
        parts = iter_mjpeg(replay)
        next(parts)
        camera.moving.clear()  # the event ends while the replay runs; it follows through the post-roll
        received = 1 + sum(1 for _ in parts)
    record = requests.get(f"{app.url}/api/events/{event_id}", timeout=5).json()
    assert record["clip"]["recording"] is False and received == record["clip"]["frames"]


# --- the store, without a camera ------------------------------------------------------------------

def jpeg(size: int) -> bytes:
    """A JPEG-framed blob of ``size`` bytes (the store checks the markers, not the picture)."""
    return b"\xff\xd8" + b"\0" * (size - 4) + b"\xff\xd9"


def record(event_id: str, started_at: float) -> dict[str, Any]:
    return {"id": event_id, "kind": "motion", "started_at": started_at, "ended_at": started_at + 1}


def test_clips_count_in_max_bytes_push_out_the_oldest_and_go_with_their_event(tmp_path: Path) -> None:
    store = EventStore(tmp_path, max_count=100, max_bytes=250_000)
    old, new = "20260101T000000Z-aaaaaa", "20260101T000100Z-bbbbbb"
    for event_id, at in ((old, 0.0), (new, 60.0)):
        assert store.begin_clip(event_id, 320, 240, 10)
        store.save(record(event_id, at))
        for i in range(8):
            assert store.append_clip(event_id, jpeg(10_000), at + i / 10, i / 10)
        store.finish_clip(event_id)
    assert store.total_bytes() == sum(p.stat().st_size for p in tmp_path.iterdir())
    assert store.get(old)["clip"]["frames"] == 8
    # The newer clip grows past the limit: the older event goes, whole, to make room.
    third = "20260101T000200Z-cccccc"
    assert store.begin_clip(third, 320, 240, 10)
    store.save(record(third, 120.0))
    for i in range(12):
        assert store.append_clip(third, jpeg(10_000), 120 + i / 10, i / 10)
    assert store.total_bytes() <= 250_000
    assert not any(p.name.startswith(old[:16]) for p in tmp_path.iterdir())
    # One clip stops at half of max_bytes rather than push out everything else.
    while store.append_clip(third, jpeg(10_000), 130.0, 10.0):
        pass
    assert store.get(third)["clip"]["frames"] == 12 and not store.get(third)["clip"]["recording"]
    assert store.get(new)["clip"]["frames"] == 8  # kept
    assert store.total_bytes() <= 250_000
    # Deleted while recording: the files go, and the writer's next frame is refused.
    fourth = "20260101T000300Z-dddddd"
    assert store.begin_clip(fourth, 320, 240, 10)
    store.save(record(fourth, 180.0))
    store.delete(fourth)
    assert not store.append_clip(fourth, jpeg(1000), 181.0, 1.0) and not store.begin_clip(fourth, 320, 240, 10)
    assert not list(tmp_path.glob(fourth + "*"))


def test_a_clip_cut_by_a_power_cut_keeps_its_whole_frames(tmp_path: Path) -> None:
    store = EventStore(tmp_path, max_count=10, max_bytes=10**7)
    event_id = "20260101T000000Z-aaaaaa"
    store.begin_clip(event_id, 320, 240, 10)
    store.save(record(event_id, 0.0))
    for i in range(5):
        store.append_clip(event_id, jpeg(2000), i / 10, i / 10)
    # The power goes mid-frame: half a JPEG in the data, half a line in the index; and an orphan clip.
    with open(tmp_path / f"{event_id}.mjpeg", "ab") as data:
        data.write(jpeg(2000)[:700])
    with open(tmp_path / f"{event_id}.idx", "ab") as index:
        index.write(b'[10000, 2000, 0.5')
    (tmp_path / "20260101T000500Z-eeeeee.mjpeg").write_bytes(jpeg(100))
    reopened = EventStore(tmp_path, max_count=10, max_bytes=10**7)
    clip = reopened.get(event_id)["clip"]
    assert clip["frames"] == 5 and clip["recording"] is False
    assert not (tmp_path / "20260101T000500Z-eeeeee.mjpeg").exists()
    index, _, recording = reopened.clip(event_id)
    assert len(index.entries) == 5 and not recording


def test_overlapping_clips_share_frames_encoded_once(tmp_path: Path) -> None:
    """Event B starts during A's post-roll: the frames they share are in both clips, encoded once."""
    from appliance.camera_backends.base import Frame
    from appliance.capture.clips import ClipTap
    from appliance.capture.encoder import opencv_encoder
    from appliance.config import ClipSettings, OverlaySettings
    from appliance.history.events import EventRecorder

    store = EventStore(tmp_path, max_count=10, max_bytes=10**8)
    done: list[dict[str, Any]] = []
    recorder = EventRecorder(store, on_saved=lambda kind, rec: done.append(rec) if kind == "clip" else None,
                             encode=opencv_encoder(75), clip_fps=10, max_pending=1000)  # no real-time here
    tap = ClipTap(ClipSettings(pre_seconds=1, post_seconds=1, fps=10), OverlaySettings(), recorder)
    image = np.full((240, 320, 3), 90, np.uint8)
    a, b = "20260101T000000Z-aaaaaa", "20260101T000003Z-bbbbbb"
    store.save(record(a, 0.0))
    store.save(record(b, 3.0))
    for step in range(60):  # 6 s at 10 frames a second
        now = step / 10
        tap.offer(Frame(image.copy(), timestamp=1_000 + now), None, (), now, watching=True)
        if step == 20:
            tap.started(a)
        elif step == 25:
            tap.ended(a, now)  # A's post-roll runs to 3.5 s ...
        elif step == 30:
            tap.started(b)  # ... and B starts at 3.0 s, within it
        elif step == 40:
            tap.ended(b, now)
    tap.close()
    recorder.flush()
    clips = {rec["id"]: rec["clip"] for rec in done}
    index_a, index_b = read_index(tmp_path, a), read_index(tmp_path, b)
    assert index_a is not None and index_b is not None
    walls_a = [entry.wall for entry in index_a.entries]
    walls_b = [entry.wall for entry in index_b.entries]
    assert len(walls_a) == 10 + 1 + 5 + 9 and len(walls_b) == 10 + 1 + 10 + 9  # pre, trigger, event, post
    shared = set(walls_a) & set(walls_b)
    assert len(shared) == 15  # from B's pre-roll (2.0 s) to the end of A's post-roll (3.4 s)
    assert recorder.clip_frames_encoded == len(set(walls_a) | set(walls_b))
    assert clips[a]["frames"] == len(walls_a) and clips[b]["frames"] == len(walls_b)
    recorder.close()


def test_a_slow_card_at_the_end_of_a_clip_does_not_hold_up_the_history(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The clip's fsync (seconds on a tired SD card) runs outside the store's lock: the page's
    history and /api/status keep answering meanwhile."""
    import threading

    from appliance.history import clip_files

    syncing, card_back = threading.Event(), threading.Event()
    real_close = clip_files.ClipWriter.close

    def stalled_close(self: clip_files.ClipWriter, sync: bool = True) -> None:
        if sync:
            syncing.set()
            card_back.wait(10)
        real_close(self, sync)

    monkeypatch.setattr(clip_files.ClipWriter, "close", stalled_close)
    store = EventStore(tmp_path, max_count=10, max_bytes=10**7)
    event_id = "20260101T000000Z-aaaaaa"
    store.begin_clip(event_id, 320, 240, 10)
    store.save(record(event_id, 0.0))
    store.append_clip(event_id, jpeg(2000), 0.0, 0.0)
    finishing = threading.Thread(target=store.finish_clip, args=(event_id,))
    finishing.start()
    try:
        assert syncing.wait(5)
        began = time.monotonic()
        assert store.list()[1] == 1 and store.count() == 1 and store.get(event_id)["id"] == event_id
        assert time.monotonic() - began < 1.0
    finally:
        card_back.set()
        finishing.join(10)
    assert store.get(event_id)["clip"]["recording"] is False


def test_stopping_mid_event_leaves_a_whole_clip(scene: Any) -> None:
    """The appliance stops (SIGTERM, a reboot) while a clip records: the clip ends where it is,
    durable, and the next start lists it complete."""
    app, camera, feed = scene
    assert app.pipeline.wait_for_frames(30, timeout=10)
    camera.moving.set()
    event_id = next_motion(feed, "start")["id"]
    assert app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + 20, timeout=10)
    app.stop()
    reopened = EventStore(app.events.folder, max_count=10, max_bytes=10**8)
    clip = reopened.get(event_id)["clip"]
    assert clip["recording"] is False and clip["frames"] >= PRE * FPS + 10
    index, _, _ = reopened.clip(event_id)
    assert len(index.entries) == clip["frames"]
