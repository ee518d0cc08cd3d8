"""Shared fixtures: an appliance served for real on loopback, built per test; and the markers' needs.

A test marked ``broker``, ``browser``, ``camera``, ``arm64``, ``deploy``, ``rtsp``, ``recording`` or ``root``
needs a system tool or root.
Where it is missing the test is skipped with the reason, except under ``CI=true``: there a missing tool is a
failure, so CI can never pass by skipping.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.runtime import Appliance
from tests.helpers import make_config, require

NEEDS: dict[str, Callable[[], str | None]] = {
    "broker": lambda: None if shutil.which("mosquitto") or os.path.exists("/usr/sbin/mosquitto")
    else "mosquitto is not installed (apt-get install mosquitto mosquitto-clients)",
    "browser": lambda: None if (shutil.which("chromium") or os.path.exists("/usr/bin/chromium"))
    and importlib.util.find_spec("playwright") else "Chromium or Playwright is missing (apt-get install chromium)",
    "deploy": lambda: "needs root" if os.geteuid() != 0 else None if shutil.which("debootstrap")
    and shutil.which("systemd-nspawn") else "debootstrap or systemd-nspawn is missing",
    "camera": lambda: "needs root" if os.geteuid() != 0 else None if shutil.which("debootstrap")
    and shutil.which("gcc") else "debootstrap or gcc is missing",
    "arm64": lambda: "needs root" if os.geteuid() != 0 else None if shutil.which("qemu-aarch64-static")
    and shutil.which("update-binfmts") else "qemu-user-static or binfmt-support is missing (bash scripts/test.sh)",
    "rtsp": lambda: _rtsp_problem(),
    "root": lambda: None if os.geteuid() == 0 else "needs root",
    "recording": lambda: None if shutil.which("ffprobe") else "ffmpeg is not installed (apt-get install ffmpeg)",
    "detection": lambda: _detection_problem(),
    "mse": lambda: _mse_problem(),
    "notify": lambda: None if importlib.util.find_spec("aiosmtpd") and importlib.util.find_spec("apprise")
    else "aiosmtpd or apprise is not installed (bash scripts/test.sh)",
}


def _detection_problem() -> str | None:
    """What keeps the object detection tests from running: the model, the runtime, the footage."""
    from tests.helpers import FOOTAGE, MODELS

    if not (MODELS / "mobilenet_ssd_v2_coco_quant_postprocess.tflite").exists():
        return f"the detection model is not in {MODELS} (bash scripts/test.sh installs it)"
    if importlib.util.find_spec("ai_edge_litert") is None:
        return "ai-edge-litert is not installed (bash scripts/test.sh)"
    if not (FOOTAGE / "vtest.avi").exists():
        return f"{FOOTAGE}/vtest.avi is missing (apt-get install opencv-doc)"
    return None


def _mse_problem() -> str | None:
    """What keeps the H.264 view's tests from running: PyAV with libx264, ffprobe."""
    if not shutil.which("ffprobe"):
        return "ffmpeg is not installed (apt-get install ffmpeg)"
    try:
        from appliance.h264.encoder import choose_codec

        choose_codec("libx264")
    except Exception as exc:  # EncoderUnavailable, or PyAV failing to load
        return f"no H.264 encoder: {exc}"
    return None


def _rtsp_problem() -> str | None:
    """What keeps the RTSP tests from running here: GStreamer's RTSP server (apt) or ffmpeg."""
    if not (shutil.which("ffprobe") and shutil.which("ffmpeg")):
        return "ffmpeg is not installed (apt-get install ffmpeg)"
    try:
        from appliance.rtsp.server import check_gstreamer

        check_gstreamer()
    except (ImportError, ValueError, RuntimeError) as exc:
        return f"GStreamer's RTSP server is missing ({exc}): bash scripts/test.sh installs it"
    return None


PREBUILD = pytest.StashKey[subprocess.Popen[bytes]]()


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected: only for arm64 tests that will run
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """arm64 tests go last, and their root (about 20 minutes to build, all emulated) is built in the
    background from the start, so the build overlaps every other test instead of adding to them."""
    arm64 = [item for item in items if item.get_closest_marker("arm64")]
    if not arm64:
        return
    items[:] = [item for item in items if not item.get_closest_marker("arm64")] + arm64
    if NEEDS["arm64"]() or NEEDS["camera"]() or hasattr(config, "workerinput"):
        return  # the tests will say why they cannot run; under xdist, each worker would start one
    log = open(Path(tempfile.gettempdir()) / "appliance-arm64-prebuild.log", "wb")  # noqa: SIM115 (the child's)
    config.stash[PREBUILD] = subprocess.Popen(
        [sys.executable, "-c", "from tests.camera_stack import prebuild_arm64; prebuild_arm64()"],
        cwd=Path(__file__).resolve().parent.parent, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A prebuild still running when the session ends (interrupted, or its tests deselected) is
    stopped with everything it started; the next build starts over."""
    builder = session.config.stash.get(PREBUILD, None)
    if builder is not None and builder.poll() is None:
        os.killpg(builder.pid, signal.SIGTERM)
        builder.wait(60)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers():
        check = NEEDS.get(marker.name)
        problem = check() if check else None
        if problem:
            require(False, f"[{marker.name}] {problem}")


@pytest.fixture
def start_appliance(tmp_path: Any) -> Iterator[Callable[..., Appliance]]:
    """Start an in-process appliance (real cheroot server on 127.0.0.1, free port); stopped after."""
    started: list[Appliance] = []

    def start(backend: Any = None, parts: dict[str, Any] | None = None, **sections: Any) -> Appliance:
        """``parts`` go to Appliance as keywords: monotonic, pin_factory, button_clock."""
        config = make_config(tmp_path, **sections)
        appliance = Appliance(config, backend=backend, **(parts or {}))
        appliance.start()
        started.append(appliance)
        return appliance

    yield start
    for appliance in reversed(started):
        appliance.stop()
