"""Attacks a LAN device or a hostile web page could make, run against the real server on loopback.

Each test shows the attack refused, bounded or harmless: DNS rebinding, framing, huge bodies and
headers, slow connections, connection floods, descriptor exhaustion, password guessing, plain
HTTP where HTTPS is configured.
"""

from __future__ import annotations

import base64
import os
import queue
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from appliance.config import ConfigError, load_config
from appliance.passwords import PasswordCheck, hash_password, verify_password
from appliance.runtime import Appliance
from appliance.web.security import FailureLimiter, HostAllowList, split_host
from appliance.web.server import request_state
from tests.broker import free_port
from tests.helpers import cpu_seconds, iter_mjpeg, require_tool, wait_until_serving

Start = Callable[..., Appliance]
PASSWORD = "correct horse battery staple"


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def raw_request(port: int, data: bytes, timeout: float = 5.0, source: str = "127.0.0.1") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def status_of(reply: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3})", reply)
    assert match, reply[:200]
    return int(match.group(1))


def camera_on(app: Appliance, **kwargs: Any) -> None:
    response = requests.put(app.url + "/api/camera", json={"on": True}, timeout=20, **kwargs)
    assert response.status_code == 200, response.text


# --- who may talk to it ------------------------------------------------------------------------

def test_dns_rebinding_host_is_refused_on_get_and_put(start_appliance: Start) -> None:
    app = start_appliance()
    evil = {"Host": f"evil.example:{app.server.port}", "Origin": f"http://evil.example:{app.server.port}"}
    put = requests.put(app.url + "/api/camera", json={"on": True}, headers=evil, timeout=10)
    assert put.status_code == 421 and "host name" in put.json()["error"]
    assert app.controller.state.value == "off" and not app.controller.wanted_on
    for path in ("/", "/api/status", "/snapshot.jpg", "/stream.mjpg", "/api/events", "/healthz"):
        response = requests.get(app.url + path, headers={"Host": "evil.example"}, timeout=10)
        assert response.status_code == 421, path
    # Its own names still work, in any case and with any port.
    for host in ("127.0.0.1:8000", "LOCALHOST", f"{socket.gethostname().upper()}.local", "[::1]:80"):
        assert requests.get(app.url + "/api/camera", headers={"Host": host}, timeout=10).status_code == 200, host


def test_allowed_hosts_and_the_switch_to_allow_any(start_appliance: Start) -> None:
    app = start_appliance(server={"allowed_hosts": ["cam.example.org", "*.home.arpa", "proxy.example:443"]})
    for host, status in [("cam.example.org", 200), ("CAM.EXAMPLE.ORG.:8000", 200), ("garden.home.arpa", 200),
                         ("proxy.example:443", 200), ("proxy.example:8000", 421), ("evil.example", 421)]:
        assert requests.get(app.url + "/api/camera", headers={"Host": host}, timeout=10).status_code == status, host
    anything = start_appliance(server={"allowed_hosts": ["*"]})
    assert requests.get(anything.url + "/api/camera", headers={"Host": "evil.example"}, timeout=10).ok


def test_host_parsing_is_case_insensitive_and_port_aware() -> None:
    assert split_host("Cam.Local:8000") == ("cam.local", 8000)
    assert split_host("[FE80::1]:80") == ("fe80::1", 80)
    assert split_host("fe80::1") == ("fe80::1", None)
    hosts = HostAllowList([], hostname="garden-cam")
    assert hosts.allows("GARDEN-CAM.local:8000") and hosts.allows("192.168.1.5") and hosts.allows("[::1]:8000")
    assert not hosts.allows("garden-cam.evil.example") and not hosts.allows("") and not hosts.allows(None)


def test_cross_site_pages_cannot_use_the_camera(start_appliance: Start) -> None:
    app = start_appliance()
    camera_on(app)
    embedded = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}
    for path in ("/stream.mjpg", "/snapshot.jpg", "/api/status"):
        response = requests.get(app.url + path, headers=embedded, timeout=10)
        assert response.status_code == 403, path
    assert app.broadcaster.viewers == 0  # no viewer slot was taken
    link = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
    assert requests.get(app.url + "/", headers=link, timeout=10).status_code == 200  # a bookmark or a link
    same = {"Sec-Fetch-Site": "same-origin", "Origin": app.url}
    assert requests.post(app.url + "/api/camera/toggle", headers=same, timeout=20).json()["state"] == "off"
    old_browser = {"Origin": "http://evil.example"}  # no fetch metadata, but an Origin
    assert requests.post(app.url + "/api/camera/toggle", headers=old_browser, timeout=10).status_code == 403


