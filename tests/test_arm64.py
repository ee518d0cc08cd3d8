"""What a Raspberry Pi installs, run on the Pi's processor: an arm64 Debian 13 root under qemu-user-static.

The root (tests/camera_stack.py, ``arch="arm64"``) is built as a Pi is set up: Debian's arm64 packages
(python3, libcamera with its Python bindings, GStreamer's RTSP server) and the Pi's lock
(requirements/runtime-pi.txt) from PyPI's aarch64 wheels, with picamera2 at the tests' pinned release.
The appliance runs in it on the real picamera2 and libcamera, filming with libcamera's virtual camera,
every instruction of it emulated: it serves, switches on, streams MJPEG, records a motion event with
its MP4 clip, and serves RTSP. Emulation makes it all many times slower than a Pi, so nothing here
times anything: the point is that what a Pi installs is what the tests ran.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.broker import free_port
from tests.camera_stack import CameraRoot, build_camera_root, enable_arm64
from tests.helpers import decode_mp4, require_tool, switch_on_and_watch, wait_until_serving
from tests.test_camera_stack import film, next_event

pytestmark = [pytest.mark.camera, pytest.mark.arm64, pytest.mark.root, pytest.mark.timeout(3600)]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
AARCH64 = 183
"""ELF's ``e_machine`` for AArch64."""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CameraRoot]:
    enable_arm64()
    base = tmp_path_factory.mktemp("arm64-root")
    base.chmod(0o755)
    camera_root = CameraRoot(base / "root")
    build_camera_root(camera_root.path, "arm64")
    camera_root.prepare()
    try:
        yield camera_root
    finally:
        camera_root.cleanup()


def elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", path
    return int.from_bytes(header[18:20], "little")


def test_the_pis_packages_are_arm64_builds(root: CameraRoot) -> None:
    result = root.python("""
        import json, platform
        import av, cv2, numpy, simplejpeg, picamera2, libcamera, pydantic_core
        from gi.repository import GstRtspServer
        print(json.dumps({"machine": platform.machine(), "modules": [m.__file__ for m in (cv2, numpy, simplejpeg,
                          pydantic_core)], "libcamera": libcamera.__file__, "av": av.__version__,
                          "x264": "libx264" in av.codecs_available}))
    """, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["machine"] == "aarch64"
    assert found["x264"], "PyAV's aarch64 wheel has no libx264"
    for module in found["modules"]:  # the wheels pip chose are aarch64 builds: their compiled parts say so
        folder = root.path / Path(module).parent.relative_to("/")
        compiled = sorted(folder.glob("*.so")) or sorted(folder.glob("**/*.so"))
        assert compiled and all(elf_machine(library) == AARCH64 for library in compiled[:3]), module


def next_motion(lines: Iterator[str], kind: str) -> dict[str, Any]:
    """The next ``motion`` server-sent event of ``kind`` (start, end, clip)."""
    while (data := next_event(lines, "motion"))["kind"] != kind:
        pass
    return data


def test_the_appliance_runs_on_arm64_streams_records_and_serves_rtsp(root: CameraRoot) -> None:
    ffprobe = require_tool("ffprobe")
    film(root, moving=True)
    port, rtsp_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    proc = root.popen(["/opt/appliance/venv/bin/python", "-m", "appliance", "--camera", "picamera2",
                       "--size", "640x480", "--fps", "10", "--host", "127.0.0.1", "--port", str(port)],
                      extra_env={"APPLIANCE_STATE_DIR": "/tmp/appliance-arm64", "APPLIANCE_MOTION__WARMUP_FRAMES": "3",
                                 # The filmed square never stops: the event ends at its longest, 10 s.
                                 "APPLIANCE_MOTION__EVENT_GAP": "1", "APPLIANCE_MOTION__MAX_EVENT_SECONDS": "10",
                                 "APPLIANCE_EVENTS__CLIP__PRE_SECONDS": "1",
                                 "APPLIANCE_EVENTS__CLIP__POST_SECONDS": "1", "APPLIANCE_RTSP__ENABLED": "true",
                                 "APPLIANCE_RTSP__PORT": str(rtsp_port), "APPLIANCE_CAMERA__READ_TIMEOUT": "20"},
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = ""
    try:
        output = wait_until_serving(proc)
        with requests.get(base + "/api/events/live", stream=True, timeout=(30, 600)) as feed:
            lines = feed.iter_lines(decode_unicode=True)
            switch_on_and_watch(base, 2, (480, 640, 3), timeout=300)
            started = next_motion(lines, "start")["event"]
            clipped = next_motion(lines, "clip")["event"]
        assert clipped["id"] == started["id"] and clipped["clip"]["format"] == "mp4", clipped
        clip = requests.get(f"{base}/api/events/{started['id']}/clip.mp4", timeout=120)
        assert clip.status_code == 200 and clip.headers["Content-Type"] == "video/mp4"
        pictures = decode_mp4(clip.content)
        assert pictures and pictures[0].shape == (480, 640, 3)
        probe = subprocess.run([ffprobe, "-v", "error", "-rtsp_transport", "tcp", "-rw_timeout", "120000000",
                                "-show_entries", "stream=codec_name,width,height", "-of", "json",
                                f"rtsp://127.0.0.1:{rtsp_port}/live"], capture_output=True, text=True, timeout=300)
        assert probe.returncode == 0, probe.stderr
        streams = json.loads(probe.stdout)["streams"]
        assert streams and streams[0]["codec_name"] == "h264" and streams[0]["width"] == 640, streams
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        output += proc.stdout.read() if proc.stdout else ""
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "arm64-appliance.log").write_text(output)
    assert "Traceback" not in output, "see test-artifacts/arm64-appliance.log"


def test_the_detection_runtime_is_the_arm64_build_and_loads(root: CameraRoot) -> None:
    """The Pi lock's ai-edge-litert is an aarch64 build whose interpreter module loads. Running the
    model itself is not possible here: qemu-user 7.2 (Debian 12's) dies with SIGSEGV as the TFLite
    interpreter is created, with or without its XNNPACK delegate and with ``QEMU_CPU=max`` (measured
    2026-12-07), so whether the model runs on a Pi's Cortex-A53 is for a real Pi to show."""
    result = root.python("""
        import json, platform
        import ai_edge_litert
        from ai_edge_litert import interpreter
        print(json.dumps({"machine": platform.machine(), "runtime": ai_edge_litert.__file__,
                          "interpreter": hasattr(interpreter, "Interpreter")}))
    """, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["machine"] == "aarch64" and found["interpreter"]
    runtime = root.path / Path(found["runtime"]).parent.relative_to("/")
    compiled = sorted(runtime.glob("**/*.so"))
    assert compiled and all(elf_machine(library) == AARCH64 for library in compiled)
