"""The HTTP surface over the real cheroot server on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import requests

from appliance.camera_backends.synthetic import SyntheticCamera
from appliance.runtime import Appliance
from tests.broker import free_port
from tests.helpers import CountingCamera, decode_jpeg, iter_mjpeg, make_config, wait_until_serving

Start = Callable[..., Appliance]


def put(app: Appliance, on: bool) -> dict[str, Any]:
    response = requests.put(f"{app.url}/api/camera", json={"on": on}, timeout=20)
    assert response.status_code == 200, response.text
    return response.json()


def test_page_and_camera_api(start_appliance: Start) -> None:
    app = start_appliance()
    page = requests.get(app.url + "/", timeout=5)
    assert page.status_code == 200 and 'id="camera-toggle"' in page.text and 'id="live"' in page.text
    assert requests.get(app.url + "/api/camera", timeout=5).json()["on"] is False
    body = put(app, True)
    assert body["on"] is True and body["state"] == "on" and body["backend"] == "synthetic"
    toggled = requests.post(app.url + "/api/camera/toggle", timeout=20).json()
    assert toggled["on"] is False and toggled["state"] == "off"


def test_every_streamed_part_is_a_valid_jpeg(start_appliance: Start) -> None:
    app = start_appliance()
    put(app, True)
    with requests.get(app.url + "/stream.mjpg", stream=True, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=frame"
        parts = []
        for headers, body in iter_mjpeg(response):
            assert headers["content-type"] == "image/jpeg"
            parts.append(decode_jpeg(body))
            if len(parts) == 5:
                break
    assert all(part.shape == (240, 320, 3) for part in parts)


def test_ten_viewers_all_receive_frames_from_one_encode_each(start_appliance: Start) -> None:
    app = start_appliance()
    put(app, True)
    received = [0] * 10
    barrier = threading.Barrier(11)
    done = threading.Event()

    def watch(i: int) -> None:
        with requests.get(app.url + "/stream.mjpg", stream=True, timeout=10) as response:
            assert response.status_code == 200
            barrier.wait(10)
            for _headers, body in iter_mjpeg(response):
                decode_jpeg(body)
                received[i] += 1
                if received[i] >= 10 or done.is_set():
                    return

    threads = [threading.Thread(target=watch, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    barrier.wait(10)
    assert app.broadcaster.viewers == 10
    before = app.pipeline.stats()
    for thread in threads:
        thread.join(30)
    done.set()
    after = app.pipeline.stats()
    assert all(count >= 10 for count in received), received
    encoded = after.frames_encoded - before.frames_encoded
    # One encode per captured frame at most, whatever the number of viewers ...
    assert encoded <= after.frames_captured - before.frames_captured + 1
    # ... and the viewers together got more frames than were encoded: they share each JPEG.
    assert sum(received) > encoded


def test_no_encoding_while_nobody_watches(start_appliance: Start) -> None:
    app = start_appliance()
    put(app, True)
    captured = app.pipeline.stats().frames_captured
    assert app.pipeline.wait_for_frames(captured + 10, timeout=5)
    stats = app.pipeline.stats()
    assert stats.frames_encoded == 0
    snapshot = requests.get(app.url + "/snapshot.jpg", timeout=10)
    assert snapshot.status_code == 200 and snapshot.headers["Content-Type"] == "image/jpeg"
    decode_jpeg(snapshot.content)
    assert app.pipeline.stats().frames_encoded == 1


def test_streams_end_when_the_camera_goes_off_and_503_follows(start_appliance: Start) -> None:
    app = start_appliance()
    put(app, True)
    with requests.get(app.url + "/stream.mjpg", stream=True, timeout=10) as response:
        parts = iter_mjpeg(response)
        next(parts)
        switched = time.monotonic()
        threading.Thread(target=put, args=(app, False)).start()
        for _ in parts:  # drains what was in flight, then the stream must end
            pass
        assert time.monotonic() - switched < 1.0
    off = requests.get(app.url + "/stream.mjpg", timeout=5)
    assert off.status_code == 503 and off.json()["error"] == "camera is off"
    assert int(off.headers["Retry-After"]) > 0
    assert requests.get(app.url + "/snapshot.jpg", timeout=5).status_code == 503


def test_disconnected_viewers_free_their_threads(start_appliance: Start) -> None:
    app = start_appliance(stream={"max_viewers": 3}, server={"extra_threads": 2})
    put(app, True)
    for _ in range(4):  # 12 streams in all, four times the pool: leaked threads would starve the server
        sockets = [socket.create_connection(("127.0.0.1", app.server.port), timeout=5) for _ in range(3)]
        for sock in sockets:
            sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert b"200 OK" in sock.recv(4096)
        assert app.broadcaster.viewers == 3
        for sock in sockets:
            sock.close()
        # The server notices on its next write to the closed socket, a frame or two later.
        assert app.broadcaster.wait_for_viewers(0, timeout=5)
    assert requests.get(app.url + "/api/status", timeout=5).status_code == 200


def test_a_viewer_that_stops_reading_is_dropped(start_appliance: Start) -> None:
    app = start_appliance(camera={"size": "1280x720", "fps": 30, "synthetic": {"objects": 3}},
                          server={"socket_timeout": 1})
    put(app, True)
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # tiny window: the server blocks soon
    try:
        stalled.connect(("127.0.0.1", app.server.port))
        stalled.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # and never read a byte
        assert app.broadcaster.wait_for_viewers(1, timeout=5)
        # Once the buffers are full, the send times out after socket_timeout and the thread is freed.
        assert app.broadcaster.wait_for_viewers(0, timeout=60)
        with requests.get(app.url + "/stream.mjpg", stream=True, timeout=10) as fresh:
            next(iter_mjpeg(fresh))  # everyone else is still served
    finally:
        stalled.close()


def test_viewer_limit_answers_503(start_appliance: Start) -> None:
    app = start_appliance(stream={"max_viewers": 2})
    put(app, True)
    first = requests.get(app.url + "/stream.mjpg", stream=True, timeout=10)
    second = requests.get(app.url + "/stream.mjpg", stream=True, timeout=10)
    third = requests.get(app.url + "/stream.mjpg", timeout=10)
    assert third.status_code == 503 and "viewer limit" in third.json()["error"]
    first.close()
    second.close()


def test_malformed_bodies_get_400_that_say_why(start_appliance: Start) -> None:
    app = start_appliance()
    url = app.url + "/api/camera"
    cases = [
        (b"not json", "JSON object"),
        (b"[true]", "not list"),
        (b"{}", "missing key 'on'"),
        (b'{"on": "yes"}', "must be true or false"),
        (b'{"on": 1}', "must be true or false"),
        (b'{"on": true, "x": 1}', "unknown key"),
    ]
    for body, message in cases:
        response = requests.put(url, data=body, headers={"Content-Type": "application/json"}, timeout=5)
        assert response.status_code == 400, body
        assert message in response.json()["error"], (body, response.json())
    assert requests.get(app.url + "/api/camera", timeout=5).json()["state"] == "off"  # nothing changed
    assert requests.get(app.url + "/nope", timeout=5).json()["error"]
    wrong = requests.delete(url, timeout=5)
    assert wrong.status_code == 405 and "error" in wrong.json()


def test_cross_site_changes_are_refused(start_appliance: Start) -> None:
    app = start_appliance()
    evil = requests.post(app.url + "/api/camera/toggle", headers={"Origin": "http://evil.example"}, timeout=5)
    assert evil.status_code == 403 and "cross-site" in evil.json()["error"]
    assert app.controller.state.value == "off"
    same = requests.post(app.url + "/api/camera/toggle", headers={"Origin": app.url}, timeout=20)
    assert same.status_code == 200 and same.json()["state"] == "on"
    assert requests.post(app.url + "/api/camera/toggle", timeout=20).json()["state"] == "off"  # no Origin: curl


def test_status_and_health(start_appliance: Start) -> None:
    app = start_appliance()
    put(app, True)
    status = requests.get(app.url + "/api/status", timeout=5).json()
    for key in ("camera", "frame_size", "fps", "viewers", "frames_captured", "frames_encoded", "motion",
                "uptime", "version"):
        assert key in status
    assert status["frame_size"] == [320, 240]
    assert requests.get(app.url + "/healthz", timeout=5).status_code == 200


def test_failing_backend_goes_to_error_and_recovers_over_http(start_appliance: Start, tmp_path: Path) -> None:
    camera = CountingCamera(make_config(tmp_path).camera)
    app = start_appliance(backend=camera)
    put(app, True)
    camera.broken.set()
    assert app.controller.wait_for(lambda s: s.value == "error", 5)
    body = requests.get(app.url + "/api/camera", timeout=5).json()
    assert body["state"] == "error" and body["on"] is True and "unplugged" in body["error"]
    assert requests.get(app.url + "/healthz", timeout=5).status_code == 200  # loop alive, retrying
    camera.broken.clear()
    assert app.controller.wait_for(lambda s: s.value == "on", 5)
    assert requests.get(app.url + "/snapshot.jpg", timeout=5).status_code == 200


def test_health_fails_when_the_capture_loop_hangs(start_appliance: Start, tmp_path: Path) -> None:
    class Hanging(SyntheticCamera):
        hang = threading.Event()
        stuck = threading.Event()
        release = threading.Event()

        def read(self, timeout: float) -> Any:
            if self.hang.is_set():
                self.stuck.set()
                self.release.wait(30)  # a driver stuck in the kernel ignores our timeout
            return super().read(timeout)

    clock = [1000.0]
    config = make_config(tmp_path)
    camera = Hanging(config.camera)
    app = start_appliance(backend=camera, parts={"monotonic": lambda: clock[0]})
    put(app, True)
    assert requests.get(app.url + "/healthz", timeout=5).status_code == 200
    Hanging.hang.set()
    try:
        # Only once the loop is inside read(): a frame still being handled when the clock moved would
        # start its next read at the new time, and look fresh.
        assert Hanging.stuck.wait(5)
        clock[0] += config.camera.read_timeout + 5  # time passes with the loop stuck in read()
        response = requests.get(app.url + "/healthz", timeout=5)
        assert response.status_code == 503 and "no frame for" in response.json()["error"]
        assert not app.healthy()
    finally:
        Hanging.release.set()


def test_sigterm_releases_everything_within_3_seconds(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "APPLIANCE_STATE_DIR": str(tmp_path), "APPLIANCE_CAMERA__SYNTHETIC__OBJECTS": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "--camera", "synthetic", "--size", "320x240",
                             "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_serving(proc)
        assert requests.get(base + "/healthz", timeout=5).status_code == 200
        assert requests.put(base + "/api/camera", json={"on": True}, timeout=20).json()["state"] == "on"
        stream = requests.get(base + "/stream.mjpg", stream=True, timeout=10)
        next(iter_mjpeg(stream))
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=5)
        assert time.monotonic() - started < 3.0
        assert proc.returncode == 0
        output = proc.stdout.read() if proc.stdout else ""
        assert "stopping -> off (shutdown)" in output
        assert '"on": true' in (tmp_path / "state.json").read_text()  # comes back on after restart
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def watch(app: Appliance, path: str, frames: int) -> tuple[float, int, int]:
    """Read ``frames`` parts after the first: seconds it took, and frames encoded and captured meanwhile."""
    with requests.get(app.url + path, stream=True, timeout=10) as response:
        parts = iter_mjpeg(response)
        next(parts)
        before, started = app.pipeline.stats(), time.monotonic()
        for _ in range(frames):
            next(parts)
        elapsed, after = time.monotonic() - started, app.pipeline.stats()
    return (elapsed, after.frames_encoded - before.frames_encoded,
            after.frames_captured - before.frames_captured)


def test_stream_max_fps_bounds_encodes_and_sends(start_appliance: Start) -> None:
    app = start_appliance(camera={"fps": 40}, stream={"max_fps": 10})
    put(app, True)
    elapsed, encoded, captured = watch(app, "/stream.mjpg", 8)
    assert elapsed >= 0.65, f"8 frames at 10 frames/s came in {elapsed:.2f} s"
    assert encoded <= captured / 4 + 2, (encoded, captured)  # the camera gave 40/s; 10/s were encoded


def test_a_thumbnail_viewer_costs_only_its_own_frame_rate(start_appliance: Start) -> None:
    app = start_appliance(camera={"fps": 20})
    put(app, True)
    for bad in ("0", "abc", "1000", "-1"):
        refused = requests.get(f"{app.url}/stream.mjpg?fps={bad}", timeout=10)
        assert refused.status_code == 400 and "fps" in refused.json()["error"]
    elapsed, encoded, captured = watch(app, "/stream.mjpg?fps=5", 3)
    assert elapsed >= 0.45, f"3 frames at 5 frames/s came in {elapsed:.2f} s"
    assert encoded <= 5 and captured >= 9, (encoded, captured)  # one encode per frame it got, not 20/s


def test_a_thumbnail_next_to_a_full_rate_viewer_still_gets_few_frames(start_appliance: Start) -> None:
    app = start_appliance(camera={"fps": 20})
    put(app, True)
    with requests.get(app.url + "/stream.mjpg", stream=True, timeout=10) as full, \
            requests.get(app.url + "/stream.mjpg?fps=4", stream=True, timeout=10) as thumbnail:
        full_parts, thumb_parts = iter_mjpeg(full), iter_mjpeg(thumbnail)
        next(thumb_parts)
        started = time.monotonic()
        next(thumb_parts)
        next(thumb_parts)
        elapsed = time.monotonic() - started
        assert sum(1 for _ in zip(range(10), full_parts, strict=False)) == 10  # the other viewer is served meanwhile
    assert elapsed >= 0.4, f"2 frames at 4 frames/s came in {elapsed:.2f} s"


def test_stream_size_scales_the_stream_while_snapshots_and_events_stay_full_size(start_appliance: Start) -> None:
    app = start_appliance(camera={"size": "320x240", "synthetic": {"objects": 3, "motion_period": 2,
                                                                   "motion_duration": 1}},
                          stream={"size": "160x120"}, motion={"warmup_frames": 3, "event_gap": 0.3})
    put(app, True)
    with requests.get(app.url + "/stream.mjpg", stream=True, timeout=10) as response:
        parts = iter_mjpeg(response)
        shapes = {decode_jpeg(next(parts)[1]).shape for _ in range(3)}
        snapshot = requests.get(app.url + "/snapshot.jpg", timeout=10)  # while someone watches the small one
    assert shapes == {(120, 160, 3)}
    assert decode_jpeg(snapshot.content).shape == (240, 320, 3)
    assert app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + 15, timeout=10)
    app.recorder.flush()
    events, _ = app.events.list()
    assert events, "the moving demo scene made no event"
    assert decode_jpeg(app.events.snapshot(events[-1]["id"])).shape == (240, 320, 3)


def test_the_page_installs_as_a_home_screen_app_from_the_appliance_alone(start_appliance: Any) -> None:
    app = start_appliance(name="Garden camera")
    page = requests.get(app.url + "/", timeout=5).text
    assert 'rel="manifest" href="/manifest.webmanifest"' in page and 'rel="apple-touch-icon"' in page
    answer = requests.get(app.url + "/manifest.webmanifest", timeout=5)
    assert answer.headers["Content-Type"].startswith("application/manifest+json")
    manifest = answer.json()
    assert manifest["name"] == "Garden camera" and manifest["display"] == "standalone"
    assert manifest["start_url"] == "/" and len(manifest["short_name"]) <= 12
    sizes = set()
    for icon in manifest["icons"]:
        assert icon["src"].startswith("/")  # served here: nothing from outside
        png = requests.get(app.url + icon["src"], timeout=5)
        assert png.status_code == 200 and png.headers["Content-Type"] == "image/png"
        image = cv2.imdecode(np.frombuffer(png.content, np.uint8), cv2.IMREAD_COLOR)
        assert f"{image.shape[1]}x{image.shape[0]}" == icon["sizes"]
        sizes.add(icon["sizes"])
    assert {"192x192", "512x512"} <= sizes  # what Chrome asks for to offer installing
    touch = requests.get(app.url + "/static/apple-touch-icon.png", timeout=5)
    assert cv2.imdecode(np.frombuffer(touch.content, np.uint8), cv2.IMREAD_COLOR).shape == (180, 180, 3)


def test_a_snapshot_at_the_streams_size_for_pages_that_poll(start_appliance: Any) -> None:
    """``?size=stream``: the picture the stream shows (scaled to stream.size), for the page's snapshot
    mode; without it the full capture size, as before. Nobody streams: each costs one encode."""
    app = start_appliance(stream={"size": "160x120"})
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    small = requests.get(app.url + "/snapshot.jpg?size=stream", timeout=10)
    assert small.status_code == 200 and decode_jpeg(small.content).shape == (120, 160, 3)
    full = requests.get(app.url + "/snapshot.jpg", timeout=10)
    assert decode_jpeg(full.content).shape == (240, 320, 3)
    assert app.broadcaster.viewers == 0
    wrong = requests.get(app.url + "/snapshot.jpg?size=huge", timeout=10)
    assert wrong.status_code == 400 and "'size' must be" in wrong.json()["error"]
    requests.put(app.url + "/api/camera", json={"on": False}, timeout=20).raise_for_status()
    assert requests.get(app.url + "/snapshot.jpg?size=stream", timeout=10).status_code == 503

