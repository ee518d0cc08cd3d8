"""What the appliance keeps of the one H.264 encode: MP4 event clips, continuous segments, timelapses.

Over the real server with a scene whose motion the test drives (so an event's start and end are
known), files read back by ffprobe; retention on a folder of real files with an injected clock and
free space; faults of the recording folder on this machine's own filesystems (a folder removed,
a tmpfs remounted read-only or filled).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from appliance.config import RecordingSettings, RtspSettings
from appliance.h264.encoder import H264Encoder, Packet
from appliance.h264.mp4 import Mp4Writer, probe
from appliance.history.clip_files import read_index
from appliance.history.events import EventStore
from appliance.recording.folder import RecordingsFolder, segment_name
from appliance.recording.ring import PacketRing
from tests import helpers
from tests.broker import free_port
from tests.helpers import (
    SCENE_MOTION,
    SceneCamera,
    clip_pictures,
    make_config,
    require_tool,
    scene_event,
    start_scene,
)

FPS = 15.0  # rtsp.fps, the encode's rate
KEYFRAMES = 1.0  # rtsp.keyframe_interval


def ffprobe(path_or_url: str | Path, *entries: str) -> dict[str, Any]:
    require_tool("ffprobe")
    out = subprocess.run(["ffprobe", "-v", "error", "-of", "json", *entries, str(path_or_url)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def packet_times(path: Path) -> list[float]:
    body = ffprobe(path, "-select_streams", "v", "-show_entries", "packet=pts_time")
    return [float(packet["pts_time"]) for packet in body["packets"]]


def status(app: Any) -> dict[str, Any]:
    return requests.get(app.url + "/api/status", timeout=5).json()


def wait_for(check: Any, timeout: float, what: str) -> Any:
    """Poll an HTTP-visible fact (the status): the server is another party, nothing to wait on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


# --- the pre-roll ring ---------------------------------------------------------------------------


def packets(seconds: float, fps: float = 10.0, key_every: int = 10, start: float = 100.0) -> list[Packet]:
    return [Packet(bytes(100), n % key_every == 0, start + n / fps, (64, 64)) for n in range(round(seconds * fps))]


def test_the_ring_keeps_whole_groups_back_to_a_keyframe_before_its_seconds() -> None:
    ring = PacketRing(seconds=2.5)
    for packet in packets(10.0):  # keyframes at 100, 101, ... 109; newest 109.9
        ring.add(packet)
    kept = ring.since(109.9 - 2.5)
    assert kept[0].keyframe and kept[0].captured_at == pytest.approx(107.0)  # the keyframe before 107.4
    assert kept[-1].captured_at == pytest.approx(109.9) and len(kept) == 30
    assert ring.bytes == 100 * len(ring) <= 100 * 40  # never more than seconds + one group
    ring.clear()
    for packet in packets(0.5, start=200.05)[1:]:  # no keyframe yet: nothing a clip could start from
        ring.add(packet)
    assert len(ring) == 0 and ring.since(0) == []


# --- MP4 event clips over the real server --------------------------------------------------------


