"""Deployment for real: lint the role and unit, run the playbook twice against a Debian 12 root
(chroot connection), boot that root with systemd-nspawn, and check the service as systemd runs it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.broker import free_port, make_certs
from tests.debian_root import build_root, community_general
from tests.helpers import MODEL_TARBALL

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE = ROOT / "ansible"
ARTIFACTS = ROOT / "test-artifacts"
BIN = Path(sys.executable).parent

pytestmark = [
    pytest.mark.deploy,
    pytest.mark.root,
    pytest.mark.timeout(1500),  # a first run builds the Debian root (~1 min) and pip-installs in it
]


def tool(name: str) -> str:
    """A tool from this virtualenv if it has it (ansible-playbook, ansible-lint), else from PATH."""
    local = BIN / name
    found = str(local) if local.exists() else shutil.which(name)
    assert found, f"{name} is not installed"
    return found


def test_ansible_lint_production_profile_is_clean() -> None:
    result = subprocess.run([tool("ansible-lint"), "--offline", "--profile", "production", "--nocolor"],
                            cwd=ANSIBLE, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failure(s), 0 warning(s)" in result.stdout + result.stderr


def play(inventory: Path) -> str:
    """Run the playbook against ``inventory`` (chroot connections); its output, once it succeeded."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_COLLECTIONS_PATH": str(community_general()), "ANSIBLE_FORCE_COLOR": "0",
           "PATH": f"{BIN}:{os.environ['PATH']}"}
    result = subprocess.run([tool("ansible-playbook"), "-i", str(inventory), str(ANSIBLE / "site.yml")],
                            cwd=ANSIBLE, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """A Debian 12 root with the playbook applied twice; yields the two recaps and the settings."""
    base = tmp_path_factory.mktemp("deploy")
    base.chmod(0o755)
    root = base / "root"
    build_root(root)
    port, broker_port, tls_port, rtsp_port = free_port(), free_port(), free_port(), free_port()
    certs = base / "certs"
    certs.mkdir()
    make_certs(certs)
    inventory = base / "inventory.yml"
    host = {
        "ansible_connection": "community.general.chroot",
        "ansible_host": str(root),
        "ansible_python_interpreter": "/usr/bin/python3",
    }
    inventory.write_text(yaml.safe_dump({"all": {"children": {
        "cameras": {"hosts": {"testcam": {
            **host,
            "appliance_name": "Test camera",
            "appliance_camera_backend": "synthetic",
            "appliance_camera_size": "640x360",
            "appliance_port": port,
            "appliance_rtsp": True,
            "appliance_rtsp_port": rtsp_port,
            # Recording to a "share": a tmpfs stands in for the NFS or SMB one (same mount unit, same paths).
            "appliance_recording_continuous": True,
            "appliance_recording_nas": {"what": "tmpfs", "type": "tmpfs", "where": "/srv/recordings",
                                        "options": "size=256m,mode=1777"},
            "appliance_mqtt_host": "127.0.0.1",
            "appliance_mqtt_port": tls_port,
            "appliance_mqtt_tls": True,
            "appliance_mqtt_tls_ca_file": str(certs / "ca.crt"),
            "appliance_mqtt_username": "camera",
            "appliance_mqtt_password": "not-a-real-secret",
            "appliance_settings": {"mqtt": {"reconnect_max": 5}, "recording": {"continuous": {"segment_seconds": 5}}},
            "appliance_pip_environment": {"PIP_CERT": "/etc/ssl/certs/ca-certificates.crt"},
            # Object detection, its model from the controller (as for a host without the internet).
            "appliance_detection": True,
            "appliance_detection_model_tarball": str(MODEL_TARBALL),
        }}},
        "brokers": {"hosts": {"testcam": {
            **host,
            "appliance_mosquitto_port": broker_port,
            "appliance_mosquitto_bind_address": "127.0.0.1",
            "appliance_mosquitto_tls_port": tls_port,
            "appliance_mosquitto_tls_cert_file": str(certs / "server.crt"),
            "appliance_mosquitto_tls_key_file": str(certs / "server.key"),
            "appliance_mosquitto_accounts": [
                {"username": "homeassistant", "password": "ha-secret", "topics": ["readwrite #"]},
                {"username": "othercam", "password": "other-secret", "topics": ["readwrite appliance/othercam/#"]},
            ],
        }}},
    }}}))
    first, second = play(inventory), play(inventory)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "ansible-second-run.txt").write_text(second)
    yield {"root": root, "port": port, "broker_port": broker_port, "rtsp_port": rtsp_port, "first": first,
           "second": second}


