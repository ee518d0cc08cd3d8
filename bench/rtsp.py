"""H.264 over RTSP against MJPEG: bytes per client, CPU, time to the first picture, age of a picture.

Runs the whole appliance in this process, camera on, and one client at a time in a subprocess, so
the appliance's CPU (from its own process clock) holds no client work:

* MJPEG: ``curl`` reads ``/stream.mjpg``; H.264: ``ffmpeg -c copy`` reads ``rtsp://…/live`` over
  TCP and keeps the H.264 it received. Bytes per second per client, and the appliance's cores.
* idle: nobody watching, RTSP configured on and off: what having RTSP costs while nobody uses it.
* per frame: the CPU of one JPEG encode against one H.264 encode (overlay and colour conversion
  included) on the same frames, with nothing else running.

Cameras: the demo camera and, when DATASET_DIR is given, CDnet 2014's highway sequence (real
traffic, 320x240, looped, scaled up; see the README for its citation), each at 640x360 and 1280x720,
15 fps, RTSP at its defaults (1.5 Mbit/s, a keyframe a second, main profile).

Then, on the demo camera at 1280x720 with each frame's capture time drawn into its picture as
blocks of black and white: the time from a client's connect (OPTIONS, DESCRIBE, SETUP, PLAY) to its
first decoded frame, and the age of each frame when it reaches a client: MJPEG from each part's
``X-Timestamp``, RTSP from the decoded picture (PyAV decodes in this process).

Each configuration runs ``--passes`` times and the lowest CPU is kept: the machine is shared, and
noise only ever adds.

    python bench/rtsp.py [DATASET_DIR] [--seconds 6] [--passes 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance.camera_backends.base import CameraBackend, Frame  # noqa: E402
from appliance.camera_backends.synthetic import SyntheticCamera  # noqa: E402
from appliance.capture.encoder import choose_encoder  # noqa: E402
from appliance.capture.overlay import draw_overlay  # noqa: E402
from appliance.config import AppConfig, OverlaySettings  # noqa: E402
from appliance.h264.encoder import H264Encoder, choose_codec  # noqa: E402
from appliance.runtime import Appliance  # noqa: E402
from bench.clips import SequenceCamera, load_highway  # noqa: E402

FPS = 15.0
BITS = 24  # capture time in ms, modulo 2**24 (4.6 hours), drawn as this many blocks
BLOCK = 24  # px


class ScaledSequence(SequenceCamera):
    """CDnet's frames, scaled to the camera's size as they are read (a whole scaled copy would not fit)."""

    def __init__(self, frames: list[np.ndarray], size: tuple[int, int]) -> None:
        super().__init__(frames, FPS, still=False)
        self._size = size

    def picture(self, frame: np.ndarray) -> np.ndarray:
        return cv2.resize(frame, self._size, interpolation=cv2.INTER_LINEAR)


class StampedCamera(CameraBackend):
    """The demo camera with each frame's capture time (ms) drawn as blocks along its bottom edge."""

    name = "stamped"

    def __init__(self, inner: CameraBackend) -> None:
        self._inner = inner

    def open(self) -> None:
        self._inner.open()

    def read(self, timeout: float) -> Frame:
        frame = self._inner.read(timeout)
        code = int(frame.timestamp * 1000) % (1 << BITS)
        image = frame.image
        top = image.shape[0] - BLOCK
        for bit in range(BITS):
            image[top:, bit * BLOCK:(bit + 1) * BLOCK] = 255 if code >> (BITS - 1 - bit) & 1 else 0
        return frame

    def close(self) -> None:
        self._inner.close()


