"""The real picamera2 and libcamera, on libcamera's software virtual camera, in a Debian 13 root.

What the fake (tests/fake_picamera2.py) could never show: the formats, sizes and strides libcamera
really configures, frames taken out of real buffers, motion in what the camera filmed, a camera
already held, and the appliance itself switching the real stack on and off. See tests/camera_stack.py
for the root and the test-only shims that stand in for what this VM lacks (dma-heaps, a sensor's Raw
role, a display).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import requests

from tests.broker import free_port
from tests.camera_stack import SHIM_DIR, CameraRoot, build_camera_root, fd_targets, open_fds, threads, write_frames
from tests.helpers import decode_jpeg, iter_mjpeg, switch_on_and_watch, wait_until_serving

pytestmark = [pytest.mark.camera, pytest.mark.root, pytest.mark.timeout(1500)]

FRAMES = f"{SHIM_DIR}/frames/"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
WIDTH, HEIGHT = 640, 480


def scene(square_at: int | None, size: tuple[int, int] = (WIDTH, HEIGHT)) -> np.ndarray:
    """What the camera films: a blue band on the left, a textured wall, and maybe a red square
    (positions and sizes in 640x480 terms, scaled to ``size``)."""
    rng = np.random.default_rng(7)
    coarse = rng.integers(60, 200, (HEIGHT // 40, WIDTH // 40, 3), dtype=np.uint8)
    image = cv2.resize(coarse, (WIDTH, HEIGHT), interpolation=cv2.INTER_NEAREST)
    image[:, :80] = (220, 40, 30)  # blue in BGR
    if square_at is not None:
        cv2.rectangle(image, (square_at, 180), (square_at + 120, 300), (20, 20, 240), -1)
    return image if size == (WIDTH, HEIGHT) else cv2.resize(image, size, interpolation=cv2.INTER_NEAREST)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CameraRoot]:
    base = tmp_path_factory.mktemp("camera-root")
    base.chmod(0o755)
    camera_root = CameraRoot(base / "root")
    build_camera_root(camera_root.path)
    camera_root.prepare()
    try:
        yield camera_root
    finally:
        camera_root.cleanup()


def film(root: CameraRoot, moving: bool, size: tuple[int, int] = (WIDTH, HEIGHT)) -> None:
    """The virtual camera plays JPEGs the test wrote: a still wall, or a square crossing it."""
    positions = [120 + 30 * step for step in range(12)] if moving else [None]
    write_frames(root.path / FRAMES.strip("/"), [scene(at, size) for at in positions])
    root.virtual_cameras({"Virtual0": {
        "model": "Virtual test camera",
        "supported_formats": [{"width": size[0], "height": size[1], "frame_rates": [15, 30]},
                              {"width": 384, "height": 288}, {"width": 384, "height": 216}],
        "frames": {"path": FRAMES},
    }})


def run_json(root: CameraRoot, code: str, timeout: float = 120) -> dict[str, Any]:
    result = root.python(code, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_real_picamera2_configures_and_delivers_frames_as_filmed(root: CameraRoot) -> None:
    film(root, moving=False)
    found = run_json(root, """
        import json, time
        from appliance.config import CameraSettings
        from appliance.camera_backends.pi_camera import PiCamera, h264_hardware
        from appliance.camera_backends.yuv import bgr_of
        camera = PiCamera(CameraSettings(backend="picamera2", size=(640, 480), fps=15))
        camera.open()
        streams = camera.streams
        space = str(camera._camera.camera_configuration()["colour_space"])
        frames = [camera.read(2.0) for _ in range(16)]
        last = frames[-1]
        image = bgr_of(last.image)  # before close(): a frame's picture is the reader's until the next read
        camera.close()
        print(json.dumps({"streams": streams, "shape": image.shape, "gray": last.gray.shape,
                          "kind": type(last.image).__name__, "space": space,
                          "band": image[240, 40].tolist(), "wall": image[240, 400].tolist(),
                          "gray_band": int(last.gray[144, 20]), "times": [f.timestamp for f in frames],
                          "now": time.time(), "h264": h264_hardware(), "describe": camera.describe()}))
    """)
    # Asked for YUV420 at 640x480 and 384x288: what libcamera configured, read back and used.
    assert found["streams"]["main"] == ["NV12", [640, 480], 640]
    assert found["streams"]["lores"][0] == "NV12" and found["streams"]["lores"][1] == [384, 288]
    assert found["shape"] == [480, 640, 3] and found["gray"] == [288, 384]
    # Kept in its planes (no BGR frame per frame), in JPEG's own colour space, asked of libcamera.
    assert found["kind"] == "I420" and "sYCC" in found["space"], found
    blue, green, red = found["band"]
    assert blue > 170 and red < 90 and green < 90, found["band"]  # BGR in BGR order, from NV12
    assert found["gray_band"] < 100  # blue is dark in the Y plane
    assert found["wall"] != found["band"]
    # The virtual camera has no pacing; the backend keeps to camera.fps (15), by the sensor's clock.
    steps = np.diff(found["times"])
    assert 0.05 < float(np.median(steps)) < 0.1, steps
    assert abs(found["times"][-1] - found["now"]) < 1.0
    assert found["h264"] is False  # no bcm2835 codec here, as on a Pi 5
    assert found["describe"].startswith("Pi camera 0 640x480"), found["describe"]  # what the page and HA show


def test_orientation_and_controls_on_the_real_library(root: CameraRoot) -> None:
    """A half turn goes to libcamera as a Transform (both flips), through the real picamera2, and comes
    back configured. (libcamera 0.4's virtual camera accepts an orientation but does not turn its
    pixels, having no ISP; a camera that refuses one is turned by the backend, tested on the fake.)
    The controls offered are the camera's own: the virtual camera has none of the appliance's."""
    film(root, moving=False)
    found = run_json(root, """
        import json
        from appliance.config import CameraSettings
        from appliance.camera_backends.pi_camera import PiCamera
        from appliance.camera_backends.yuv import bgr_of
        camera = PiCamera(CameraSettings(backend="picamera2", size=(640, 480), fps=15))
        before = sorted(camera.controls())
        left = camera.orient(180, False, False)
        camera.open()
        image = bgr_of(camera.read(2.0).image)
        offered = sorted(camera.controls())
        given = camera._camera.camera_configuration()["transform"]
        camera.close()
        print(json.dumps({"before": before, "after": offered, "left": left, "band": image[240, 600].tolist(),
                          "wall": image[240, 40].tolist(), "given": [bool(given.hflip), bool(given.vflip)]}))
    """)
    assert found["left"] == [0, False, False] and len(found["before"]) == 8
    assert found["given"] == [True, True], found  # asked of libcamera, and configured
    assert found["after"] == []
    # libcamera took the turn, so the backend turns nothing itself; and the virtual camera, having no
    # ISP, delivers its pixels unturned: the blue band stays on the left. Were the frame turned twice
    # (by libcamera and again by us) or once by us, the band would stand at the right.
    blue, green, red = found["wall"]  # x = 40: where the band is filmed
    assert blue > 170 and red < 90 and green < 90, found
    assert found["band"][0] < 170 or found["band"][2] > 90, found  # x = 600: no band there


def test_a_camera_already_held_is_an_error_that_says_so_and_goes_once_let_go(root: CameraRoot) -> None:
    """libcamera refuses a second acquire with EBUSY. The virtual camera has no device node, so
    libcamera cannot lock it across processes: the holder here is another user in the same process,
    which is refused by the same real code path."""
    film(root, moving=False)
    found = run_json(root, """
        import json
        from picamera2 import Picamera2
        from appliance.config import CameraSettings
        from appliance.camera_backends.base import CameraError
        from appliance.camera_backends.pi_camera import PiCamera
        holder = Picamera2(0)
        camera = PiCamera(CameraSettings(backend="picamera2", size=(640, 480), fps=15))
        try:
            camera.open()
            refused = None
        except CameraError as exc:
            refused = str(exc)
        holder.close()
        camera.open()
        shape = camera.read(2.0).image.data.shape
        camera.close()
        print(json.dumps({"refused": refused, "shape": shape}))
    """)
    assert found["refused"] and "in use" in found["refused"], found
    assert found["shape"] == [720, 640]  # 480 rows of Y, 240 of U and V


def test_auto_finds_the_virtual_camera_and_none_without_it(root: CameraRoot) -> None:
    film(root, moving=False)
    detect = subprocess.run(root.command(["/opt/appliance/venv/bin/python", "-m", "appliance", "detect-camera"]),
                            env=root.env(), capture_output=True, text=True, timeout=60)
    assert detect.returncode == 0 and detect.stdout.strip().startswith("picamera2"), detect.stdout + detect.stderr
    root.virtual_cameras(None)
    none = subprocess.run(root.command(["/opt/appliance/venv/bin/python", "-m", "appliance", "detect-camera"]),
                          env=root.env(), capture_output=True, text=True, timeout=60)
    assert none.returncode == 1 and none.stdout.strip() == "none", none.stdout + none.stderr


def next_event(lines: Iterator[str], name: str) -> dict[str, Any]:
    """The data of the next server-sent event called ``name`` (the caller's read timeout bounds it)."""
    event = None
    for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ").strip()
        elif line.startswith("data: ") and event == name:
            return json.loads(line.removeprefix("data: "))
    raise AssertionError(f"the live feed ended before a {name!r} event")


REST_BUDGET_MIB = 130
"""Resident memory of the appliance at rest (started, camera off) at the default settings on the real
picamera2 stack: bench/pi_memory.py measures 112 MiB (docs/pi-camera.md); a Pi Zero 2 W has 512 MB."""


def test_the_appliance_at_rest_on_the_real_stack_keeps_to_its_memory_budget(root: CameraRoot) -> None:
    port = free_port()
    proc = root.popen(["/opt/appliance/venv/bin/python", "-m", "appliance", "--camera", "picamera2",
                       "--host", "127.0.0.1", "--port", str(port)],
                      extra_env={"APPLIANCE_STATE_DIR": "/tmp/appliance-rest", "MALLOC_ARENA_MAX": "2"},
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(proc)
        status = requests.get(f"http://127.0.0.1:{port}/api/status", timeout=10).json()
        assert status["camera"]["state"] == "off" and status["clips"]["format"] == "mp4"  # the defaults
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                      if ":" in line)
        rss = int(fields["VmRSS"].split()[0]) / 1024
        assert rss <= REST_BUDGET_MIB, f"{rss:.0f} MiB at rest"
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_appliance_on_the_real_stack_streams_records_motion_and_switches_cleanly(root: CameraRoot) -> None:
    film(root, moving=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = root.popen(["/opt/appliance/venv/bin/python", "-m", "appliance", "--camera", "picamera2",
                       "--size", "640x480", "--fps", "15", "--host", "127.0.0.1", "--port", str(port)],
                      extra_env={"APPLIANCE_STATE_DIR": "/tmp/appliance-state", "APPLIANCE_MOTION__WARMUP_FRAMES": "3",
                                 "APPLIANCE_MOTION__EVENT_GAP": "1", "APPLIANCE_EVENTS__CLIP__ENABLED": "false"},
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(proc)
        with requests.get(base + "/api/events/live", stream=True, timeout=(5, 60)) as feed:
            lines = feed.iter_lines(decode_unicode=True)
            switch_on_and_watch(base, 3, (480, 640, 3), timeout=30)
            started = next_event(lines, "motion")
        assert started["kind"] == "start"
        record = started["event"]
        snapshot = requests.get(f"{base}/api/events/{record['id']}/snapshot.jpg", timeout=10)
        assert decode_jpeg(snapshot.content).shape == (480, 640, 3)
        camera = requests.get(base + "/api/camera", timeout=10).json()
        assert camera["backend"] == "picamera2" and camera["camera"].startswith("Pi camera 0 640x480"), camera

        # Twenty times off and on: the real stack gives back every thread, descriptor and buffer.
        # (One kept-alive connection for the commands, so the client's own socket is counted once.)
        with requests.Session() as client:
            assert client.put(base + "/api/camera", json={"on": False}, timeout=30).json()["state"] == "off"
            baseline = (threads(proc.pid), open_fds(proc.pid))
            for _ in range(20):
                assert client.put(base + "/api/camera", json={"on": True}, timeout=30).json()["state"] == "on"
                assert client.put(base + "/api/camera", json={"on": False}, timeout=30).json()["state"] == "off"
            # Equal threads; no more descriptors (the earlier stream's and feed's sockets may still
            # be closing at the baseline, so fewer is fine: one leaked per cycle would be 20 more).
            assert threads(proc.pid) == baseline[0] and open_fds(proc.pid) <= baseline[1]
        buffers = [target for target in fd_targets(proc.pid) if "memfd:" in target]
        assert buffers == [], "frame buffers still open with the camera off"

        # Shutdown within 5 s with the camera on and a viewer connected.
        assert requests.put(base + "/api/camera", json={"on": True}, timeout=30).json()["state"] == "on"
        with requests.get(base + "/stream.mjpg", stream=True, timeout=10) as stream:
            next(iter_mjpeg(stream))
            began = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
            assert time.monotonic() - began < 5.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        output = proc.stdout.read() if proc.stdout else ""
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "camera-stack-appliance.log").write_text(output)
    # Python 3.13's cheroot buffers are pure Python: a client that left mid-response used to leave
    # bytes whose finaliser, run by the collector (which the backend's close() now runs), printed an
    # OSError traceback; GuardedConnection drops them. This is the Python of Raspberry Pi OS trixie.
    assert "Traceback" not in output, "see test-artifacts/camera-stack-appliance.log"