def test_put_needs_json_so_a_browser_must_preflight(start_appliance: Start) -> None:
    app = start_appliance()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        response = requests.put(app.url + "/api/camera", data=b'{"on": true}', headers={"Content-Type": content_type},
                                timeout=10)
        assert response.status_code == 415 and "application/json" in response.json()["error"]
    assert not app.controller.wanted_on


def test_security_headers_on_pages_pictures_and_streams(start_appliance: Start) -> None:
    app = start_appliance()
    camera_on(app)
    app.events.save({"id": "20240101T000000Z-abcdef", "started_at": 1.0, "ended_at": 2.0}, b"\xff\xd8JPEG")
    for path in ("/", "/snapshot.jpg", "/api/status", "/api/events/20240101T000000Z-abcdef/snapshot.jpg",
                 "/stream.mjpg", "/nope"):
        with requests.get(app.url + path, stream=True, timeout=10) as response:
            headers = response.headers
            assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], path
            assert "unsafe-inline" not in headers["Content-Security-Policy"]
            assert headers["X-Frame-Options"] == "DENY"
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Referrer-Policy"] == "no-referrer"
            assert headers["Cross-Origin-Resource-Policy"] == "same-origin"


# --- what one client can cost ------------------------------------------------------------------

def test_a_100_mb_body_is_refused_before_it_is_read(start_appliance: Start) -> None:
    app = start_appliance()
    before = rss_kib()
    with socket.create_connection(("127.0.0.1", app.server.port), timeout=10) as sock:
        sock.sendall(b"PUT /api/camera HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 104857600\r\n\r\n")
        reply = sock.recv(4096)
        sent = 0
        chunk = b"x" * 65536
        try:  # keep pushing the body, as a hostile client would
            while sent < 100 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
    assert status_of(reply) == 413 and b"exceeds" in reply
    assert sent < 100 * 1024 * 1024, "the server kept reading the body"
    assert rss_kib() - before < 5 * 1024
    assert requests.get(app.url + "/api/camera", timeout=10).ok