def test_an_mp4_clip_covers_its_pre_roll_to_its_post_roll_and_seeks_by_range(start_appliance: Any,
                                                                              tmp_path: Path) -> None:
    pre, post = 1.0, 1.0
    app, camera, feed = start_scene(start_appliance, tmp_path, clip={"pre_seconds": pre, "post_seconds": post})
    assert app.pipeline.wait_for_frames(50, timeout=10)  # 2.5 s of still scene: the ring is full
    record = scene_event(app, camera, feed, still_frames=0, moving_frames=30)
    clip = record["clip"]
    assert clip["format"] == "mp4" and clip["recording"] is False and (clip["width"], clip["height"]) == (320, 240)
    path = app.events.folder / f"{record['id']}.mp4"
    body = ffprobe(path, "-show_entries", "stream=codec_name,width,height:format=duration")
    assert body["streams"][0]["codec_name"] == "h264"
    duration = float(body["format"]["duration"])
    expected = pre + (record["ended_at"] - record["started_at"]) + post
    # The pre-roll reaches back to a keyframe at least pre_seconds before the trigger: up to one
    # keyframe interval more; the post-roll ends on the first frame past post_seconds.
    assert expected - 3 / FPS <= duration <= expected + KEYFRAMES + 3 / FPS, (duration, expected)
    assert clip["started_at"] <= record["started_at"] - pre + 2 / FPS
    times = packet_times(path)
    assert len(times) == clip["frames"] and all(b > a for a, b in itertools.pairwise(times))
    assert max(b - a for a, b in itertools.pairwise(times)) < 0.5  # no gap (a busy machine may skip a frame)
    # Served to players: whole, by ranges (a <video> seeks with them), and as a download.
    url = f"{app.url}/api/events/{record['id']}/clip.mp4"
    whole = requests.get(url, timeout=10)
    assert whole.status_code == 200 and whole.headers["Content-Type"] == "video/mp4"
    assert whole.headers["Accept-Ranges"] == "bytes" and whole.content == path.read_bytes()
    part = requests.get(url, headers={"Range": "bytes=1000-1999"}, timeout=10)
    assert part.status_code == 206 and part.content == whole.content[1000:2000]
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(whole.content)}"
    download = requests.get(f"{app.url}/api/events/{record['id']}/clip", timeout=10)
    assert download.content == whole.content and f"{record['id']}.mp4" in download.headers["Content-Disposition"]
    assert len(clip_pictures(app, record["id"])) == clip["frames"]  # every frame decodes
    # No raw pre-roll any more: the ring is encoded video, and the capture thread takes no clip frames.
    clips = status(app)["clips"]
    assert clips["format"] == "mp4" and clips["frames_taken"] == 0 and 0 < clips["pre_roll_bytes"] < 2**20
    assert clips["packets_dropped"] == 0  # nothing the encoder made was lost on its way to the card


@pytest.mark.recording
def test_an_old_motion_jpeg_clip_still_replays_and_downloads_after_the_upgrade(tmp_path: Path) -> None:
    from appliance.runtime import Appliance

    def scene_app(clip_format: str) -> tuple[Appliance, SceneCamera, Any]:
        camera = SceneCamera(make_config(tmp_path).camera)
        config = make_config(tmp_path, motion=SCENE_MOTION,
                             events={"clip": {"pre_seconds": 0.5, "post_seconds": 0.5, "format": clip_format}})
        app = Appliance(config, backend=camera)
        app.start()
        feed = app.live.subscribe()
        requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
        return app, camera, feed

    app, camera, feed = scene_app("mjpeg")  # what earlier versions kept
    try:
        old = scene_event(app, camera, feed, still_frames=20, moving_frames=20)
    finally:
        app.stop()
    app, camera, feed = scene_app("auto")  # the upgrade: MP4 from now on
    try:
        base = f"{app.url}/api/events/{old['id']}"
        assert requests.get(base, timeout=5).json()["clip"]["format"] == "mjpeg"
        with requests.get(base + "/clip.mjpg", stream=True, timeout=10) as replay:
            assert replay.status_code == 200 and replay.headers["Content-Type"].startswith("multipart/x-mixed-replace")
            assert b"\xff\xd8" in next(replay.iter_content(65536))
        avi = requests.get(base + "/clip", timeout=10)
        assert avi.status_code == 200 and avi.headers["Content-Type"] == "video/x-msvideo"
        saved = tmp_path / "old.avi"
        saved.write_bytes(avi.content)
        index = read_index(app.events.folder, old["id"])
        assert index is not None
        frames = ffprobe(saved, "-count_frames", "-show_entries", "stream=codec_name,nb_read_frames")["streams"][0]
        assert frames["codec_name"] == "mjpeg" and int(frames["nb_read_frames"]) == len(index.entries)
        refused = requests.get(base + "/clip.mp4", timeout=5)
        assert refused.status_code == 404 and "Motion-JPEG" in refused.json()["error"]
        new = scene_event(app, camera, feed, still_frames=20, moving_frames=20)
        assert new["clip"]["format"] == "mp4"
    finally:
        app.stop()


