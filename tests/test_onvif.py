"""ONVIF's device and media services, against the real server on loopback.

The client is Home Assistant's own ONVIF library (``onvif-zeep-async``, zeep with the ONVIF WSDLs)
and ffprobe opens the stream address it is given; hostile requests are hand-made SOAP sent raw.
The unmarked tests at the top need no RTSP server: the token rules and the configuration's rules.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from appliance.config import ConfigError
from appliance.onvif.soap import BadRequest, parse
from appliance.onvif.wsse import TokenCheck
from appliance.passwords import PasswordCheck, hash_password
from appliance.runtime import Appliance
from appliance.web.security import FailureLimiter

USER, PASSWORD = "admin", "correct horse"
SOAP = "application/soap+xml; charset=utf-8"
DIGEST_TYPE = ("http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
               "#PasswordDigest")


def signed(operation: str, password: str = PASSWORD, created: float | None = None, nonce: bytes | None = None,
           user: str = USER) -> bytes:
    """A SOAP call of ``operation`` (an element of the device service), signed as clients sign."""
    nonce = os.urandom(16) if nonce is None else nonce
    stamp = datetime.datetime.fromtimestamp(time.time() if created is None else created, datetime.UTC)
    created_text = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = base64.b64encode(hashlib.sha1(nonce + created_text.encode() + password.encode()).digest()).decode()
    return (
        '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Header>'
        '<Security xmlns="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd">'
        f"<UsernameToken><Username>{user}</Username><Password Type=\"{DIGEST_TYPE}\">{digest}</Password>"
        f"<Nonce>{base64.b64encode(nonce).decode()}</Nonce>"
        '<Created xmlns="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd">'
        f"{created_text}</Created></UsernameToken></Security></s:Header><s:Body>"
        f'<{operation} xmlns="http://www.onvif.org/ver10/device/wsdl"/></s:Body></s:Envelope>').encode()


def token_check(clock: Any = time.time, max_failures: int = 50) -> TokenCheck:
    return TokenCheck(USER, PasswordCheck(USER, password=PASSWORD), PASSWORD, FailureLimiter(max_failures),
                      clock=clock)


def test_a_digest_is_good_once_within_its_window_and_never_again() -> None:
    check = token_check()
    call = parse(signed("GetDeviceInformation"))
    assert check.check(call.header, "10.0.0.2") is None
    assert "used before" in (check.check(call.header, "10.0.0.2") or "")  # the same call, replayed
    assert "wrong user or password" in (check.check(parse(signed("GetScopes", password="guess")).header, "10.0.0.2")
                                        or "")
    assert "wrong user or password" in (check.check(parse(signed("GetScopes", user="root")).header, "10.0.0.2")
                                        or "")
    stale = parse(signed("GetScopes", created=time.time() - 600)).header
    assert "not within 300 s" in (check.check(stale, "10.0.0.2") or "")
    ahead = parse(signed("GetScopes", created=time.time() + 600)).header
    assert "not within 300 s" in (check.check(ahead, "10.0.0.2") or "")
    bare = parse(b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
                 b'<GetScopes xmlns="http://www.onvif.org/ver10/device/wsdl"/></s:Body></s:Envelope>')
    assert "needs a WS-Security UsernameToken" in (check.check(bare.header, "10.0.0.2") or "")


def test_refusals_count_in_the_shared_failure_limit() -> None:
    check = token_check(max_failures=3)
    for _ in range(3):
        assert check.check(parse(signed("GetScopes", password="guess")).header, "10.0.0.3") is not None
    # Over the limit, even the right password is refused from that address, and only from it.
    assert "too many failed logins" in (check.check(parse(signed("GetScopes")).header, "10.0.0.3") or "")
    assert check.check(parse(signed("GetScopes")).header, "10.0.0.4") is None


def test_remembered_nonces_are_bounded_and_forgotten_after_their_window() -> None:
    now = [1_800_000_000.0]
    check = TokenCheck(USER, PasswordCheck(USER, password=PASSWORD), PASSWORD, FailureLimiter(50),
                       clock=lambda: now[0], max_nonces=100)
    for _ in range(300):
        assert check.check(parse(signed("GetScopes", created=now[0])).header, "10.0.0.5") is None
    assert len(check._nonces) == 100
    now[0] += 700  # past twice the window: all of them forgotten at the next call
    assert check.check(parse(signed("GetScopes", created=now[0])).header, "10.0.0.5") is None
    assert len(check._nonces) == 1


@pytest.mark.parametrize(("body", "says"), [
    (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
     b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>&lol2;</s:Body></s:Envelope>', "DTD"),
    (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
     b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>&xxe;</s:Body></s:Envelope>', "DTD"),
    (b"<not xml", "not well-formed"),
    (b"<Envelope/>", "not a SOAP 1.2 envelope"),
    (b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body/></s:Envelope>', "no Body"),
])
def test_hostile_or_broken_bodies_are_refused_before_anything_reads_them(body: bytes, says: str) -> None:
    with pytest.raises(BadRequest, match=says):
        parse(body)


@pytest.mark.parametrize(("sections", "says"), [
    ({"onvif": {"enabled": True}}, "onvif.enabled needs rtsp.enabled"),
    ({"onvif": {"enabled": True}, "rtsp": {"enabled": True}}, "needs the login"),
    ({"onvif": {"enabled": True}, "rtsp": {"enabled": True},
      "server": {"auth": {"username": "admin", "password_hash": hash_password("pw")}}},
     "needs server.auth.password_file"),
])
def test_onvif_without_rtsp_or_a_usable_login_stops_start_up_saying_why(tmp_path: Path, sections: dict[str, Any],
                                                                         says: str) -> None:
    from appliance.config import load_config

    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(sections))
    with pytest.raises(ConfigError, match=says):
        load_config(path, environ={})


# --- over the real server (ONVIF needs RTSP running) ------------------------------------------------


def start_onvif(start_appliance: Any, tmp_path: Path, **sections: Any) -> Appliance:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    app = start_appliance(rtsp={"enabled": True, "port": 0, "size": "256x144"},
                          onvif={"enabled": True, "discovery_port": 0},
                          server={"auth": {"username": USER, "password_file": str(secret), "max_failures": 20}},
                          **sections)
    assert app.onvif is not None, app.onvif_reason
    app.controller.on()
    return app


def call(app: Appliance, body: bytes, service: str = "device_service", **headers: str) -> requests.Response:
    return requests.post(f"{app.url}/onvif/{service}", data=body, headers={"Content-Type": SOAP, **headers},
                         timeout=10)


@pytest.mark.rtsp
def test_home_assistants_onvif_library_reads_the_camera_and_ffprobe_opens_its_stream(start_appliance: Any,
                                                                                     tmp_path: Path) -> None:
    from onvif import ONVIFCamera

    app = start_onvif(start_appliance, tmp_path)

    async def read() -> dict[str, Any]:
        camera = ONVIFCamera("127.0.0.1", app.server.port, USER, PASSWORD, adjust_time=True)
        try:
            await camera.update_xaddrs()
            device = await camera.create_devicemgmt_service()
            media = await camera.create_media_service()
            profiles = await media.GetProfiles()
            request = media.create_type("GetStreamUri")
            request.ProfileToken = profiles[0].token
            request.StreamSetup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
            return {"info": await device.GetDeviceInformation(), "nics": await device.GetNetworkInterfaces(),
                    "scopes": await device.GetScopes(), "profiles": profiles,
                    "stream": (await media.GetStreamUri(request)).Uri,
                    "snapshot": await camera.get_snapshot_uri(profiles[0].token),
                    "capabilities": await media.GetServiceCapabilities()}
        finally:
            await camera.close()

    seen = asyncio.run(read())
    assert seen["info"].Manufacturer == "Camera appliance" and len(seen["info"].SerialNumber) == 12
    assert seen["nics"][0].Enabled and len(seen["nics"][0].Info.HwAddress.split(":")) == 6
    assert any(scope.ScopeItem == "onvif://www.onvif.org/Profile/Streaming" for scope in seen["scopes"])
    encoder = seen["profiles"][0].VideoEncoderConfiguration
    assert encoder.Encoding == "H264" and (encoder.Resolution.Width, encoder.Resolution.Height) == (256, 144)
    assert encoder.RateControl.FrameRateLimit == 15 and encoder.RateControl.BitrateLimit == 1500
    assert seen["capabilities"].SnapshotUri is True
    assert app.rtsp is not None
    assert seen["stream"] == f"rtsp://127.0.0.1:{app.rtsp.server.port}/live"
    # What a client does with them: the stream with the login, the snapshot with Basic.
    address = seen["stream"].replace("rtsp://", f"rtsp://{USER}:{PASSWORD.replace(' ', '%20')}@")
    probed = subprocess.run(["ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-show_entries",
                             "stream=codec_name,width,height", "-of", "json", address],
                            capture_output=True, text=True, timeout=30)
    assert probed.returncode == 0, probed.stderr
    assert json.loads(probed.stdout)["streams"][0] == {"codec_name": "h264", "width": 256, "height": 144}
    snapshot = requests.get(seen["snapshot"], auth=(USER, PASSWORD), timeout=10)
    assert snapshot.status_code == 200 and snapshot.content[:2] == b"\xff\xd8"
    # The serial number is the machine's: the same after a restart.
    assert app.onvif is not None and app.onvif.facts is not None
    assert app.onvif.facts.serial == seen["info"].SerialNumber


@pytest.mark.rtsp
def test_the_login_rules_hold_over_http(start_appliance: Any, tmp_path: Path) -> None:
    app = start_onvif(start_appliance, tmp_path)
    bare = (b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
            b'<GetSystemDateAndTime xmlns="http://www.onvif.org/ver10/device/wsdl"/></s:Body></s:Envelope>')
    assert call(app, bare).status_code == 200  # clients read the clock before they sign anything
    info = bare.replace(b"GetSystemDateAndTime", b"GetDeviceInformation")
    refused = call(app, info)
    assert refused.status_code == 400 and b"ter:NotAuthorized" in refused.content
    good = signed("GetDeviceInformation")
    assert call(app, good).status_code == 200
    replayed = call(app, good)
    assert replayed.status_code == 400 and b"used before" in replayed.content
    stale = call(app, signed("GetDeviceInformation", created=time.time() - 3600))
    assert stale.status_code == 400 and b"not within" in stale.content
    unknown = call(app, signed("GetGeoLocation"))
    assert unknown.status_code == 400 and b"ter:ActionNotSupported" in unknown.content
    reboot = call(app, signed("SystemReboot"))
    assert b"ter:ActionNotSupported" in reboot.content and b"configuration file" in reboot.content
    # The HTTP login does not apply to ONVIF's calls, and ONVIF's do not open the rest.
    assert requests.get(f"{app.url}/api/status", timeout=5).status_code == 401
    # A browser page of another site cannot post to it.
    cross = call(app, good, **{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Origin": "http://evil"})
    assert cross.status_code == 403


def process_figures() -> tuple[int, int, int]:
    """(resident KiB, threads, open files) of this process, which runs the appliance."""
    status = Path("/proc/self/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["Threads"]), len(os.listdir("/proc/self/fd"))


@pytest.mark.rtsp
def test_hostile_requests_are_refused_and_the_camera_keeps_streaming(start_appliance: Any, tmp_path: Path) -> None:
    app = start_onvif(start_appliance, tmp_path)
    laughs = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
              + b"".join(f'<!ENTITY lol{n} "{("&lol" + str(n - 1) + ";") * 10 if n > 1 else "&lol;" * 10}">'.encode()
                         for n in range(1, 10))
              + b']><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>&lol9;</s:Body>'
                b"</s:Envelope>")
    external = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
                b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>&xxe;</s:Body></s:Envelope>')
    stop = threading.Event()
    frames: list[int] = []

    def watch() -> None:  # a viewer all along: the camera keeps streaming
        with requests.get(f"{app.url}/stream.mjpg", auth=(USER, PASSWORD), stream=True, timeout=10) as response:
            for chunk in response.iter_content(65536):
                frames.append(len(chunk))
                if stop.is_set():
                    return

    viewer = threading.Thread(target=watch)
    viewer.start()
    huge = b"x" * 10_000_000  # made once: this process is the client as well as the appliance
    for body in (laughs, external, huge):  # warm-up: the first of each costs what a first call costs
        call(app, body)
    before = process_figures()
    try:
        for _ in range(50):
            for body in (laughs, external):
                answer = call(app, body)
                assert answer.status_code == 400 and b"DTD" in answer.content
            assert call(app, huge).status_code == 413  # refused from its length, before a byte is read
        after = process_figures()
        count = len(frames)
        assert app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + 10, timeout=10)
    finally:
        stop.set()
        viewer.join(10)
    assert len(frames) > count or count > 50  # the stream went on throughout
    assert after[0] - before[0] < 10_000, (before, after)  # KiB: no entity was ever expanded
    assert after[1] <= before[1] and after[2] <= before[2] + 2, (before, after)
    assert app.onvif is not None and app.onvif.refused >= 100


@pytest.mark.rtsp
def test_the_status_reports_onvif(start_appliance: Any, tmp_path: Path) -> None:
    app = start_onvif(start_appliance, tmp_path)
    call(app, signed("GetDeviceInformation"))
    status = requests.get(f"{app.url}/api/status", auth=(USER, PASSWORD), timeout=5).json()["onvif"]
    assert app.discovery is not None
    assert status == {"enabled": True, "calls": 1, "refused": 0, "subscriptions": 0, "max_subscriptions": 4,
                      "pushes": 0, "pushes_dropped": 0,
                      "discovery": {"port": app.discovery.port, "answered": 0, "ignored": 0}, "discovery_off": None}


def test_onvif_is_off_with_the_reason_when_rtsp_cannot_run(start_appliance: Any, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance.rtsp import service as rtsp_service

    monkeypatch.setattr(rtsp_service, "build", lambda *args: (None, "GStreamer's RTSP server is not available"))
    secret = tmp_path / "password"
    secret.write_text(PASSWORD)
    app = start_appliance(rtsp={"enabled": True, "port": 0}, onvif={"enabled": True},
                          server={"auth": {"username": USER, "password_file": str(secret)}})
    assert app.onvif is None and "GStreamer" in (app.onvif_reason or "")
    answer = requests.post(f"{app.url}/onvif/device_service", data=signed("GetDeviceInformation"),
                           headers={"Content-Type": SOAP}, timeout=5)
    assert answer.status_code == 404 and "ONVIF is off" in answer.json()["error"]


NPM_ONVIF = "0.8.3"  # the version UniFi Protect's third-party camera support was measured with (FIELD-NOTES)


def npm_onvif() -> Path:
    """The npm ``onvif`` library's node_modules, installed once into the tests' cache."""
    from tests.helpers import CACHE, require_tool

    npm = require_tool("npm")
    require_tool("node")
    prefix = CACHE / f"npm-onvif-{NPM_ONVIF}"
    if not (prefix / "node_modules" / "onvif" / "package.json").exists():
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(prefix),
                        f"onvif@{NPM_ONVIF}"], check=True, timeout=300, capture_output=True)
    return prefix / "node_modules"


@pytest.mark.rtsp
def test_the_npm_onvif_library_unifi_uses_reads_the_camera_and_ffprobe_opens_the_stream(start_appliance: Any,
                                                                                       tmp_path: Path) -> None:
    modules = npm_onvif()
    app = start_onvif(start_appliance, tmp_path)
    result = subprocess.run(["node", str(Path(__file__).with_name("onvif_npm_client.js"))],
                            input=json.dumps({"hostname": "127.0.0.1", "port": app.server.port, "username": USER,
                                              "password": PASSWORD}),
                            capture_output=True, text=True, timeout=60, env={**os.environ, "NODE_PATH": str(modules)})
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    seen = json.loads(result.stdout)
    assert seen["info"]["manufacturer"] == "Camera appliance" and len(seen["info"]["serialNumber"]) == 12
    assert seen["profiles"] == [{"token": "main", "encoding": "H264", "width": 256, "height": 144, "fps": 15,
                                 "bitrate": 1500}]
    assert app.rtsp is not None and seen["stream"] == f"rtsp://127.0.0.1:{app.rtsp.server.port}/live"
    assert seen["snapshot"] == f"{app.url}/snapshot.jpg"
    address = seen["stream"].replace("rtsp://", f"rtsp://{USER}:{PASSWORD.replace(' ', '%20')}@")
    probed = subprocess.run(["ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-show_entries",
                             "stream=codec_name", "-of", "json", address], capture_output=True, text=True, timeout=30)
    assert probed.returncode == 0 and json.loads(probed.stdout)["streams"][0]["codec_name"] == "h264", probed.stderr


def create_subscription(app: Appliance) -> requests.Response:
    body = signed("CreatePullPointSubscription").replace(b"http://www.onvif.org/ver10/device/wsdl",
                                                          b"http://www.onvif.org/ver10/events/wsdl")
    return call(app, body, service="events_service")


@pytest.mark.rtsp
def test_a_thousand_subscriptions_are_bounded_and_cost_nothing_that_stays(start_appliance: Any,
                                                                         tmp_path: Path) -> None:
    app = start_onvif(start_appliance, tmp_path)
    assert app.onvif is not None
    created = [create_subscription(app) for _ in range(4)]
    assert all(answer.status_code == 200 and b"/onvif/pullpoint/" in answer.content for answer in created)
    before = process_figures()
    for _ in range(1000):
        answer = create_subscription(app)
        assert answer.status_code == 400 and b"at most 4 event subscriptions" in answer.content
    after = process_figures()
    assert app.onvif.events.subscriptions == 4 and app.onvif.events.refused == 1000
    assert after[0] - before[0] < 10_000 and after[1] <= before[1] and after[2] <= before[2] + 2, (before, after)
    # One ended by its client makes room for another.
    address = created[0].content.split(b"/onvif/pullpoint/")[1].split(b"<")[0].decode()
    unsubscribe = signed("Unsubscribe").replace(b"http://www.onvif.org/ver10/device/wsdl",
                                                b"http://docs.oasis-open.org/wsn/b-2")
    assert call(app, unsubscribe, service=f"pullpoint/{address}").status_code == 200
    assert create_subscription(app).status_code == 200


def test_subscriptions_end_unless_renewed_and_a_pull_waits_for_motion() -> None:
    from appliance.motion.events import EventChange, MotionEvent
    from appliance.onvif.events import MotionEvents

    now = [1_800_000_000.0]
    events = MotionEvents(2, motion_now=lambda: False, clock=lambda: now[0])
    first = events.create("PT60S")
    assert [note.operation for note in events.pull(first.id, "PT0S", 10) or []] == ["Initialized"]
    done: list[list[Any] | None] = []
    waiter = threading.Thread(target=lambda: done.append(events.pull(first.id, "PT10S", 10)))
    waiter.start()
    events.on_motion(EventChange("start", MotionEvent("e1", now[0])), None)
    waiter.join(5)
    assert done and [note.motion for note in done[0] or []] == [True]  # at once, not after 10 s
    assert events.renew(first.id, "PT120S") is not None
    now[0] += 100  # past its first termination, within the renewed one
    assert events.get(first.id) is not None
    now[0] += 30  # past the renewed one: forgotten at the next call
    assert events.get(first.id) is None and events.pull(first.id, "PT0S", 10) is None
    assert events.renew(first.id, "PT60S") is None


# --- WS-Discovery -------------------------------------------------------------------------------------


def probe_with_wsdiscovery(port: int, scopes: list[str], host: str = "127.0.0.1",
                           timeout: float = 3.0) -> list[Any]:
    """A Probe made by PyPI's WSDiscovery (Home Assistant's), sent to ``host``; the ProbeMatches its
    parser reads from the answers. (Its own unicast search never reads the answers: the socket it
    sends from is not among those it listens on, so the test sends and receives for it.)"""
    import socket

    from wsdiscovery import QName, Scope
    from wsdiscovery.actions.probe import constructProbe, createProbeMessage
    from wsdiscovery.message import parseSOAPMessage

    envelope = constructProbe([QName("http://www.onvif.org/ver10/network/wsdl", "NetworkVideoTransmitter")],
                              [Scope(scope) for scope in scopes])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(createProbeMessage(envelope).encode(), (host, port))
        try:
            data, sender = sock.recvfrom(65536)
        except TimeoutError:
            return []
    answer = parseSOAPMessage(data, sender[0])
    assert answer.getRelatesTo() == envelope.getMessageId()
    return list(answer.getProbeResolveMatches())


@pytest.mark.rtsp
def test_a_probe_to_the_cameras_address_finds_it_with_the_streaming_scope(start_appliance: Any,
                                                                         tmp_path: Path) -> None:
    app = start_onvif(start_appliance, tmp_path, name="Garden camera")
    assert app.discovery is not None
    matches = probe_with_wsdiscovery(app.discovery.port, ["onvif://www.onvif.org/Profile/Streaming"])
    assert len(matches) == 1
    match = matches[0]
    assert [f"{t.getNamespace()}:{t.getLocalname()}" for t in match.getTypes()] == [
        "http://www.onvif.org/ver10/network/wsdl:NetworkVideoTransmitter",
        "http://www.onvif.org/ver10/device/wsdl:Device"]
    scopes = [str(scope) for scope in match.getScopes()]
    assert "onvif://www.onvif.org/Profile/Streaming" in scopes
    assert "onvif://www.onvif.org/name/Garden camera" in scopes  # sent as Garden%20camera; WSDiscovery decodes
    assert match.getXAddrs() == [f"http://127.0.0.1:{app.server.port}/onvif/device_service"]
    assert match.getEPR().startswith("urn:uuid:")
    # Another kind of device, or scopes that are not ours: no answer.
    assert probe_with_wsdiscovery(app.discovery.port, ["onvif://www.onvif.org/name/Front_door"], timeout=0.5) == []
    # Hostile datagrams are ignored and the next Probe is answered.
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram in (b"x" * 9000, b"<not xml", b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>'):
            sock.sendto(datagram, ("127.0.0.1", app.discovery.port))
    assert len(probe_with_wsdiscovery(app.discovery.port, ["onvif://www.onvif.org/Profile/Streaming"])) == 1
    assert app.discovery.ignored >= 4 and app.discovery.answered == 2
    status = requests.get(f"{app.url}/api/status", auth=(USER, PASSWORD), timeout=5).json()["onvif"]
    assert status["discovery"]["port"] == app.discovery.port


def test_answers_are_bounded_in_rate_in_all_and_per_sender() -> None:
    from appliance.onvif.discovery import RateLimit

    now = [100.0]
    limit = RateLimit(per_second=5, per_sender=2, clock=lambda: now[0])
    assert [limit.allows("10.0.0.9") for _ in range(4)] == [True, True, False, False]
    assert [limit.allows(f"10.0.0.{n}") for n in range(10, 16)] == [True, True, True, False, False, False]
    now[0] += 1.0
    assert limit.allows("10.0.0.9")


NETNS_PROBE = """
import json, subprocess, sys
# A LAN of one: a veth pair (WSDiscovery sends its multicast from every address but loopback's).
for command in (["ip", "link", "set", "lo", "up"],
                ["ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan1"],
                ["ip", "addr", "add", "10.99.0.1/24", "dev", "lan0"], ["ip", "link", "set", "lan1", "up"],
                ["ip", "link", "set", "lan0", "up"], ["ip", "route", "add", "224.0.0.0/4", "dev", "lan0"]):
    subprocess.run(command, check=True)