def read_stamp(image: np.ndarray) -> float:
    """The capture time a ``StampedCamera`` drew into ``image`` (a decoded copy), as time.time()."""
    row = image[image.shape[0] - BLOCK // 2].mean(axis=1) if image.ndim == 3 else image[image.shape[0] - BLOCK // 2]
    code = 0
    for bit in range(BITS):
        code = code << 1 | int(row[bit * BLOCK + BLOCK // 2] > 127)
    now_ms = int(time.time() * 1000)
    taken = now_ms - ((now_ms - code) % (1 << BITS))
    return taken / 1000


def config(state: Path, size: str, rtsp: bool) -> AppConfig:
    return AppConfig.model_validate({
        "camera": {"backend": "synthetic", "size": size, "fps": FPS,
                   "synthetic": {"objects": 4, "motion_period": 10.0, "motion_duration": 10.0}},
        "server": {"host": "127.0.0.1", "port": 0},
        "rtsp": {"enabled": rtsp, "port": 0},
        "state_dir": str(state), "log_level": "WARNING",
    })


def run(cfg: AppConfig, backend: CameraBackend, client: str | None, seconds: float) -> dict[str, float]:
    """Camera on, one client (``mjpeg``, ``h264``) or none; the appliance's cores and the client's bytes/s."""
    app = Appliance(cfg, backend=backend)
    app.start()
    try:
        app.controller.on()
        app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + int(FPS), timeout=10)
        with tempfile.TemporaryDirectory() as scratch:
            out = Path(scratch) / "received"
            command = _client(app, client, seconds, out)
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) \
                if command else None
            if app.rtsp is not None and client == "h264":
                app.rtsp.feed.wait_for(lambda feed: feed.frames_encoded > 0, 10)  # the encode has begun
            cpu, wall = time.process_time(), time.monotonic()
            if process is not None:
                process.wait(seconds * 3 + 20)
            else:
                app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + int(seconds * FPS), seconds * 3)
            cpu, wall = time.process_time() - cpu, time.monotonic() - wall
            received = out.stat().st_size if out.exists() else 0
    finally:
        app.stop()
    return {"cores": cpu / wall, "bytes_per_s": received / seconds if client else 0.0}


def _client(app: Appliance, client: str | None, seconds: float, out: Path) -> list[str] | None:
    if client == "mjpeg":
        return ["curl", "-s", "--max-time", f"{seconds:g}", "-o", str(out), f"{app.url}/stream.mjpg"]
    if client == "h264":
        assert app.rtsp is not None
        return ["ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", "tcp", "-i",
                f"rtsp://127.0.0.1:{app.rtsp.server.port}/live", "-t", f"{seconds:g}", "-c", "copy", "-f", "h264",
                str(out)]
    return None


def per_frame_ms(frames: list[np.ndarray], size: tuple[int, int]) -> tuple[float, float]:
    """CPU ms of one JPEG encode and of one H.264 encode (with the overlay and the colour conversion),
    from the process's clock: x264 encodes on threads of its own."""
    cfg = AppConfig()
    _, jpeg = choose_encoder("opencv", cfg.camera.jpeg_quality, size)
    h264 = H264Encoder(choose_codec("libx264"), size, cfg.rtsp.model_copy(update={"fps": FPS}))
    overlay = OverlaySettings()
    scaled = [cv2.resize(frame, size) for frame in frames[:60]]

    def cpu_ms(encode: Any) -> float:
        start = time.process_time()
        for n, frame in enumerate(scaled):
            image = frame.copy()
            draw_overlay(image, time.time(), None, overlay)
            encode(image, n)
        return (time.process_time() - start) / len(scaled) * 1000

    jpeg_ms = cpu_ms(lambda image, _n: jpeg(image))
    h264_ms = cpu_ms(lambda image, n: h264.encode(image, n * 6000))
    h264.close()
    return jpeg_ms, h264_ms