# --- retention, on a folder of real files ---------------------------------------------------------


def finished_segment(root: Path, start: float, seconds: float, size: int) -> Path:
    path = root / segment_name(start, seconds)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


DAY = 86400.0
NOW = 1_796_600_000.0  # 2026-12-06


def test_retention_removes_the_oldest_footage_by_bytes_and_by_days(tmp_path: Path) -> None:
    settings = RecordingSettings(continuous={"enabled": True, "keep_days": 2, "max_bytes": 5_000_000})
    for hour in range(72):  # three days of hourly segments, 100 kB each
        finished_segment(tmp_path, NOW - 3 * DAY + hour * 3600, 3600.0, 100_000)
    folder = RecordingsFolder(tmp_path, settings, min_free_bytes=0, wall=lambda: NOW)
    folder.load()
    kept = folder.files("continuous")
    assert len(kept) == 49 and all(r.start + r.seconds >= NOW - 2 * DAY for r in kept)  # what ends within two days
    assert len(list((tmp_path / "continuous").rglob("*.mp4"))) == 49
    tight = RecordingsFolder(tmp_path, settings.model_copy(update={"continuous": settings.continuous.model_copy(
        update={"max_bytes": 1_050_000})}), min_free_bytes=0, wall=lambda: NOW)
    tight.load()
    newest = tight.files("continuous")
    assert len(newest) == 10 and newest[-1].start == kept[-1].start  # the newest megabyte
    assert sorted(p.name for p in (tmp_path / "continuous").rglob("*.mp4")) == sorted(
        Path(r.name).name for r in newest)


def test_on_a_full_disk_continuous_footage_goes_before_any_event(tmp_path: Path) -> None:
    capacity = 400_000

    def free(_path: Path) -> int:  # one disk for both folders, as on the SD card
        return capacity - sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file())

    settings = RecordingSettings(continuous={"enabled": True})
    for minute in range(30):
        finished_segment(tmp_path / "recordings", NOW - 3600 + minute * 60, 60.0, 10_000)  # 300 kB
    folder = RecordingsFolder(tmp_path / "recordings", settings, min_free_bytes=50_000,
                              events_folder=tmp_path / "events", wall=lambda: NOW, free_bytes=free)
    (tmp_path / "events").mkdir()
    folder.load()
    store = EventStore(tmp_path / "events", max_count=100, max_bytes=10**9, min_free_bytes=50_000,
                       free_bytes=free, make_room_first=folder.free_for_events)
    events = []
    for number in range(10):  # 10 x 20 kB of events on a disk with 100 kB free
        event_id = f"20261206T{100000 + number:06d}Z-abcdef"
        events.append(event_id)
        store.save({"id": event_id, "kind": "motion", "started_at": NOW + number}, os.urandom(20_000))
    assert [e["id"] for e in store.list(0, 100)[0]][::-1] == events  # every event kept
    left = folder.files("continuous")
    assert len(left) < 30 and left[-1].start == NOW - 3600 + 29 * 60  # the oldest footage went, newest stays
    assert free(tmp_path) >= 50_000 - 20_000


# --- continuous recording over the real server ----------------------------------------------------


