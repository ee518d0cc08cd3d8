"""The H.264 stream over RTSP, against the real server on loopback with ffprobe and ffmpeg as clients.

The appliance runs in-process (GStreamer's RTSP server on its ``rtsp`` thread, a free port);
ffprobe and ffmpeg are the clients NVRs and Home Assistant's stream build on. The unmarked tests at
the end need neither GStreamer nor ffmpeg: the encoder, the feed's rules and RTSP switched off with
its reason when a library is missing.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from appliance.capture.video import VideoFrame
from appliance.config import OverlaySettings, RtspSettings
from appliance.passwords import hash_password
from appliance.rtsp import service as rtsp_service
from appliance.rtsp.feed import H264Feed
from appliance.rtsp.h264 import EncoderUnavailable, H264Encoder, choose_codec
from appliance.runtime import Appliance
from tests.helpers import iter_mjpeg, make_config

Start = Callable[..., Appliance]
USER, PASSWORD = "admin", "correct horse"
FPS = 10  # the H.264 rate the tests ask for: half the test camera's 20, so thinning is tested too


def rtsp_section(**extra: Any) -> dict[str, Any]:
    return {"enabled": True, "port": 0, "size": "256x144", "fps": FPS, "keyframe_interval": 1.0, **extra}


def start_rtsp(start: Start, login: bool = True, rtsp: dict[str, Any] | None = None, **sections: Any) -> Appliance:
    server: dict[str, Any] = {"auth": {"username": USER, "password_hash": hash_password(PASSWORD),
                                       "max_failures": 50}} if login else {}
    app = start(rtsp=rtsp_section(**(rtsp or {})), server=server, **sections)
    assert app.rtsp is not None, app.rtsp_reason
    app.controller.on()
    return app


def url(app: Appliance, login: str | None = f"{USER}:{PASSWORD}") -> str:
    assert app.rtsp is not None
    who = f"{login}@" if login else ""
    return f"rtsp://{who}127.0.0.1:{app.rtsp.server.port}{app.config.rtsp.path}"


def probe_frames(address: str, transport: str, frames: int = 20, timeout: float = 30) -> dict[str, Any]:
    """ffprobe's view of the stream and of its first ``frames`` frames (their presentation times)."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-rtsp_transport", transport, "-select_streams", "v",
         "-show_entries", "stream=codec_name,profile,width,height,has_b_frames:frame=pts_time,key_frame",
         "-read_intervals", f"%+#{frames}", "-of", "json", address],
        capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def rate(frames: list[dict[str, Any]]) -> float:
    times = [float(frame["pts_time"]) for frame in frames if frame.get("pts_time") not in (None, "N/A")]
    return (len(times) - 1) / (times[-1] - times[0])