def test_oversized_headers_get_431_and_cost_nothing(start_appliance: Start) -> None:
    app = start_appliance()
    before = rss_kib()
    with socket.create_connection(("127.0.0.1", app.server.port), timeout=10) as sock:
        sock.sendall(b"GET /api/camera HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Fill: ")
        try:  # a 40 MB header line
            for _ in range(40 * 16):
                sock.sendall(b"a" * 65536)
        except OSError:
            pass
        reply = sock.recv(4096)
    assert status_of(reply) == 431
    assert rss_kib() - before < 5 * 1024
    long_line = raw_request(app.server.port, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert status_of(long_line) == 431


def test_a_request_that_never_finishes_gets_408(start_appliance: Start) -> None:
    app = start_appliance(server={"request_timeout": 0.3})
    started = time.monotonic()
    reply = raw_request(app.server.port, b"GET /api/camera HTTP/1.1\r\nHost: 127.0.0.1\r\n", timeout=10)
    assert status_of(reply) == 408
    assert 0.25 < time.monotonic() - started < 2.5
    silent = raw_request(app.server.port, b"", timeout=10)  # connects and says nothing
    assert silent == b""  # closed at the deadline, not held forever


def test_slow_connections_do_not_starve_anyone(start_appliance: Start) -> None:
    # Fewer threads than slow clients: 2 viewers + 1 page + 2 spare = 5 threads, 40 slow clients.
    app = start_appliance(stream={"max_viewers": 2, "max_live_clients": 1}, server={"extra_threads": 2,
                                                                                     "request_timeout": 30})
    camera_on(app)
    stream = requests.get(app.url + "/stream.mjpg", stream=True, timeout=10)
    parts = iter_mjpeg(stream)
    next(parts)
    slow = []
    stop = threading.Event()
    try:
        for _ in range(40):
            sock = socket.create_connection(("127.0.0.1", app.server.port), timeout=5)
            sock.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            slow.append(sock)

        def trickle() -> None:
            while not stop.wait(0.5):
                for sock in slow:
                    sock.sendall(b"X")  # a byte now and then, never the end of the headers

        threading.Thread(target=trickle, daemon=True).start()
        for path in ("/healthz", "/api/camera", "/api/status", "/snapshot.jpg"):
            started = time.monotonic()
            assert requests.get(app.url + path, timeout=5).status_code == 200, path
            assert time.monotonic() - started < 1.0, path
        started = time.monotonic()
        next(parts)  # the open stream goes on
        assert time.monotonic() - started < 1.0
    finally:
        stop.set()
        for sock in slow:
            sock.close()
        stream.close()


def test_connections_per_client_are_capped_without_hurting_others(start_appliance: Start) -> None:
    app = start_appliance(server={"max_connections_per_client": 8})
    held = [socket.create_connection(("127.0.0.1", app.server.port), timeout=5, source_address=("127.0.0.2", 0))
            for _ in range(8)]
    try:
        request = b"GET /api/camera HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        refused = raw_request(app.server.port, request, source="127.0.0.2")
        assert status_of(refused) == 503 and b"too many connections from this address" in refused
        assert requests.get(app.url + "/api/camera", timeout=5).ok  # 127.0.0.1 is another client
    finally:
        for sock in held:
            sock.close()
    assert app.server.wait_for_connections(0, timeout=5)  # it notices the closes on its next select
    again = raw_request(app.server.port, b"GET /api/camera HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                        source="127.0.0.2")
    assert status_of(again) == 200


def test_running_out_of_descriptors_is_logged_once_and_recovers(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "APPLIANCE_STATE_DIR": str(tmp_path), "APPLIANCE_SERVER__MAX_CONNECTIONS_PER_CLIENT": "4096",
           "APPLIANCE_SERVER__MAX_CONNECTIONS": "4096"}  # so the descriptors run out first
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (96, 96)); "
            "from appliance.__main__ import main; sys.exit(main())")
    proc = subprocess.Popen([sys.executable, "-c", code, "--camera", "synthetic", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    held: list[socket.socket] = []
    try:
        wait_until_serving(proc)
        threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or ()], daemon=True).start()
        for _ in range(150):  # more than the process may open
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=3)
            except OSError:
                break  # the listen queue is full: the server stopped accepting
            sock.sendall(b"G")
            held.append(sock)
        while "out of file descriptors" not in lines.get(timeout=10):
            pass
        cpu_before, started = cpu_seconds(proc.pid), time.monotonic()
        threading.Event().wait(0.6)  # an observation window, not a synchronisation
        busy = (cpu_seconds(proc.pid) - cpu_before) / (time.monotonic() - started)
        assert busy < 0.25, f"the accept loop spins at {busy:.0%} of a core while out of descriptors"
        for sock in held:
            sock.close()
        held.clear()
        deadline = time.monotonic() + 10
        while not _answers(f"http://127.0.0.1:{port}/healthz"):
            assert time.monotonic() < deadline, "the server did not recover after descriptors were freed"
    finally:
        for sock in held:
            sock.close()
        proc.terminate()
        proc.wait(10)
    output = "".join(iter_queue(lines))
    assert output.count("out of file descriptors") == 0, output[-3000:]  # the one line was read above
    assert "Traceback" not in output, output[-3000:]


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


def iter_queue(lines: queue.Queue[str]) -> Iterator[str]:
    while True:
        try:
            yield lines.get_nowait()
        except queue.Empty:
            return


# --- authentication ----------------------------------------------------------------------------

def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def password_hash() -> str:
    return hash_password(PASSWORD)


def test_auth_401_without_200_with_429_after_guessing_and_healthz_open(start_appliance: Start,
                                                                         password_hash: str) -> None:
    app = start_appliance(server={"auth": {"username": "admin", "password_hash": password_hash, "max_failures": 3}})
    response = requests.get(app.url + "/api/camera", timeout=10)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="Camera appliance", charset="UTF-8"'
    assert requests.get(app.url + "/healthz", timeout=10).status_code == 200
    assert requests.get(app.url + "/api/camera", auth=("admin", PASSWORD), timeout=10).status_code == 200
    camera_on(app, auth=("admin", PASSWORD))
    with requests.get(app.url + "/stream.mjpg", auth=("admin", PASSWORD), stream=True, timeout=10) as stream:
        next(iter_mjpeg(stream))
    assert requests.get(app.url + "/api/camera", auth=("admin", "wrong"), timeout=10).status_code == 401
    assert requests.get(app.url + "/api/camera", auth=("root", PASSWORD), timeout=10).status_code == 401
    assert requests.get(app.url + "/api/camera", headers={"Authorization": "Basic !!!"}, timeout=10).status_code == 401
    for _ in range(3):
        requests.get(app.url + "/api/camera", auth=("admin", "guess"), timeout=10)
    limited = requests.get(app.url + "/api/camera", auth=("admin", PASSWORD), timeout=10)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert requests.get(app.url + "/healthz", timeout=10).status_code == 200