def recap(output: str) -> dict[str, int]:
    line = next(line for line in output.splitlines() if line.startswith("testcam"))
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line)}


def test_playbook_installs_and_a_second_run_changes_nothing(deployed: dict[str, object]) -> None:
    root = deployed["root"]
    assert isinstance(root, Path)
    assert recap(str(deployed["first"]))["changed"] > 0
    second = recap(str(deployed["second"]))
    assert second["changed"] == 0 and second["failed"] == 0, deployed["second"]
    config = root / "etc" / "appliance" / "config.yaml"
    assert oct(config.stat().st_mode & 0o777) == "0o640"
    groups = {line.split(":")[0]: int(line.split(":")[2]) for line in (root / "etc/group").read_text().splitlines()}
    assert config.stat().st_uid == 0 and config.stat().st_gid == groups["appliance"]
    settings = yaml.safe_load(config.read_text())
    assert settings["camera"]["backend"] == "synthetic" and settings["camera"]["device"] is None
    assert settings["mqtt"]["password"] == "not-a-real-secret" and settings["mqtt"]["reconnect_max"] == 5
    assert settings["mqtt"]["tls"] == {"enabled": True, "ca_file": "/etc/appliance/mqtt-ca.pem"}
    assert "not-a-real-secret" not in str(deployed["first"]) + str(deployed["second"])  # secrets stay out of logs
    assert "not-a-real-secret" not in (root / "etc/mosquitto/appliance.passwd").read_text()  # hashed
    assert (root / "etc/systemd/system/multi-user.target.wants/appliance.service").is_symlink()
    assert (root / "opt/appliance/venv/bin/python").exists()