@pytest.mark.recording
def test_continuous_segments_follow_one_another_for_minutes(start_appliance: Any) -> None:
    app = start_appliance(camera={"backend": "synthetic", "size": "320x240", "fps": 15},
                          recording={"continuous": {"enabled": True, "segment_seconds": 2}})
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    assert app.h264 is not None
    started = app.h264.frames_encoded
    began = time.monotonic()
    wait_for(lambda: status(app)["recording"]["continuous"]["files"] >= 60, 150, "60 segments")
    encoded_rate = (app.h264.frames_encoded - started) / (time.monotonic() - began)
    listing = requests.get(app.url + "/api/recordings", params={"start": time.time() - 600}, timeout=10).json()
    segments = listing["continuous"]
    assert len(segments) >= 60
    for earlier, later in itertools.pairwise(segments):
        gap = later["start"] - (earlier["start"] + earlier["seconds"])
        assert abs(gap) <= 1 / FPS, (earlier["name"], later["name"], gap)  # no frame lost, none twice
    for segment in segments[::15]:
        path = app.recordings.folder.folder / segment["name"]
        body = ffprobe(path, "-count_frames", "-show_entries", "stream=codec_name,nb_read_frames:format=duration")
        assert body["streams"][0]["codec_name"] == "h264"
        assert abs(float(body["format"]["duration"]) - segment["seconds"]) <= 1 / FPS
        assert int(body["streams"][0]["nb_read_frames"]) >= segment["seconds"] * FPS * 0.8  # no frames lost
        served = requests.get(app.url + segment["url"], headers={"Range": "bytes=0-99"}, timeout=10)
        assert served.status_code == 206 and len(served.content) == 100
    assert encoded_rate < FPS * 1.1  # one encode, however many consume it (event clips and recording)
    assert status(app)["recording"]["fault"] is None


@pytest.mark.recording
def test_kill_9_mid_segment_leaves_a_file_that_plays_and_start_up_tidies_it(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({
        "state_dir": str(tmp_path / "state"), "server": {"host": "127.0.0.1", "port": port},
        "camera": {"backend": "synthetic", "size": "320x240", "fps": 15, "restore": "on"},
        "recording": {"continuous": {"enabled": True, "segment_seconds": 30}}}))
    child = subprocess.Popen([sys.executable, "-m", "appliance", "--config", str(config)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    day_folders = tmp_path / "state" / "recordings" / "continuous"
    try:
        part = wait_for(lambda: next(day_folders.rglob("*.part.mp4"), None) if day_folders.exists() else None,
                        30, "a segment being written")
        wait_for(lambda: part.stat().st_size > 60_000, 30, "a few fragments on disk")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    cut = tmp_path / "cut.mp4"
    shutil.copy(part, cut)
    played = ffprobe(cut, "-count_frames", "-show_entries", "stream=codec_name,nb_read_frames")["streams"][0]
    assert played["codec_name"] == "h264" and int(played["nb_read_frames"]) >= 15  # up to its last fragment
    from appliance.runtime import Appliance

    app = Appliance(make_config(tmp_path, camera={"backend": "synthetic", "size": "320x240"},
                                recording={"continuous": {"enabled": True, "segment_seconds": 30}}))
    app.start()
    try:
        assert app.recordings is not None and app.recordings.flush(10)
        assert not list(day_folders.rglob("*.part.mp4"))  # tidied: trimmed, named
        kept = app.recordings.folder.files("continuous")
        assert len(kept) == 1 and Path(kept[0].name).name.startswith(part.name[:10])  # its start, HHMMSS.mmm
        final = app.recordings.folder.folder / kept[0].name
        check = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=nb_read_frames",
                                "-of", "csv=p=0", str(final)], capture_output=True, text=True, timeout=60)
        assert check.returncode == 0 and check.stderr == "", check.stderr  # ends cleanly now
        assert int(check.stdout.strip()) == int(played["nb_read_frames"])
        duration = float(ffprobe(final, "-show_entries", "format=duration")["format"]["duration"])
        assert kept[0].seconds == pytest.approx(duration, abs=0.01)  # its name says how long it plays
    finally:
        app.stop()


# --- faults of the recording folder --------------------------------------------------------------


def watched(app: Any, camera: SceneCamera, feed: Any) -> dict[str, Any]:
    """While the folder fails: the stream goes on and a motion event is still recorded."""
    before = app.pipeline.stats().frames_captured
    record = scene_event(app, camera, feed, still_frames=10, moving_frames=15)
    assert app.pipeline.stats().frames_captured > before + 20
    with requests.get(app.url + "/stream.mjpg", stream=True, timeout=10) as stream:
        assert b"\xff\xd8" in next(stream.iter_content(65536))
    return record