def ffmpeg_reader(address: str, transport: str, frames: int | None = None) -> subprocess.Popen[str]:
    """An ffmpeg that decodes the stream (``frames`` of it, or until the server ends it)."""
    limit = ["-frames:v", str(frames)] if frames else []
    return subprocess.Popen(["ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", transport, "-i", address,
                             *limit, "-f", "null", "-"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def refused(address: str) -> str:
    """ffprobe's error for an address the server refuses; fails if it was served."""
    result = subprocess.run(["ffprobe", "-v", "error", "-rtsp_transport", "tcp", address],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode != 0, "the stream was served"
    return result.stderr


def sessions(app: Appliance, check: Callable[[int], bool], timeout: float = 15) -> bool:
    assert app.rtsp is not None
    return app.rtsp.server.wait_for(lambda stats: check(stats.sessions), timeout)


def rtsp_status(app: Appliance) -> dict[str, Any]:
    return requests.get(f"{app.url}/api/status", auth=(USER, PASSWORD), timeout=5).json()["rtsp"]


# --- over the real server -----------------------------------------------------------------------


@pytest.mark.rtsp
def test_ffprobe_and_ffmpeg_read_h264_at_the_configured_size_and_rate_over_tcp_and_udp(start_appliance: Start) -> None:
    app = start_rtsp(start_appliance)
    for transport in ("tcp", "udp"):
        seen = probe_frames(url(app), transport)
        stream = seen["streams"][0]
        assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 256, 144)
        assert stream["has_b_frames"] == 0
        assert seen["frames"][0]["key_frame"] == 1  # a client's picture starts at once
        assert abs(rate(seen["frames"]) - FPS) < 1.5, seen["frames"]
    reader = ffmpeg_reader(url(app), "udp", frames=15)
    assert reader.wait(30) == 0, reader.stderr.read() if reader.stderr else ""
    status = rtsp_status(app)
    assert status["enabled"] and status["encoder"] == "libx264" and status["frames_encoded"] > 0
    assert status["bitrate"] > 0 and status["port"] == app.rtsp.server.port if app.rtsp else False


@pytest.mark.rtsp
def test_the_login_is_required_and_wrong_passwords_are_bounded(start_appliance: Start) -> None:
    app = start_appliance(rtsp=rtsp_section(), server={
        "auth": {"username": USER, "password_hash": hash_password(PASSWORD), "max_failures": 3}})
    app.controller.on()
    assert "401" in refused(url(app, login=None))
    assert "401" in refused(url(app, login=f"{USER}:wrong"))
    probe_frames(url(app), "tcp", frames=2)  # the right one works, under the limit
    assert "401" in refused(url(app, login=f"{USER}:wrong again"))
    assert "401" in refused(url(app, login=f"{USER}:and again"))
    # Three failures from this address within the minute: now even the right password is refused.
    assert "401" in refused(url(app))


@pytest.mark.rtsp
def test_digest_is_offered_when_the_password_itself_is_known(start_appliance: Start, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    app = start_appliance(rtsp=rtsp_section(), server={"auth": {"username": USER, "password_file": str(secret)}})
    app.controller.on()
    assert app.rtsp is not None
    with socket.create_connection(("127.0.0.1", app.rtsp.server.port), timeout=5) as sock:
        sock.sendall(f"DESCRIBE {url(app, login=None)} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode())
        answer = sock.recv(4096).decode()
    assert answer.startswith("RTSP/1.0 401")
    assert "WWW-Authenticate: Basic" in answer and "WWW-Authenticate: Digest" in answer, answer
    probe_frames(url(app), "tcp", frames=2)  # ffmpeg answers the Digest challenge


@pytest.mark.rtsp
def test_eight_rtsp_clients_and_eight_mjpeg_viewers_all_get_frames_from_one_encode(start_appliance: Start) -> None:
    app = start_rtsp(start_appliance, login=False)
    assert app.rtsp is not None
    got_mjpeg: list[int] = []

    def view() -> None:
        with requests.get(f"{app.url}/stream.mjpg", stream=True, timeout=20) as response:
            count = 0
            for _headers, _jpeg in iter_mjpeg(response):
                count += 1
                if count == 30:
                    break
            got_mjpeg.append(count)

    viewers = [threading.Thread(target=view) for _ in range(8)]
    before = app.rtsp.feed.frames_encoded
    started = time.monotonic()
    readers = [ffmpeg_reader(url(app, login=None), "tcp" if n % 2 else "udp", frames=30) for n in range(8)]
    for viewer in viewers:
        viewer.start()
    assert sessions(app, lambda n: n == 8), app.rtsp.server.stats()
    for reader in readers:
        assert reader.wait(60) == 0, reader.stderr.read() if reader.stderr else ""
    elapsed = time.monotonic() - started
    for viewer in viewers:
        viewer.join(30)
    assert got_mjpeg == [30] * 8
    # Every client got 30 frames from one encode at FPS: 8 encodes would be 8x as many.
    encoded = app.rtsp.feed.frames_encoded - before
    assert 30 <= encoded <= FPS * elapsed * 1.3 + 10, (encoded, elapsed)


@pytest.mark.rtsp
def test_more_clients_than_max_clients_get_503(start_appliance: Start) -> None:
    app = start_rtsp(start_appliance, login=False, rtsp={"max_clients": 2})
    readers = [ffmpeg_reader(url(app, login=None), "tcp") for _ in range(2)]
    try:
        assert sessions(app, lambda n: n == 2)
        assert "503" in refused(url(app, login=None))
    finally:
        for reader in readers:
            reader.terminate()
            reader.wait(10)


@pytest.mark.rtsp
def test_no_client_means_no_h264_encode(start_appliance: Start) -> None:
    app = start_rtsp(start_appliance, login=False)
    assert app.rtsp is not None
    feed = app.rtsp.feed
    captured = app.pipeline.stats().frames_captured
    assert app.pipeline.wait_for_frames(captured + 30, 10)
    assert (feed.frames_encoded, feed.active) == (0, False)
    assert rtsp_status(app)["encoding"] is False
    reader = ffmpeg_reader(url(app, login=None), "tcp", frames=10)
    assert reader.wait(30) == 0
    assert feed.frames_encoded >= 10
    # The last client gone, the shared media ends and so does the encode.
    assert feed.wait_for(lambda f: not f.active, 15)
    after = feed.frames_encoded
    captured = app.pipeline.stats().frames_captured
    assert app.pipeline.wait_for_frames(captured + 30, 10)
    assert feed.frames_encoded == after


@pytest.mark.rtsp
def test_the_camera_going_off_ends_sessions_and_coming_back_lets_clients_reconnect(start_appliance: Start) -> None:
    app = start_rtsp(start_appliance)
    readers = [ffmpeg_reader(url(app), transport) for transport in ("tcp", "udp")]
    assert sessions(app, lambda n: n == 2)
    app.controller.off()
    for reader in readers:
        reader.wait(15)  # ended by the server, not by a timeout of ours
        assert reader.returncode is not None
    assert sessions(app, lambda n: n == 0)
    started = time.monotonic()
    assert "503" in refused(url(app))  # an answer at once, not a client left hanging
    assert time.monotonic() - started < 5
    app.controller.on()
    probe_frames(url(app), "tcp", frames=5)


@pytest.mark.rtsp
def test_a_client_that_stops_reading_is_dropped_without_slowing_the_others(start_appliance: Start) -> None:
    app = start_rtsp(start_appliance, login=False, rtsp={"session_timeout": 3, "size": "640x360", "fps": 20,
                                                         "bitrate": 4_000_000},
                     camera={"size": "640x360", "synthetic": {"objects": 6, "motion_period": 1.0,
                                                              "motion_duration": 1.0}})
    assert app.rtsp is not None
    with socket.socket() as stalled:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", app.rtsp.server.port))
        stalled.settimeout(10)
        stall_and_watch(app, stalled)


def stall_and_watch(app: Appliance, stalled: socket.socket) -> None:
    assert app.rtsp is not None
    address = url(app, login=None)

    def request(text: str) -> str:
        stalled.sendall(text.encode())
        return stalled.recv(8192).decode(errors="replace")

    assert " 200 " in request(f"DESCRIBE {address} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n")
    setup = request(f"SETUP {address}/stream=0 RTSP/1.0\r\nCSeq: 2\r\n"
                    "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n")
    assert " 200 " in setup, setup
    session = next(line.split(":", 1)[1].split(";")[0].strip() for line in setup.splitlines()
                   if line.lower().startswith("session:"))
    stalled.sendall(f"PLAY {address} RTSP/1.0\r\nCSeq: 3\r\nSession: {session}\r\n\r\n".encode())
    # From here on it reads nothing. Another client still gets every frame at the full rate.
    seen = probe_frames(address, "tcp", frames=60)
    assert rate(seen["frames"]) > 20 * 0.85, rate(seen["frames"])
    # Nothing comes from it (no keep-alive, no RTCP): its session times out and the server drops it.
    # (The session times out after 3 s of silence; the bound is wide for a loaded machine.)
    assert sessions(app, lambda n: n == 0, timeout=45), app.rtsp.server.stats()
    assert app.rtsp.server.wait_for(lambda stats: stats.connections == 0, 15), app.rtsp.server.stats()


@pytest.mark.rtsp
def test_a_client_joining_a_running_stream_starts_at_once_not_at_the_next_keyframe(start_appliance: Start) -> None:
    app = start_rtsp(start_appliance, login=False, rtsp={"keyframe_interval": 10.0})
    first = ffmpeg_reader(url(app, login=None), "tcp")
    try:
        assert sessions(app, lambda n: n == 1)
        started = time.monotonic()
        seen = probe_frames(url(app, login=None), "tcp", frames=3)
        assert seen["frames"][0]["key_frame"] == 1
        assert time.monotonic() - started < 5  # the interval is 10 s: the join forced a keyframe
    finally:
        first.terminate()
        first.wait(10)


@pytest.mark.rtsp
def test_shutdown_ends_within_five_seconds_with_rtsp_clients_connected(tmp_path: Path) -> None:
    app = Appliance(make_config(tmp_path, rtsp=rtsp_section()))
    app.start()
    try:
        app.controller.on()
        readers = [ffmpeg_reader(url(app, login=None), transport) for transport in ("tcp", "udp", "tcp")]
        assert app.rtsp is not None
        assert app.rtsp.server.wait_for(lambda stats: stats.sessions == 3, 15)
    finally:
        started = time.monotonic()
        app.stop()
        stopped = time.monotonic() - started
    assert stopped < 5
    for reader in readers:
        reader.wait(15)
    assert not [thread.name for thread in threading.enumerate() if thread.name in ("rtsp", "h264-encoder")]


@pytest.mark.rtsp
def test_mjpeg_parts_carry_their_capture_time(start_appliance: Start) -> None:
    app = start_appliance()
    app.controller.on()
    with requests.get(f"{app.url}/stream.mjpg", stream=True, timeout=10) as response:
        headers, _ = next(iter_mjpeg(response))
    assert abs(time.time() - float(headers["x-timestamp"])) < 2


# --- without GStreamer or ffmpeg -----------------------------------------------------------------


def test_the_encoder_makes_h264_with_keyframes_on_time_and_on_request() -> None:
    settings = RtspSettings(enabled=True, fps=10, keyframe_interval=1.0, profile="baseline")
    encoder = H264Encoder(choose_codec("libx264"), (160, 96), settings)
    image = np.zeros((96, 160, 3), np.uint8)
    keys = []
    for n in range(25):
        image[:] = n * 8
        packets = encoder.encode(image, n * 9000, keyframe=n == 14)
        assert packets and packets[0].data.startswith(b"\x00\x00\x00\x01")
        keys.append(packets[0].keyframe)
    # Every second, and when asked (the interval then counts from the asked one).
    assert [n for n, key in enumerate(keys) if key] == [0, 10, 14, 24]
    encoder.close()


def test_choose_codec_prefers_the_pi_hardware_encoder_only_where_it_exists(tmp_path: Path) -> None:
    name = tmp_path / "name"
    assert choose_codec("auto", name) == "libx264"  # no /dev/video11 here
    name.write_text("bcm2835-codec-encode\n")
    assert choose_codec("auto", name) == "h264_v4l2m2m"
    name.write_text("some-other-device\n")
    with pytest.raises(EncoderUnavailable, match="bcm2835-codec"):
        choose_codec("h264_v4l2m2m", name)


def frame(n: int, at: float) -> VideoFrame:
    return VideoFrame(np.full((96, 160, 3), n, np.uint8), time.time(), at, None, (), (1.0, 1.0))


def test_the_feed_takes_frames_only_while_active_and_at_its_rate() -> None:
    feed = H264Feed("libx264", RtspSettings(enabled=True, fps=10), None, OverlaySettings())
    packets: list[Any] = []
    feed.start()
    try:
        assert not feed.wants_frame(0.0)
        feed.offer(frame(1, 0.0))  # offered while off: dropped
        feed.activate(packets.append)
        assert feed.wants_frame(100.0)
        feed.offer(frame(2, 100.0))
        assert not feed.wants_frame(100.05)  # due again 0.1 s later, at 10 frames/s
        assert feed.wants_frame(100.1)
        assert feed.wait_for(lambda f: f.frames_encoded == 1, 10)
        assert packets[0].keyframe
        feed.deactivate()
        assert not feed.wants_frame(200.0)
        assert feed.stats().frames_encoded == 1
    finally:
        feed.stop()
    assert feed.frame_size((320, 240)) == (320, 240)
    assert H264Feed("libx264", RtspSettings(size=(200, 100)), (640, 360), OverlaySettings()).frame_size(
        (320, 240)) == (200, 100)


def test_an_encoder_that_will_not_open_is_not_retried_at_every_frame() -> None:
    feed = H264Feed("h264_v4l2m2m", RtspSettings(enabled=True, fps=10), None, OverlaySettings())  # no /dev/video11
    feed.start()
    try:
        feed.activate(lambda packet: None)
        feed.offer(frame(1, 100.0))
        assert feed.wait_for(lambda f: f.errors == 1, 10)
        for n in range(2, 5):
            feed.offer(frame(n, 100.0 + n))
            assert feed.wait_for(lambda f: f.idle, 10)
        assert (feed.errors, feed.frames_encoded) == (1, 0)
        feed.activate(lambda packet: None)  # the next start tries again
        feed.offer(frame(9, 200.0))
        assert feed.wait_for(lambda f: f.errors == 2, 10)
    finally:
        feed.stop()


def test_a_late_end_of_an_old_media_does_not_stop_the_new_one() -> None:
    feed = H264Feed("libx264", RtspSettings(enabled=True), None, OverlaySettings())
    old: list[Any] = []
    new: list[Any] = []
    feed.activate(old.append)
    feed.activate(new.append)
    feed.deactivate(old.append)
    assert feed.active
    feed.deactivate(new.append)
    assert not feed.active


@pytest.mark.parametrize(("missing", "says"), [("av", "PyAV is not installed"), ("gi", "GStreamer")])
def test_rtsp_is_off_with_the_reason_when_a_library_is_missing(start_appliance: Start, missing: str, says: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # import fails as if it were not installed
    if missing == "gi":
        monkeypatch.delitem(sys.modules, "appliance.rtsp.server", raising=False)
    app = start_appliance(rtsp=rtsp_section())
    assert app.rtsp is None and says in (app.rtsp_reason or "")
    status = requests.get(f"{app.url}/api/status", timeout=5).json()["rtsp"]
    assert status == {"enabled": False, "reason": app.rtsp_reason}
    app.controller.on()
    with requests.get(f"{app.url}/stream.mjpg", stream=True, timeout=10) as response:
        next(iter_mjpeg(response))  # everything else works


def test_rtsp_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="must start with /"):
        RtspSettings(path="live")
    with pytest.raises(ValueError, match="even width and height"):
        RtspSettings(size=(321, 240))
    assert rtsp_service.off_status(None) == {"enabled": False, "reason": None}
    assert Fraction(RtspSettings().fps) == 15