class Container:
    """The root booted with systemd-nspawn; commands run in it with nsenter.

    nspawn speaks the notify protocol to its parent: with ``--notify-ready=yes`` it sends the
    container's leader PID at once and ``READY=1`` when the container's systemd has finished booting,
    so nothing here polls.
    """

    def __init__(self, root: Path, log: Path) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="nspawn-"))  # unix socket paths must be short
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(self._folder / "notify"))
        self._notify.settimeout(300)
        self.log = log.open("w")
        self.proc = subprocess.Popen(["systemd-nspawn", "-b", "-D", str(root), "--register=no", "--keep-unit",
                                      "--console=passive", "--notify-ready=yes"],
                                     env={**os.environ, "NOTIFY_SOCKET": str(self._folder / "notify")},
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.init_pid = 0

    def wait_booted(self) -> str:
        """Wait for nspawn's READY=1, then ask the container's systemd how the boot went."""
        while True:
            message = dict(line.split("=", 1) for line in self._notify.recv(4096).decode().splitlines() if "=" in line)
            if "X_NSPAWN_LEADER_PID" in message:
                self.init_pid = int(message["X_NSPAWN_LEADER_PID"])
            if message.get("READY") == "1":
                break
        assert self.init_pid, "systemd-nspawn did not say which process is the container's init"
        return self.run("systemctl", "is-system-running", "--wait", check=False).stdout.strip()

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", "-t", str(self.init_pid), "-a", *args], capture_output=True,
                              text=True, check=check, timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # nspawn asks the container's init to power off
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        self._notify.close()
        shutil.rmtree(self._folder, ignore_errors=True)


@pytest.fixture(scope="module")
def container(deployed: dict[str, object]) -> Iterator[Container]:
    root = deployed["root"]
    assert isinstance(root, Path)
    ARTIFACTS.mkdir(exist_ok=True)
    booted = Container(root, ARTIFACTS / "nspawn.log")
    try:
        state = booted.wait_booted()
        if state != "running":
            failed = booted.run("systemctl", "--failed", "--no-legend", check=False).stdout
            print(f"container booted {state}; failed units:\n{failed}")
        yield booted
    finally:
        booted.stop()


def test_service_runs_under_systemd_and_answers(deployed: dict[str, object], container: Container) -> None:
    assert container.run("systemctl", "is-active", "appliance.service", check=False).stdout.strip() == "active", \
        container.run("journalctl", "-u", "appliance", "--no-pager", "-n", "50", check=False).stdout
    show = container.run("systemctl", "show", "appliance.service", "-p", "User,Type,NRestarts").stdout
    assert "User=appliance" in show and "Type=notify" in show
    base = f"http://127.0.0.1:{deployed['port']}"
    page = requests.get(base + "/", timeout=10)
    assert page.status_code == 200 and "Test camera" in page.text
    camera = requests.get(base + "/api/camera", timeout=10).json()
    assert camera["backend"] == "synthetic" and camera["state"] == "off"
    assert requests.put(base + "/api/camera", json={"on": True}, timeout=30).json()["state"] == "on"
    assert requests.get(base + "/snapshot.jpg", timeout=10).headers["Content-Type"] == "image/jpeg"
    # The optional broker was deployed too, and the appliance is connected to it over TLS.
    status = requests.get(base + "/api/status", timeout=10).json()
    assert status["mqtt"]["connected"] is True
    # Object detection runs with the model the role installed (its hashes checked on the way).
    assert status["detection"]["enabled"] is True and status["detection"]["model"].startswith("mobilenet_ssd_v2")
    models = Path(str(deployed["root"])) / "var/lib/appliance/models"
    assert sorted(path.name for path in models.iterdir()) == ["coco_labels.txt",
                                                               "mobilenet_ssd_v2_coco_quant_postprocess.tflite"]
    broker = ["-h", "127.0.0.1", "-p", str(deployed["broker_port"])]
    home_assistant = [*broker, "-u", "homeassistant", "-P", "ha-secret"]
    available = container.run("mosquitto_sub", *home_assistant, "-C", "1", "-W", "20",
                              "-t", "appliance/testcam/availability", check=False)
    assert available.stdout.strip() == "online", available.stderr
    # Nobody gets in without an account ...
    anonymous = container.run("mosquitto_sub", *broker, "-C", "1", "-W", "5", "-t", "#", check=False)
    assert anonymous.returncode != 0 and "not authori" in anonymous.stderr.lower(), anonymous
    # ... and another camera's account can neither read this camera's topics nor command it.
    other = [*broker, "-u", "othercam", "-P", "other-secret"]
    peek = container.run("mosquitto_sub", *other, "-C", "1", "-W", "3", "-t", "appliance/testcam/#", check=False)
    assert peek.stdout == "", peek.stdout
    container.run("mosquitto_pub", *other, "-t", "appliance/testcam/camera/set", "-m", "OFF")
    # A snapshot asked for after that OFF arrives only if the camera is still on: the OFF never came.
    # stdbuf: mosquitto_sub's stdout is a pipe, so without it the SUBACK line waits in its buffer until
    # enough other output (a snapshot) pushes it out, and the request below would go out 30 s late.
    snapshot = subprocess.Popen(["nsenter", "-t", str(container.init_pid), "-a", "stdbuf", "-oL", "mosquitto_sub",
                                 *home_assistant,
                                 "-d", "-R", "-C", "1", "-W", "30", "-F", "%x", "-t", "appliance/testcam/snapshot"],
                                stdout=subprocess.PIPE, text=True)
    assert snapshot.stdout is not None
    for line in snapshot.stdout:  # -d reports the SUBACK: only then can no answer be missed
        if "SUBACK" in line:
            break
    container.run("mosquitto_pub", *home_assistant, "-t", "appliance/testcam/snapshot/set", "-m", "PRESS")
    payloads = [line for line in snapshot.stdout if line.startswith("ffd8")]
    snapshot.wait(10)
    assert payloads, "no snapshot: the other camera's OFF reached this camera"
    assert requests.get(base + "/api/camera", timeout=10).json()["on"] is True


# The TCP ports a process listens on, from inside the container: its socket inodes against /proc/net.
LISTENING = """
import os, sys
fds = f"/proc/{sys.argv[1]}/fd"
links = [os.readlink(f"{fds}/{fd}") for fd in os.listdir(fds)]
inodes = {link[8:-1] for link in links if link.startswith("socket:")}
ports = set()
for table in ("tcp", "tcp6"):
    for row in open(f"/proc/{sys.argv[1]}/net/{table}").readlines()[1:]:
        fields = row.split()
        if fields[3] == "0A" and fields[9] in inodes:
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
print(" ".join(str(port) for port in sorted(ports)))
"""


def test_the_role_turns_rtsp_on_and_opens_nothing_else(deployed: dict[str, object], container: Container) -> None:
    base = f"http://127.0.0.1:{deployed['port']}"
    assert requests.put(base + "/api/camera", json={"on": True}, timeout=30).json()["state"] == "on"
    rtsp = requests.get(base + "/api/status", timeout=10).json()["rtsp"]
    assert rtsp["enabled"] and rtsp["encoder"] == "libx264", rtsp
    probe = subprocess.run(["ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-show_entries",
                            "stream=codec_name,width,height", "-of", "csv=p=0",
                            f"rtsp://127.0.0.1:{deployed['rtsp_port']}/live"], capture_output=True, text=True,
                           timeout=60)
    assert probe.stdout.strip() == "h264,640,360", probe.stderr
    main_pid = container.run("systemctl", "show", "-p", "MainPID", "--value", "appliance.service").stdout.strip()
    ports = container.run("python3", "-c", LISTENING, main_pid).stdout.split()
    assert sorted(map(int, ports)) == sorted([deployed["port"], deployed["rtsp_port"]])


def test_the_role_mounts_the_recordings_share_and_the_service_records_to_it(deployed: dict[str, object],
                                                                          container: Container) -> None:
    assert container.run("systemctl", "is-active", "srv-recordings.mount").stdout.strip() == "active"
    base = f"http://127.0.0.1:{deployed['port']}"
    assert requests.put(base + "/api/camera", json={"on": True}, timeout=30).json()["state"] == "on"
    deadline = time.monotonic() + 60  # segments of 5 s (appliance_settings)
    recording: dict[str, Any] = {}
    while time.monotonic() < deadline:
        recording = requests.get(base + "/api/status", timeout=10).json()["recording"]
        if recording["continuous"]["files"] >= 1:
            break
        time.sleep(1)
    assert recording["folder"] == "/srv/recordings" and recording["fault"] is None, recording
    assert recording["continuous"]["files"] >= 1, recording
    found = container.run("find", "/srv/recordings/continuous", "-name", "*.mp4").stdout.split()
    assert found and all(name.startswith("/srv/recordings/continuous/") for name in found)
    # It is the share that holds them, not the card underneath it.
    root = deployed["root"]
    assert isinstance(root, Path)
    assert not (root / "srv" / "recordings" / "continuous").exists()


def test_systemd_restarts_the_service_after_it_is_killed(deployed: dict[str, object], container: Container) -> None:
    main_pid = container.run("systemctl", "show", "-p", "MainPID", "--value", "appliance.service").stdout.strip()
    assert main_pid not in ("", "0")
    journal = subprocess.Popen(["nsenter", "-t", str(container.init_pid), "-a", "journalctl", "-f", "-n", "0",
                                "-o", "cat", "-u", "appliance.service"], stdout=subprocess.PIPE, text=True)
    try:
        container.run("sh", "-c", f"kill -KILL {main_pid}")  # as a crash or the OOM killer would
        assert journal.stdout is not None
        for line in journal.stdout:  # systemd logs "Started ..." once the new process says READY=1
            if line.startswith("Started appliance.service"):
                break
    finally:
        journal.terminate()
        journal.wait(10)
    show = container.run("systemctl", "show", "appliance.service", "-p", "MainPID,NRestarts,ActiveState").stdout
    assert "ActiveState=active" in show and f"MainPID={main_pid}\n" not in show
    assert int(re.search(r"NRestarts=(\d+)", show).group(1)) >= 1
    # It came back as it was: the camera was on before the kill.
    camera = requests.get(f"http://127.0.0.1:{deployed['port']}/api/camera", timeout=10).json()
    assert camera["on"] is True


def test_unit_verifies_clean_and_security_is_reported(container: Container) -> None:
    verify = container.run("systemd-analyze", "verify", "/etc/systemd/system/appliance.service", check=False)
    assert verify.returncode == 0 and verify.stdout.strip() == "" and verify.stderr.strip() == "", \
        verify.stdout + verify.stderr
    security = container.run("systemd-analyze", "security", "--no-pager", "appliance.service", check=False)
    (ARTIFACTS / "systemd-analyze-security.txt").write_text(security.stdout)
    match = re.search(r"Overall exposure level for appliance.service: ([\d.]+)", security.stdout)
    assert match, security.stdout[-2000:]
    print(json.dumps({"exposure": float(match.group(1))}))
    assert float(match.group(1)) <= 2.0  # 1.5 when written: a regression in hardening fails here
