"""Deployment on Debian 13 (trixie, Python 3.13: Raspberry Pi OS's current base), with the Pi camera
backend under systemd: the playbook converges twice, and the service streams frames that libcamera's
virtual camera made, through the real picamera2, inside the unit's sandbox.

Raspberry Pi OS installs picamera2 from its own archive (python3-picamera2) into the system's Python;
Debian has no such package, so the root gets picamera2 from PyPI into the same place, as that package
would put it, and the role's venv sees it through ``--system-site-packages`` as on a Pi. The test-only
shims (tests/camera_stack.py) reach the service through a drop-in of the test's own, never the role's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from tests.broker import free_port
from tests.camera_stack import APT as CAMERA_APT
from tests.camera_stack import PICAMERA2, PIP_EXTRAS, SHIM_DIR, SHIM_ENV, CameraRoot, install_shims
from tests.debian_root import PACKAGES, build_root
from tests.helpers import decode_jpeg, iter_mjpeg
from tests.test_camera_stack import film
from tests.test_deploy import ARTIFACTS, Container, play, recap

pytestmark = [pytest.mark.deploy, pytest.mark.camera, pytest.mark.root, pytest.mark.timeout(1500)]

# What Raspberry Pi OS trixie has on a Pi with a camera: libcamera and picamera2 in the system Python.
TRIXIE_PACKAGES = ",".join(dict.fromkeys(PACKAGES.split(",") + CAMERA_APT.split(",") + ["python3-pip"]))
PICAMERA2_SYSTEM_WIDE = [["python3", "-m", "pip", "install", "-q", "--break-system-packages", "--no-deps",
                          PICAMERA2, *PIP_EXTRAS]]


@pytest.fixture(scope="module")
def trixie(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    base = tmp_path_factory.mktemp("deploy-trixie")
    base.chmod(0o755)
    root = base / "root"
    build_root(root, suite="trixie", packages=TRIXIE_PACKAGES, setup=PICAMERA2_SYSTEM_WIDE)
    root.chmod(0o755)
    install_shims(root)
    film(CameraRoot(root), moving=False)
    dropin = root / "etc/systemd/system/appliance.service.d/zz-test-virtual-camera.conf"
    dropin.parent.mkdir(parents=True, exist_ok=True)
    environment = " ".join(f"{key}={value}" for key, value in SHIM_ENV.items())
    dropin.write_text("# Test only: the virtual camera's shims (tests/camera_stack.py)\n[Service]\n"
                      f"Environment={environment}\nEnvironment=PYTHONPATH=/opt/appliance/src:{SHIM_DIR}/site\n")
    port = free_port()
    inventory = base / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"cameras": {"hosts": {"testcam": {
        "ansible_connection": "community.general.chroot",
        "ansible_host": str(root),
        "ansible_python_interpreter": "/usr/bin/python3",
        "appliance_name": "Trixie camera",
        "appliance_camera_backend": "picamera2",
        "appliance_camera_size": "640x480",
        "appliance_camera_fps": 15,
        "appliance_port": port,
        "appliance_pip_environment": {"PIP_CERT": "/etc/ssl/certs/ca-certificates.crt"},
    }}}}}}))
    first, second = play(inventory), play(inventory)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "ansible-second-run-trixie.txt").write_text(second)
    yield {"root": root, "port": port, "first": first, "second": second}


def test_the_playbook_converges_on_debian_13(trixie: dict[str, object]) -> None:
    assert recap(str(trixie["first"]))["changed"] > 0
    second = recap(str(trixie["second"]))
    assert second["changed"] == 0 and second["failed"] == 0, trixie["second"]
    root = trixie["root"]
    assert isinstance(root, Path)
    assert next((root / "opt/appliance/venv/lib").glob("python3.13")), "the venv is Debian 13's Python 3.13"
    assert yaml.safe_load((root / "etc/appliance/config.yaml").read_text())["camera"]["backend"] == "picamera2"


@pytest.fixture(scope="module")
def container(trixie: dict[str, object]) -> Iterator[Container]:
    root = trixie["root"]
    assert isinstance(root, Path)
    booted = Container(root, ARTIFACTS / "nspawn-trixie.log")
    try:
        booted.wait_booted()
        yield booted
    finally:
        booted.stop()


def test_on_debian_13_the_service_streams_the_virtual_camera_through_picamera2(
        trixie: dict[str, object], container: Container) -> None:
    journal = container.run("journalctl", "-u", "appliance", "--no-pager", "-n", "80", check=False).stdout
    assert container.run("systemctl", "is-active", "appliance.service", check=False).stdout.strip() == "active", \
        journal
    base = f"http://127.0.0.1:{trixie['port']}"
    camera = requests.get(base + "/api/camera", timeout=10).json()
    assert camera["backend"] == "picamera2", camera
    answer = requests.put(base + "/api/camera", json={"on": True}, timeout=60)
    state = answer.json()["state"]
    # libcamera's virtual camera, freshly booted in the container, once sent (in one CI run) no
    # first frame within camera.read_timeout; the appliance then reopens it by itself (retry.*), which
    # is what a user sees too: wait for that rather than fail on the first try.
    deadline = time.monotonic() + 30
    while state != "on" and time.monotonic() < deadline:
        time.sleep(0.5)  # the service is another process: its state is polled over HTTP
        state = requests.get(base + "/api/camera", timeout=10).json()["state"]
    journal = container.run("journalctl", "-u", "appliance", "--no-pager", "-n", "80", check=False).stdout
    (ARTIFACTS / "appliance-trixie-journal.txt").write_text(journal)
    assert state == "on", answer.text + journal
    with requests.get(base + "/stream.mjpg", stream=True, timeout=10) as stream:
        parts = iter_mjpeg(stream)
        images = [decode_jpeg(next(parts)[1]) for _ in range(3)]
    assert all(image.shape == (480, 640, 3) for image in images)
    blue, green, red = (int(value) for value in images[-1][240, 40])
    assert blue > 170 and red < 90 and green < 90  # the band the test filmed, through libcamera and picamera2
    assert "Pi camera 0 configured: main NV12 640x480" in journal
    assert "Traceback" not in journal, journal