def test_auth_with_a_password_file_and_clients_with_credentials_in_the_url(start_appliance: Start,
                                                                            tmp_path: Path) -> None:
    secret = tmp_path / "web-password"
    secret.write_text(PASSWORD + "\n")
    app = start_appliance(server={"auth": {"username": "viewer", "password_file": str(secret)}})
    camera_on(app, auth=("viewer", PASSWORD))
    curl = subprocess.run([require_tool("curl"), "-sf", "-u", f"viewer:{PASSWORD}", app.url + "/snapshot.jpg",
                           "-o", "-"], capture_output=True, timeout=30)
    assert curl.returncode == 0 and curl.stdout[:2] == b"\xff\xd8"
    # OpenCV/FFmpeg (as VLC and ffmpeg) answers the 401 challenge with the credentials in the URL.
    import cv2

    url = app.url.replace("http://", f"http://viewer:{PASSWORD.replace(' ', '%20')}@") + "/stream.mjpg"
    capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
    try:
        ok, image = capture.read()
    finally:
        capture.release()
    assert ok and image.shape == (240, 320, 3)


def test_limiter_forgets_after_the_window() -> None:
    now = [0.0]
    limiter = FailureLimiter(2, window=60, max_addresses=2, clock=lambda: now[0])
    limiter.failed("a")
    assert limiter.retry_after("a") is None
    limiter.failed("a")
    assert limiter.retry_after("a") == 60
    now[0] = 30.0
    assert limiter.retry_after("a") == 30
    now[0] = 60.5
    assert limiter.retry_after("a") is None
    for address in ("b", "c", "d"):  # bounded: old addresses are forgotten, not kept forever
        limiter.failed(address)
    assert len(limiter._failures) == 2


def test_password_hashes_verify_and_reject() -> None:
    stored = hash_password("s3cret")
    assert stored.startswith("scrypt$") and "s3cret" not in stored
    assert verify_password("s3cret", stored) and not verify_password("s3cret!", stored)
    assert hash_password("s3cret") != stored  # salted
    check = PasswordCheck("admin", password_hash=stored)
    assert check.check("admin", "s3cret") and check.check("admin", "s3cret")  # the second from the cache
    assert not check.check("admin", "nope") and not check.check("Admin", "s3cret")


def test_hash_password_command_and_a_bad_hash_in_the_config(tmp_path: Path) -> None:
    made = subprocess.run([sys.executable, "-m", "appliance", "hash-password"], input="hunter2\n",
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    stored = made.stdout.strip()
    assert verify_password("hunter2", stored)
    config = load_config(None, environ={"APPLIANCE_SERVER__AUTH__USERNAME": "admin",
                                        "APPLIANCE_SERVER__AUTH__PASSWORD_HASH": stored})
    assert config.server.auth.enabled
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"APPLIANCE_SERVER__AUTH__USERNAME": "admin",
                                   "APPLIANCE_SERVER__AUTH__PASSWORD_HASH": "md5$plaintext-ish"})
    assert "server.auth.password_hash = '***'" in str(info.value) and "plaintext-ish" not in str(info.value)


# --- HTTPS -------------------------------------------------------------------------------------