def segments_after(app: Any, moment: float) -> list[dict[str, Any]]:
    return [s for s in requests.get(app.url + "/api/recordings", timeout=5).json()["continuous"]
            if s["start"] > moment]


def assert_no_more_threads(before: list[str]) -> None:
    now = threads_now()
    assert len(now) <= len(before) + 1, f"new threads: {Counter(now) - Counter(before)}"


def threads_now() -> list[str]:
    """This process's threads as the kernel counts them (/proc), named as Python knows them."""
    count = len(os.listdir(f"/proc/{os.getpid()}/task"))
    names = sorted(thread.name for thread in threading.enumerate())
    return names + ["(not Python's)"] * max(0, count - len(names))


@pytest.mark.recording
def test_a_removed_recording_folder_is_a_fault_and_recording_resumes_when_it_is_back(
        start_appliance: Any, tmp_path: Path) -> None:
    folder = tmp_path / "nas"
    folder.mkdir()
    app, camera, feed = start_scene(start_appliance, tmp_path, clip={"pre_seconds": 0.3, "post_seconds": 0.3},
                                    recording={"folder": str(folder), "retry_seconds": 0.5,
                                               "continuous": {"enabled": True, "segment_seconds": 2}})
    wait_for(lambda: status(app)["recording"]["continuous"]["files"] >= 1, 20, "a first segment")
    watched(app, camera, feed)  # every thread that an event and a viewer start, started: the steady state
    threads = threads_now()
    shutil.rmtree(folder)  # the share went away
    # The segment being written is lost with the folder; then each try says the folder is missing.
    wait_for(lambda: "missing" in (status(app)["recording"]["fault"] or ""), 20, "the fault reported")
    assert str(folder) in status(app)["recording"]["fault"]
    record = watched(app, camera, feed)
    assert record["clip"]["format"] == "mp4"  # event clips live on the card: untouched
    assert not folder.exists()  # never made again here: it may be a mount point
    folder.mkdir()
    back = time.time()
    wait_for(lambda: status(app)["recording"]["fault"] is None and segments_after(app, back), 20, "recording resumed")
    assert_no_more_threads(threads)
    assert status(app)["recording"]["dropped"] == 0  # a missing folder drops nothing from the queue: no wait


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Any:
    with helpers.small_tmpfs(tmp_path / "nas", "3m") as mount:
        yield mount


@pytest.mark.root
@pytest.mark.recording
def test_a_read_only_or_full_recording_folder_is_a_fault_and_nothing_grows(start_appliance: Any, tmp_path: Path,
                                                                            small_tmpfs: Path) -> None:
    app, camera, feed = start_scene(start_appliance, tmp_path, clip={"pre_seconds": 0.3, "post_seconds": 0.3},
                                    events={"min_free_bytes": 256 * 1024},
                                    recording={"folder": str(small_tmpfs), "retry_seconds": 0.5,
                                               "continuous": {"enabled": True, "segment_seconds": 2}})
    wait_for(lambda: status(app)["recording"]["continuous"]["files"] >= 2, 20, "segments")
    watched(app, camera, feed)  # the steady state: every thread an event and a viewer start
    threads = threads_now()
    kept = {s["name"]: s["bytes"] for s in requests.get(app.url + "/api/recordings", timeout=5).json()["continuous"]}
    # Read-only (a share exported so, a card that failed): a read-only mount of the same files over the
    # folder. The file being written goes on through its open descriptor; its renaming, and every new
    # file, meet the read-only mount.
    subprocess.run(["mount", "--bind", str(small_tmpfs), str(small_tmpfs)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(small_tmpfs)], check=True)
        fault = wait_for(lambda: status(app)["recording"]["fault"], 20, "the read-only fault")
        assert "Read-only" in fault, fault
        watched(app, camera, feed)
        for name, size in kept.items():  # nothing already kept was touched
            assert (small_tmpfs / name).stat().st_size == size
    finally:
        subprocess.run(["umount", str(small_tmpfs)], check=True)
    back = time.time()
    wait_for(lambda: status(app)["recording"]["fault"] is None and segments_after(app, back), 20, "resumed (rw)")
    # Full, of something that is not ours: our footage gives way first, then nothing is left to.
    filler = small_tmpfs / "someone-else.bin"
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(os.urandom(65536))
        except OSError:
            pass
    before_rss = rss_kib()
    fault = wait_for(lambda: status(app)["recording"]["fault"], 30, "the full-disk fault")
    assert "full" in fault or "No space left" in fault, fault
    watched(app, camera, feed)
    filler.unlink()
    back = time.time()
    wait_for(lambda: status(app)["recording"]["fault"] is None and segments_after(app, back), 30, "resumed (space)")
    assert_no_more_threads(threads)
    assert rss_kib() - before_rss < 40 * 1024  # queued video is bounded (recording.max_pending_bytes)
    for name, size in kept.items():
        path = small_tmpfs / name
        assert not path.exists() or path.stat().st_size == size  # kept whole, or given way for space