def latency(seconds: float) -> dict[str, list[float]]:
    """Connect-to-first-frame and frame ages, MJPEG and RTSP, on the stamped demo camera at 1280x720."""
    import av

    with tempfile.TemporaryDirectory() as state:
        cfg = config(Path(state), "1280x720", rtsp=True)
        app = Appliance(cfg, backend=StampedCamera(SyntheticCamera(cfg.camera)))
        app.start()
        try:
            app.controller.on()
            app.pipeline.wait_for_frames(int(FPS), timeout=10)
            ages: dict[str, list[float]] = {"mjpeg": [], "rtsp": [], "first_frame": []}
            stop = threading.Event()

            def mjpeg() -> None:
                with requests.get(f"{app.url}/stream.mjpg", stream=True, timeout=10) as response:
                    for line in response.iter_lines():
                        if line.lower().startswith(b"x-timestamp:"):
                            ages["mjpeg"].append(time.time() - float(line.split(b":", 1)[1]))
                        if stop.is_set():
                            return

            viewer = threading.Thread(target=mjpeg)
            viewer.start()
            assert app.rtsp is not None
            address = f"rtsp://127.0.0.1:{app.rtsp.server.port}/live"
            # Little probing of the stream (the SDP says what it is) and no frame threads in the decoder
            # (each would hold a frame back). Not "nobuffer": it throws away the packets read while
            # probing, the first keyframe among them.
            options = {"rtsp_transport": "tcp", "analyzeduration": "0", "probesize": "32768"}
            for _ in range(5):  # connect afresh: the time to the first picture
                started = time.monotonic()
                with av.open(address, options=options) as container:
                    container.streams.video[0].thread_type = "SLICE"
                    next(container.decode(video=0))
                    ages["first_frame"].append(time.monotonic() - started)
                assert app.rtsp.server.wait_for(lambda stats: stats.sessions == 0, 10)
            with av.open(address, options=options) as container:
                container.streams.video[0].thread_type = "SLICE"
                until = time.monotonic() + seconds
                for frame in container.decode(video=0):
                    arrived = time.time()
                    ages["rtsp"].append(arrived - read_stamp(frame.to_ndarray(format="gray")))
                    if time.monotonic() > until:
                        break
            stop.set()
            viewer.join(10)
        finally:
            app.stop()
    return ages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", nargs="?", type=Path, help="CDnet 2014 baseline/highway folder")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--passes", type=int, default=2)
    args = parser.parse_args()
    highway = load_highway(args.dataset) if args.dataset else None
    rtsp = AppConfig().rtsp
    print(f"{FPS:g} fps; H.264: {choose_codec('auto')}, {rtsp.bitrate / 1e6:g} Mbit/s target, keyframe every "
          f"{rtsp.keyframe_interval:g} s, {rtsp.profile}; MJPEG: JPEG quality {AppConfig().camera.jpeg_quality}; "
          f"one client, best of {args.passes} passes of {args.seconds:g} s")
    print(f"{'camera':16} {'size':9} {'client':12} {'bytes/s':>10} {'Mbit/s':>7} {'cores':>6}")
    for name in ["demo camera"] + (["CDnet highway"] if highway else []):
        for size in ("640x360", "1280x720"):
            width, height = (int(n) for n in size.split("x"))
            best: dict[str, dict[str, float]] = {}
            for _ in range(args.passes):
                for label, client, with_rtsp in (("MJPEG", "mjpeg", True), ("H.264/RTSP", "h264", True),
                                                 ("idle, RTSP on", None, True), ("idle, RTSP off", None, False)):
                    with tempfile.TemporaryDirectory() as state:
                        cfg = config(Path(state), size, with_rtsp)
                        backend: CameraBackend = SyntheticCamera(cfg.camera) if highway is None or \
                            name == "demo camera" else ScaledSequence(highway, (width, height))
                        result = run(cfg, backend, client, args.seconds)
                    if label not in best or result["cores"] < best[label]["cores"]:
                        best[label] = result
            for label, result in best.items():
                rate = result["bytes_per_s"]
                print(f"{name:16} {size:9} {label:12} {rate:10.0f} {rate * 8 / 1e6:7.2f} {result['cores']:6.3f}")
            ratio = best["H.264/RTSP"]["bytes_per_s"] / max(1.0, best["MJPEG"]["bytes_per_s"])
            idle = best["idle, RTSP on"]["cores"] / max(1e-6, best["idle, RTSP off"]["cores"])
            print(f"{'':16} {size:9} H.264 takes {ratio:.2f} of MJPEG's bytes; idle cores with RTSP on / off: "
                  f"{idle:.2f}")
        frames: list[Any] = highway if highway is not None and name != "demo camera" else _demo_frames()
        for size in ((640, 360), (1280, 720)):
            jpeg_ms, h264_ms = per_frame_ms(frames, size)
            print(f"{name:16} {size[0]}x{size[1]:<5} CPU per frame: JPEG {jpeg_ms:.2f} ms, H.264 {h264_ms:.2f} ms")
    ages = latency(args.seconds)

    def spread(values: list[float]) -> str:
        ms = sorted(value * 1000 for value in values)
        return f"median {statistics.median(ms):.0f} ms, p95 {ms[int(len(ms) * 0.95) - 1]:.0f} ms ({len(ms)} frames)"

    print(f"demo camera 1280x720: connect to first decoded H.264 frame {spread(ages['first_frame'])}")
    print(f"demo camera 1280x720: frame age at the client, MJPEG {spread(ages['mjpeg'])}")
    print(f"demo camera 1280x720: frame age at the client, H.264/RTSP {spread(ages['rtsp'])}")
    return 0


def _demo_frames() -> list[np.ndarray]:
    camera = SyntheticCamera(AppConfig.model_validate({"camera": {"size": "1280x720", "fps": 100}}).camera)
    camera.open()
    try:
        return [camera.read(1.0).image for _ in range(60)]
    finally:
        camera.close()


if __name__ == "__main__":
    raise SystemExit(main())