@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([require_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=cam", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_https_with_a_self_signed_certificate(start_appliance: Start, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    app = start_appliance(server={"tls": {"cert_file": str(cert), "key_file": str(key)}})
    assert app.url.startswith("https://")
    assert requests.get(app.url + "/api/camera", verify=str(cert), timeout=10).json()["state"] == "off"
    camera_on(app, verify=str(cert))
    with requests.get(app.url + "/stream.mjpg", verify=str(cert), stream=True, timeout=10) as stream:
        next(iter_mjpeg(stream))
    plain = raw_request(app.server.port, b"GET /api/camera HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert b"200 OK" not in plain  # no answer in clear text
    assert app.server.answers()  # the watchdog's probe speaks TLS


def test_a_stalled_tls_handshake_does_not_block_other_clients(start_appliance: Start,
                                                               certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    app = start_appliance(server={"tls": {"cert_file": str(cert), "key_file": str(key)}})
    stalled = [socket.create_connection(("127.0.0.1", app.server.port), timeout=5) for _ in range(5)]
    try:
        for sock in stalled:
            sock.sendall(b"\x16\x03\x01")  # the first bytes of a ClientHello, then nothing
        started = time.monotonic()
        assert requests.get(app.url + "/healthz", verify=str(cert), timeout=5).ok
        assert time.monotonic() - started < 1.0
    finally:
        for sock in stalled:
            sock.close()
    with pytest.raises(ssl.SSLError):
        context = ssl.create_default_context()  # verifies: the self-signed certificate is not trusted
        with socket.create_connection(("127.0.0.1", app.server.port), timeout=5) as sock, \
                context.wrap_socket(sock, server_hostname="localhost"):
            pass


# --- secrets and config ------------------------------------------------------------------------

def test_environment_strings_are_kept_verbatim_and_typed_by_field() -> None:
    config = load_config(None, environ={"APPLIANCE_MQTT__PASSWORD": "#abc", "APPLIANCE_MQTT__USERNAME": "0123",
                                        "APPLIANCE_NAME": "yes", "APPLIANCE_CAMERA__FPS": "12",
                                        "APPLIANCE_MOTION__ENABLED": "false", "APPLIANCE_GPIO__BUTTON_PIN": "null",
                                        "APPLIANCE_SERVER__ALLOWED_HOSTS": "cam.example, *.home.arpa"})
    assert config.mqtt.password is not None and config.mqtt.password.get_secret_value() == "#abc"
    assert config.mqtt.username == "0123" and config.name == "yes"
    assert config.camera.fps == 12 and config.motion.enabled is False and config.gpio.button_pin is None
    assert config.server.allowed_hosts == ["cam.example", "*.home.arpa"]


def test_config_errors_never_print_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("mqtt:\n  password: [s3cret-in-a-list]\n  port: nope\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert "s3cret" not in message and "mqtt.password = '***'" in message and "mqtt.port = 'nope'" in message
    env = {**os.environ, "APPLIANCE_MQTT__PASSWORD": "#abc", "APPLIANCE_MQTT__PORT": "zero"}
    failed = subprocess.run([sys.executable, "-m", "appliance", "--check-config"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert failed.returncode == 2 and "mqtt.port = 'zero'" in failed.stderr and "#abc" not in failed.stderr
    ok = subprocess.run([sys.executable, "-m", "appliance", "--check-config"],
                        env={**env, "APPLIANCE_MQTT__PORT": "1883"}, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "#abc" not in ok.stdout


def test_unreadable_secret_files_are_config_errors_with_status_2(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    for extra in ({"APPLIANCE_MQTT__PASSWORD_FILE": str(missing)},
                  {"APPLIANCE_SERVER__TLS__CERT_FILE": str(missing), "APPLIANCE_SERVER__TLS__KEY_FILE": str(missing)}):
        env = {**os.environ, **extra}
        result = subprocess.run([sys.executable, "-m", "appliance", "--check-config"], env=env, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 2 and "cannot read it" in result.stderr, result.stderr
    env = {**os.environ, "APPLIANCE_SERVER__AUTH__USERNAME": "admin"}
    result = subprocess.run([sys.executable, "-m", "appliance", "--check-config"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "exactly one of password_hash and password_file" in result.stderr


def test_request_state_recognises_whole_requests() -> None:
    assert request_state(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n", 100, 100) == "wait"
    assert request_state(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 100, 100) == "ready"
    assert request_state(b"\r\nGET / HTTP/1.1\r\n\r\n", 100, 100) == "ready"
    body = b"PUT /x HTTP/1.1\r\ncontent-length: 5\r\n\r\n"
    assert request_state(body + b"ab", 100, 100) == "wait"
    assert request_state(body + b"abcde", 100, 100) == "ready"
    assert request_state(b"PUT /x HTTP/1.1\r\nContent-Length: 500\r\n\r\n", 100, 100) == "ready"  # → 413
    assert request_state(b"GET /" + b"a" * 200, 100, 100) == "too_large"


# --- helpers -----------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    yield


def test_full_viewer_and_page_slots_never_starve_the_api(start_appliance: Start) -> None:
    app = start_appliance(stream={"max_viewers": 2, "max_live_clients": 1}, server={"extra_threads": 2})
    camera_on(app)
    held = [requests.get(app.url + "/stream.mjpg", stream=True, timeout=10) for _ in range(2)]
    held.append(requests.get(app.url + "/api/events/live", stream=True, timeout=10))
    try:
        assert all(response.status_code == 200 for response in held)
        for _ in range(5):  # more requests than spare threads, one after another and at once
            assert requests.get(app.url + "/stream.mjpg", timeout=5).status_code == 503
            assert requests.get(app.url + "/api/events/live", timeout=5).status_code == 503
        results: list[int] = []
        workers = [threading.Thread(target=lambda: results.append(
            requests.get(app.url + "/api/status", timeout=5).status_code)) for _ in range(6)]
        started = time.monotonic()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(10)
        assert results == [200] * 6 and time.monotonic() - started < 2.0
    finally:
        for response in held:
            response.close()


def test_password_checks_against_the_hash_run_one_at_a_time_and_once_for_the_same_login(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """scrypt takes 16 MiB a check: RTSP clients (a thread each) and HTTP threads must not run many at
    once, and a burst of requests with the same login must cost one check, not one each."""
    import appliance.passwords as passwords

    stored = hash_password("secret")
    real = passwords.verify_password
    running, most, calls = [0], [0], [0]
    lock = threading.Lock()

    def verify(password: str, hashed: str) -> bool:
        with lock:
            running[0] += 1
            calls[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.05)  # the work of a slow board's scrypt, so that overlapping checks would overlap
            return real(password, hashed)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(passwords, "verify_password", verify)
    check = PasswordCheck("admin", password_hash=stored)
    start = threading.Barrier(8)
    results: list[bool] = []

    def attempt(password: str) -> None:
        start.wait(10)
        results.append(check.check("admin", password))

    threads = [threading.Thread(target=attempt, args=("secret" if n % 2 else f"wrong {n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [False] * 4 + [True] * 4
    assert most[0] == 1  # never two at once
    assert calls[0] == 5  # four wrong ones, and the right one once for its four requests


def test_digest_is_offered_beside_basic_when_the_password_itself_is_known(start_appliance: Start,
                                                                         tmp_path: Path) -> None:
    from requests.auth import HTTPDigestAuth

    secret = tmp_path / "password"
    secret.write_text("digest pw\n")
    app = start_appliance(server={"auth": {"username": "admin", "password_file": str(secret), "max_failures": 3}})
    bare = requests.get(f"{app.url}/api/status", timeout=5)
    challenges = bare.headers["WWW-Authenticate"]
    assert bare.status_code == 401 and challenges.startswith("Digest ") and ", Basic realm=" in challenges
    assert requests.get(f"{app.url}/api/status", auth=HTTPDigestAuth("admin", "digest pw"), timeout=5).ok
    assert requests.get(f"{app.url}/api/status", auth=("admin", "digest pw"), timeout=5).ok  # Basic still works
    for _ in range(3):  # wrong digests count in the failure limit
        wrong = requests.get(f"{app.url}/api/status", auth=HTTPDigestAuth("admin", "guess"), timeout=5)
        assert wrong.status_code == 401
    assert requests.get(f"{app.url}/api/status", auth=HTTPDigestAuth("admin", "digest pw"), timeout=5) \
        .status_code == 429


def test_a_digest_is_checked_against_its_nonce_uri_realm_and_age() -> None:
    from appliance.web.security import DigestLogin

    now = [1_800_000_000.0]
    login = DigestLogin("admin", "pw", "Camera appliance", clock=lambda: now[0])
    nonce = login.challenge().split('nonce="')[1].split('"')[0]

    def answer(password: str = "pw", uri: str = "/snapshot.jpg", nonce: str = nonce) -> dict[str, str]:
        import hashlib

        ha1 = hashlib.md5(f"admin:Camera appliance:{password}".encode()).hexdigest()
        ha2 = hashlib.md5(f"GET:{uri}".encode()).hexdigest()
        response = hashlib.md5(f"{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}".encode()).hexdigest()
        return {"username": "admin", "realm": "Camera appliance", "nonce": nonce, "uri": uri, "qop": "auth",
                "nc": "00000001", "cnonce": "c0ffee", "response": response}

    assert login.check(answer(), "GET", "/snapshot.jpg") == "ok"
    assert login.check(answer(password="guess"), "GET", "/snapshot.jpg") == "wrong"
    assert login.check(answer(uri="/api/status"), "GET", "/snapshot.jpg") == "wrong"  # signed for another path
    assert login.check(answer(nonce="1800000000.forged"), "GET", "/snapshot.jpg") == "wrong"
    now[0] += 301
    assert login.check(answer(), "GET", "/snapshot.jpg") == "stale"
    assert "stale=true" in login.challenge(stale=True)