def rss_kib() -> int:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# --- the MP4 writer itself ---------------------------------------------------------------------------


def test_an_mp4_refused_by_the_disk_mid_file_keeps_what_it_had(tmp_path: Path) -> None:
    encoder = H264Encoder("libx264", (160, 120), RtspSettings())
    rng = np.random.default_rng(1)
    made = [p for n in range(45) for p in encoder.encode(rng.integers(0, 255, (120, 160, 3), np.uint8), 0,
                                                          captured_at=n / FPS)]
    writer = Mp4Writer(tmp_path / "a.mp4", made[0], FPS, 0.0)
    for packet in made[1:30]:
        writer.append(packet)
    writer.abandon()  # as after a refused write: the fragment in hand never reaches the disk
    facts = probe(tmp_path / "a.mp4")
    assert facts is not None and facts.frames == 15  # one whole fragment (a keyframe a second at 15 fps)


# --- timelapse -------------------------------------------------------------------------------------


def test_a_timelapse_takes_a_picture_every_interval_and_plays_at_its_rate(start_appliance: Any) -> None:
    app = start_appliance(camera={"backend": "synthetic", "size": "320x240", "fps": 15},
                          recording={"timelapse": {"enabled": True, "interval": 1, "fps": 25, "period": "hour"}})
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    assert app.recordings is not None and app.recordings.timelapse is not None
    timelapse = app.recordings.timelapse
    wait_for(lambda: timelapse.frames_taken >= 3, 20, "three timelapse pictures")
    assert status(app)["recording"]["timelapse"]["frames_taken"] >= 3
    folder = app.recordings.folder.folder
    app.stop()  # the movie of the hour so far is finished and named at shutdown
    movies = list((folder / "timelapse").glob("*.mp4"))
    assert len(movies) == 1 and not movies[0].name.endswith(".part.mp4"), movies
    frames = int(movies[0].name.rsplit("_", 1)[1].removesuffix("f.mp4"))
    body = ffprobe(movies[0], "-count_frames", "-show_entries",
                   "stream=codec_name,width,height,nb_read_frames,avg_frame_rate:format=duration")
    stream = body["streams"][0]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 320, 240)
    assert int(stream["nb_read_frames"]) == frames >= 3
    assert float(body["format"]["duration"]) == pytest.approx(frames / 25, abs=0.05)  # one picture a frame


# --- the routes: the same login, Host check and bounds as every route ------------------------------


