"""Memory of the appliance on the real Pi camera stack, at the default settings (as root).

A Pi Zero 2 W has 512 MB of RAM for everything, and the unit caps the service at ``MemoryMax``. This
runs ``python -m appliance --camera picamera2`` with nothing but its port and state folder set (so
1280x720 at 15 fps, motion at 5 fps, MP4 event clips from the H.264 encode with a 3 s pre-roll;
libx264 here, as the root has no hardware encoder), on the real
picamera2 and libcamera in the Debian 13 test root (tests/camera_stack.py: libcamera's virtual camera
filming a scene with a moving square), under the unit's ``MALLOC_ARENA_MAX=2``, and prints the
process's resident memory (VmRSS, and its peak VmHWM, from /proc) at each stage, then what a bare
picamera2 script grows by on the same virtual camera and streams (the rig's share, subtracted from
the appliance's growth when switched on to give its own):

    python bench/pi_memory.py [--seconds 20]

The figures are x86_64's; a Pi's aarch64 build of the same libraries differs by some MiB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.broker import free_port
from tests.camera_stack import CameraRoot, build_camera_root
from tests.helpers import iter_mjpeg, wait_until_serving
from tests.test_camera_stack import FRAMES, film


def memory(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


BARE = """
import json, time
def rss():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS")).split()[1]) / 1024
import numpy
before = rss()
from picamera2 import Picamera2
camera = Picamera2(0)
config = camera.create_video_configuration(main={"size": (1280, 720), "format": "YUV420"},
                                          lores={"size": LORES, "format": "YUV420"}, raw=None, buffer_count=4,
                                          controls={"FrameRate": 15.0})
camera.align_configuration(config)
camera.configure(config)
camera.start()
end = time.monotonic() + SECONDS
while time.monotonic() < end:
    request = camera.capture_request()
    request.make_buffer("main"), request.make_buffer("lores")
    request.release()
on = rss()
camera.stop()
camera.close()
print(json.dumps({"before": before, "on": on}))
"""


ENCODER = """
import glob, json
import av, cv2  # PyAV itself is the appliance's on a Pi too (the hardware encoder is opened through it)
def rss():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS")).split()[1]) / 1024
from appliance.camera_backends.yuv import from_bgr
from appliance.config import RtspSettings
from appliance.h264.encoder import H264Encoder
frames = [from_bgr(cv2.resize(cv2.imread(name), (1280, 720))) for name in sorted(glob.glob(FRAMES + "*.jpg"))]
before = rss()
encoder = H264Encoder("libx264", (1280, 720), RtspSettings())
for number in range(round(15 * SECONDS)):
    encoder.encode(frames[number % len(frames)], number * 6000, keyframe=number % 30 == 0)
print(json.dumps({"before": before, "on": rss()}))
"""


def software_encoder(root: CameraRoot, seconds: float) -> float:
    """MiB the appliance's own H.264 encoder class grows by with libx264 at 1280x720 encoding the
    filmed frames for ``seconds`` at 15 fps, in a process that has PyAV imported already: the share
    of the appliance's growth a Pi Zero 2 W or Pi 4 does not have (their encoder is hardware)."""
    code = ENCODER.replace("FRAMES", repr(FRAMES)).replace("SECONDS", repr(seconds))
    result = root.python(code, timeout=seconds * 4 + 120, extra_env={"MALLOC_ARENA_MAX": "2"})
    if result.returncode != 0:
        raise SystemExit(f"the encoder script failed:\n{result.stdout}{result.stderr}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return float(figures["on"] - figures["before"])


def bare_picamera2(root: CameraRoot, seconds: float) -> float:
    """MiB a bare picamera2 script grows by from before it imports picamera2 to capturing, with the
    appliance's streams (1280x720 main, its lores, 4 buffers): what picamera2 and the virtual camera
    hold, not the appliance."""
    from appliance.camera_backends.pi_camera import lores_size

    code = BARE.replace("LORES", repr(lores_size((1280, 720), 400))).replace("SECONDS", repr(seconds))
    result = root.python(code, timeout=seconds + 120, extra_env={"MALLOC_ARENA_MAX": "2"})
    if result.returncode != 0:
        raise SystemExit(f"the bare picamera2 script failed:\n{result.stdout}{result.stderr}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return float(figures["on"] - figures["before"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="time in each stage")
    args = parser.parse_args()
    pause = threading.Event()  # never set: each stage's wait() is its observation time
    with tempfile.TemporaryDirectory() as folder:
        Path(folder).chmod(0o755)
        root = CameraRoot(Path(folder) / "root")
        build_camera_root(root.path)
        root.prepare()
        try:
            film(root, moving=True, size=(1280, 720))
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            proc = root.popen(["/opt/appliance/venv/bin/python", "-m", "appliance", "--camera", "picamera2",
                               "--host", "127.0.0.1", "--port", str(port)],
                              extra_env={"APPLIANCE_STATE_DIR": "/tmp/bench-state", "MALLOC_ARENA_MAX": "2"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                wait_until_serving(proc)
                threading.Thread(target=lambda: [None for _ in proc.stdout or ()], daemon=True).start()
                rows = [("started, camera off", *memory(proc.pid))]
                requests.put(base + "/api/camera", json={"on": True}, timeout=30).raise_for_status()
                pause.wait(args.seconds)
                rows.append((f"on for {args.seconds:g} s, nobody watching (events recording)",
                             *memory(proc.pid)))
                with requests.get(base + "/stream.mjpg", stream=True, timeout=10) as stream:
                    parts = iter_mjpeg(stream)
                    for _ in range(int(15 * args.seconds)):
                        next(parts)
                    rows.append((f"one viewer for {args.seconds:g} s", *memory(proc.pid)))
                with requests.get(base + "/stream.mp4", stream=True, timeout=10) as h264:
                    received, wanted = 0, 1.5e6 / 8 * args.seconds / 2  # about half the target bitrate's
                    while received < wanted and (chunk := h264.raw.read1(65536)):
                        received += len(chunk)
                    rows.append((f"and one H.264 page viewer ({received / 1e6:.1f} MB received)", *memory(proc.pid)))
                events = requests.get(base + "/api/events", timeout=10).json()["total"]
            finally:
                proc.terminate()
                proc.wait(10)
            rig = bare_picamera2(root, args.seconds)
            encoder = software_encoder(root, args.seconds)
        finally:
            root.cleanup()
    unit = (Path(__file__).resolve().parent.parent / "deploy" / "appliance.service").read_text()
    limit = next(line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("MemoryMax="))
    print("Pi camera backend, defaults (1280x720 @ 15 fps, MP4 clips with 3 s pre-roll), MALLOC_ARENA_MAX=2")
    print(f"{'stage':<72} {'RSS MiB':>8} {'peak MiB':>9}")
    for stage, rss, peak in rows:
        print(f"{stage:<72} {rss:8.0f} {peak:9.0f}")
    print(f"motion events recorded: {events}; the unit's MemoryMax: {limit}")
    grown = rows[1][1] - rows[0][1]
    print(f"a bare picamera2 on the same virtual camera and configuration grows by {rig:.0f} MiB when it "
          f"captures for {args.seconds:g} s (the rig's share: the virtual camera keeps its frames decoded);")
    own = grown - rig
    print(f"the appliance grows by {grown:.0f} MiB when switched on, {own:.0f} MiB of it its own;")
    print(f"of that, libx264 encoding 1280x720 takes {encoder:.0f} MiB (a Pi Zero 2 W or Pi 4 encodes in "
          f"hardware, a Pi 5 like this machine): {own - encoder:.0f} MiB without it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