from appliance.onvif.discovery import DiscoveryResponder
from wsdiscovery import QName, Scope
from wsdiscovery.discovery import ThreadedWSDiscovery
heard = []
client = ThreadedWSDiscovery()
client.start()
client.setRemoteServiceHelloCallback(lambda service: heard.append(service.getEPR()))
responder = DiscoveryResponder("urn:uuid:00000000-0000-0000-0000-00000000cafe",
                               ["onvif://www.onvif.org/Profile/Streaming", "onvif://www.onvif.org/name/Garden"], 8000)
responder.start()  # the product's port, 3702, in this namespace of its own
found = client.searchServices(scopes=[Scope("onvif://www.onvif.org/Profile/Streaming")], timeout=3)
client.stop()
responder.stop()
print(json.dumps({"found": [[s.getEPR(), s.getXAddrs()] for s in found], "hello": heard,
                  "answered": responder.answered}))
"""


@pytest.mark.root
def test_a_multicast_probe_finds_the_camera_in_a_network_of_its_own() -> None:
    """Home Assistant's way: WSDiscovery multicasts a Probe to 239.255.255.250:3702 and listens. In a
    network namespace the test makes (only loopback, with multicast), so port 3702 is the product's."""
    from tests.helpers import require_tool

    require_tool("unshare")
    result = subprocess.run(["unshare", "--net", sys.executable, "-c", NETNS_PROBE], capture_output=True, text=True,
                            timeout=60, cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["found"] == [["urn:uuid:00000000-0000-0000-0000-00000000cafe",
                              ["http://10.99.0.1:8000/onvif/device_service"]]], seen
    assert seen["hello"] == ["urn:uuid:00000000-0000-0000-0000-00000000cafe"] and seen["answered"] >= 1


# --- Subscribe: motion pushed to the subscriber (Home Assistant's webhook) -------------------------------


class SoapReceiver:
    """An HTTP server on loopback keeping every body posted to it, as Home Assistant's webhook does."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.bodies: queue.Queue[tuple[str, bytes]] = queue.Queue()
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.put((self.path, self.rfile.read(int(self.headers.get("Content-Length", 0)))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/webhook/onvif_test"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.rtsp
def test_a_subscriber_gets_motion_pushed_to_its_own_address_and_nowhere_else(start_appliance: Any,
                                                                            tmp_path: Path) -> None:
    from onvif import ONVIFCamera

    app = start_onvif(start_appliance, tmp_path, camera={"synthetic": {"objects": 2, "motion_period": 6,
                                                                       "motion_duration": 2}},
                      motion={"warmup_frames": 5, "event_gap": 1.0})
    receiver = SoapReceiver()

    async def subscribe_and_read() -> list[tuple[str, str]]:
        camera = ONVIFCamera("127.0.0.1", app.server.port, USER, PASSWORD, adjust_time=True)
        try:
            await camera.update_xaddrs()
            manager = await camera.create_notification_manager(
                address=receiver.url, interval=datetime.timedelta(minutes=10), subscription_lost_callback=lambda: None)
            await manager.set_synchronization_point()
            seen: list[tuple[str, str]] = []
            while not ("true" in seen_values(seen) and "false" in seen_values(seen)[1:]):
                path, body = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: receiver.bodies.get(timeout=20))
                assert path == "/api/webhook/onvif_test"
                result = manager.process(body)  # Home Assistant's own parsing of a notification
                for message in result.NotificationMessage:
                    seen.append((message.Topic._value_1, message.Message._value_1.Data.SimpleItem[0].Value))
            await manager.shutdown()
            return seen
        finally:
            await camera.close()

    def seen_values(seen: list[tuple[str, str]]) -> list[str]:
        return [value for _, value in seen]

    try:
        seen = asyncio.run(subscribe_and_read())
    finally:
        receiver.close()
    assert {topic for topic, _ in seen} == {"tns1:RuleEngine/CellMotionDetector/Motion"}
    # A consumer on another host is refused: the camera posts only to whoever subscribes.
    body = signed("Subscribe").replace(
        b'<Subscribe xmlns="http://www.onvif.org/ver10/device/wsdl"/>',
        b'<Subscribe xmlns="http://docs.oasis-open.org/wsn/b-2"><ConsumerReference><Address '
        b'xmlns="http://www.w3.org/2005/08/addressing">http://10.1.2.3:8123/api/webhook/x</Address>'
        b"</ConsumerReference></Subscribe>")
    refused = call(app, body, service="events_service")
    assert refused.status_code == 400 and b"only to the host that subscribes" in refused.content
    assert app.onvif is not None and app.onvif.pushes.subscriptions == 0  # the manager unsubscribed


def test_a_consumer_must_be_the_subscriber() -> None:
    from appliance.onvif.notify import RefusedConsumer, consumer_of

    assert consumer_of("http://127.0.0.1:8123/api/webhook/x", "127.0.0.1") == ("127.0.0.1", 8123)
    assert consumer_of("http://localhost:8123/hook", "127.0.0.1") == ("127.0.0.1", 8123)  # a name resolving to it
    for url in ("http://192.168.1.1/admin", "https://127.0.0.1/hook", "file:///etc/passwd", "http://127.0.0.1:x/"):
        with pytest.raises(RefusedConsumer):
            consumer_of(url, "127.0.0.1")


@pytest.mark.rtsp
def test_every_operation_offered_is_read_by_home_assistants_library(start_appliance: Any, tmp_path: Path) -> None:
    """Each read operation docs/onvif.md lists, called through zeep and the ONVIF WSDLs: an answer
    that does not fit the schema would be an error here."""
    from onvif import ONVIFCamera

    app = start_onvif(start_appliance, tmp_path)
    calls = {"device": ["GetSystemDateAndTime", "GetCapabilities", ("GetServices", {"IncludeCapability": False}),
                        "GetServiceCapabilities",
                        "GetDeviceInformation", "GetNetworkInterfaces", "GetScopes", "GetHostname"],
             "media": ["GetProfiles", "GetServiceCapabilities", "GetVideoSources", "GetVideoSourceConfigurations",
                       "GetVideoEncoderConfigurations", "GetVideoEncoderConfigurationOptions",
                       "GetVideoSourceConfigurationOptions", "GetAudioSources", "GetAudioEncoderConfigurations",
                       ("GetProfile", {"ProfileToken": "main"}),
                       ("GetCompatibleVideoEncoderConfigurations", {"ProfileToken": "main"}),
                       ("GetVideoSourceConfiguration", {"ConfigurationToken": "camera_config"}),
                       ("GetVideoEncoderConfiguration", {"ConfigurationToken": "h264"})],
             "events": ["GetEventProperties", "GetServiceCapabilities"]}

    async def read() -> dict[str, Any]:
        camera = ONVIFCamera("127.0.0.1", app.server.port, USER, PASSWORD, adjust_time=True)
        answers: dict[str, Any] = {}
        try:
            await camera.update_xaddrs()
            services = {"device": await camera.create_devicemgmt_service(),
                        "media": await camera.create_media_service(),
                        "events": await camera.create_events_service()}
            for name, operations in calls.items():
                for operation in operations:
                    op, args = operation if isinstance(operation, tuple) else (operation, None)
                    method = getattr(services[name], op)
                    answers[f"{name}.{op}"] = await method(args) if args else await method()
        finally:
            await camera.close()
        return answers

    answers = asyncio.run(read())
    assert len(answers) == sum(len(operations) for operations in calls.values())
    assert answers["media.GetProfile"].VideoEncoderConfiguration.H264.GovLength == 15
    assert answers["media.GetVideoSources"][0].Resolution.Width == 320
    assert answers["media.GetAudioSources"] == []
    assert answers["events.GetServiceCapabilities"].WSPullPointSupport is True
    assert answers["device.GetSystemDateAndTime"].DateTimeType == "NTP"