def test_the_recordings_routes_need_the_login_and_serve_only_what_is_listed(start_appliance: Any,
                                                                           tmp_path: Path) -> None:
    from appliance.passwords import hash_password

    login = ("admin", "a long enough password")
    app = start_appliance(camera={"backend": "synthetic", "size": "320x240", "fps": 15},
                          server={"auth": {"username": login[0], "password_hash": hash_password(login[1])}},
                          recording={"continuous": {"enabled": True, "segment_seconds": 2}})
    requests.put(app.url + "/api/camera", json={"on": True}, auth=login, timeout=20).raise_for_status()
    listing = wait_for(lambda: requests.get(app.url + "/api/recordings", auth=login, timeout=5).json()["continuous"],
                       20, "a segment")
    segment = listing[0]["url"]
    for path in ("/api/recordings", segment):
        assert requests.get(app.url + path, timeout=5).status_code == 401
        assert requests.get(app.url + path, headers={"Host": "evil.example"}, auth=login,
                            timeout=5).status_code == 421
    served = requests.get(app.url + segment, auth=login, timeout=5)
    assert served.status_code == 200 and served.headers["Content-Type"] == "video/mp4"
    download = requests.get(app.url + segment + "?download=1", auth=login, timeout=5)
    assert "attachment" in download.headers["Content-Disposition"]
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"not yours")
    for name in ("../../../secret.mp4", "continuous/../../secret.mp4", "continuous/2026-12-06/nothing_1.000.mp4",
                 "events/x.mp4", segment.removeprefix("/api/recordings/").replace(".mp4", ".part.mp4")):
        answer = requests.get(f"{app.url}/api/recordings/{name}", auth=login, timeout=5)
        assert answer.status_code == 404 and answer.json()["error"], name
    for query in ("start=abc", "start=10&end=5", f"start=0&end={9 * 86400}", "end=-1"):
        answer = requests.get(f"{app.url}/api/recordings?{query}", auth=login, timeout=5)
        assert answer.status_code == 400 and answer.json()["error"], query
    off = start_appliance(camera={"backend": "synthetic", "size": "320x240"})
    assert requests.get(off.url + "/api/recordings", timeout=5).status_code == 404  # recording is off


@pytest.mark.root
@pytest.mark.recording
def test_a_recording_folder_that_stalls_costs_recordings_only_and_shutdown_does_not_wait_for_it(
        start_appliance: Any, tmp_path: Path) -> None:
    from tests.stalling_fs import stalling_mount

    backing, share = tmp_path / "nas-disk", tmp_path / "nas"
    backing.mkdir()
    share.mkdir()
    with stalling_mount(backing, share) as nas:
        app, camera, feed = start_scene(start_appliance, tmp_path, clip={"pre_seconds": 0.3, "post_seconds": 0.3},
                                        recording={"folder": str(share), "require_mount": True, "stall_seconds": 2,
                                                   "max_pending_bytes": 256 * 1024, "retry_seconds": 0.5,
                                                   "continuous": {"enabled": True, "segment_seconds": 2}})
        wait_for(lambda: status(app)["recording"]["continuous"]["files"] >= 1, 20, "a first segment")
        watched(app, camera, feed)  # the steady state
        threads, rss = threads_now(), rss_kib()
        nas.stall()  # the server stops answering: every call on the share waits
        fault = wait_for(lambda: status(app)["recording"]["fault"], 20, "the stall reported")
        assert "has not returned" in fault and str(share) in fault, fault
        watched(app, camera, feed)  # streaming, detection and event clips (on the card) go on
        recording = status(app)["recording"]
        assert recording["queued_bytes"] <= 256 * 1024  # what waits for the share is bounded
        assert_no_more_threads(threads)
        assert rss_kib() - rss < 40 * 1024
        nas.flow()  # it answers again
        back = time.time()
        wait_for(lambda: status(app)["recording"]["fault"] is None and segments_after(app, back), 30, "resumed")
        assert nas.held() > 0
        nas.stall()  # and stalls again, for good: shutdown must not wait for it
        wait_for(lambda: status(app)["recording"]["fault"], 20, "the second stall")
        began = time.monotonic()
        app.stop()
        assert time.monotonic() - began < 5  # the recorder thread is left behind, a daemon
