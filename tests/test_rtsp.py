"""The H.264 stream over RTSP, against the real server on loopback with ffprobe and ffmpeg as clients.

The appliance runs in-process (GStreamer's RTSP server on its ``rtsp`` thread, a free port);
ffprobe and ffmpeg are the clients NVRs and Home Assistant's stream build on. The unmarked tests at
the end need neither GStreamer nor ffmpeg: the encoder, the feed's rules and RTSP switched off with
its reason when a library is missing.
"""

from __future__ import annotations

import base64
import gc
import json
import os
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
from appliance.h264.encoder import EncoderUnavailable, H264Encoder, choose_codec
from appliance.h264.feed import H264Feed
from appliance.passwords import hash_password
from appliance.rtsp import service as rtsp_service
from appliance.runtime import Appliance
from tests.helpers import iter_mjpeg, make_config, wait_until_serving

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
    # The RTSP server hears "on" from the dispatcher's thread: a client of the test's own that asks at
    # once must not be quicker than that news (it would get 503, as while the camera is off).
    assert app.controller.flush(5)
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


def arrivals(address: str, count: int, transport: str = "tcp", timeout: float = 20) -> list[tuple[float, bool]]:
    """The first ``count`` frames as FFmpeg's RTSP client (the one inside Home Assistant, Frigate and
    go2rtc) receives them: when each arrived (monotonic) and whether it is a keyframe. Unlike ffprobe's
    decoded frames, nothing before the first keyframe is hidden, and the time is the wall clock's, not
    the stamps the server wrote. (A frame may come as several packets, one per slice: it counts once.)"""
    import av

    received: dict[object, tuple[float, bool]] = {}  # in the order they came
    # Little probing: what FFmpeg reads to find the stream's format comes out at once, at one time.
    options = {"rtsp_transport": transport, "analyzeduration": "100000", "probesize": "4096"}
    with av.open(address, options=options, timeout=(timeout, timeout)) as container:
        for n, packet in enumerate(container.demux(video=0)):
            if packet.size:  # the first may come without a time (before RTCP has said what it is)
                frame = packet.pts if packet.pts is not None else f"untimed {n}"
                at, key = received.get(frame, (time.monotonic(), False))
                received[frame] = (at, key or bool(packet.is_keyframe))
            if len(received) > count:  # the frame before this one is complete
                break
    return list(received.values())[:count]


def arrival_rate(received: list[tuple[float, bool]]) -> float:
    """Frames per second of wall-clock time, past the burst at the start (what FFmpeg read while it
    probed the stream comes out together)."""
    times = [at for at, _ in received]
    times = times[next(n for n, at in enumerate(times) if at > times[0]):]
    return (len(times) - 1) / (times[-1] - times[0])


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
        assert abs(rate(seen["frames"]) - FPS) < 1.5, seen["frames"]
        first = arrivals(url(app), 3, transport)
        assert first[0][1], "the first packet a client gets is not a keyframe"  # its picture starts at once
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
def test_one_encode_serves_an_rtsp_client_recording_and_event_clips_together(start_appliance: Start) -> None:
    app = start_rtsp(start_appliance, login=False, recording={"continuous": {"enabled": True, "segment_seconds": 2}})
    assert app.h264 is not None and app.recordings is not None and app.event_clips is not None
    feed = app.h264
    assert feed.wait_for(lambda f: f.active, 10)  # recording wants frames while the camera is on
    before, started = feed.frames_encoded, time.monotonic()
    reader = ffmpeg_reader(url(app, login=None), "tcp", frames=40)
    # Three consumers while the client plays: event clips, continuous recording, the RTSP media.
    assert feed.wait_for(lambda f: f.subscribed == 3, 20)
    assert reader.wait(60) == 0, reader.stderr.read() if reader.stderr else ""
    assert app.recordings.flush(10)
    elapsed = time.monotonic() - started
    encoded = feed.frames_encoded - before
    # 40 frames to the client and every frame into the recording, from one encode at FPS (three encodes
    # would be three times as many).
    assert 40 <= encoded <= FPS * elapsed * 1.3 + 10, (encoded, elapsed)
    assert rtsp_status(app)["frames_encoded"] == feed.frames_encoded
    recorded = app.recordings.folder.files("continuous")
    assert recorded and sum(r.seconds for r in recorded) * FPS >= encoded * 0.5


@pytest.mark.rtsp
def test_no_client_means_no_h264_encode(start_appliance: Start) -> None:
    """With nothing else asking for H.264 (Motion-JPEG clips, no recording), no client, no encode."""
    app = start_rtsp(start_appliance, login=False, events={"clip": {"format": "mjpeg"}})
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
    # From here on it reads nothing. Another client still gets every frame at the full rate, as it
    # arrives (the capture stamps keep their spacing however late frames come: the clock must be ours).
    received = arrivals(address, 65)
    assert arrival_rate(received) > 20 * 0.85, arrival_rate(received)
    # Nothing comes from it (no keep-alive, no RTCP): its session times out and the server drops it.
    # (The session times out after 3 s of silence; the bound is wide for a loaded machine.)
    assert sessions(app, lambda n: n == 0, timeout=45), app.rtsp.server.stats()
    assert app.rtsp.server.wait_for(lambda stats: stats.connections == 0, 15), app.rtsp.server.stats()


@pytest.mark.rtsp
def test_a_client_joining_a_running_stream_starts_at_once_not_at_the_next_keyframe(start_appliance: Start) -> None:
    app = start_rtsp(start_appliance, login=False, rtsp={"keyframe_interval": 10.0})
    assert app.rtsp is not None
    first = ffmpeg_reader(url(app, login=None), "tcp")
    try:
        assert app.rtsp.server.wait_for(lambda stats: stats.playing == 1, 15)
        # Well into the first client's group of pictures: its keyframes are behind us.
        encoded = app.rtsp.feed.frames_encoded
        assert app.rtsp.feed.wait_for(lambda f: f.frames_encoded >= encoded + 15, 10)
        started = time.monotonic()
        received = arrivals(url(app, login=None), 3)
        assert received[0][1], "the joining client's first packet is not a keyframe"
        assert received[0][0] - started < 4  # the interval is 10 s: the join forced a keyframe
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
    assert not [thread.name for thread in threading.enumerate() if thread.name in ("rtsp", "h264-encoder")]
    # The clients were closed by the server; a reader that has not noticed within 15 s is ended here.
    # (Rarely, under load, GStreamer's thread for a client closed at shutdown spins on its closed
    # stream, logging GLib criticals, and that client hears nothing more: in the service the process
    # then exits and the kernel closes the connection; in this test the process lives on.)
    for reader in readers:
        try:
            reader.wait(15)
        except subprocess.TimeoutExpired:
            reader.kill()
            reader.wait(5)


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


def test_the_feed_primes_one_keyframe_then_encodes_only_while_a_client_plays() -> None:
    feed = H264Feed("libx264", RtspSettings(enabled=True, fps=10), None, OverlaySettings())
    packets: list[Any] = []
    feed.start()
    try:
        assert not feed.wants_frame(0.0)
        feed.offer(frame(1, 0.0))  # offered with nobody subscribed: dropped
        media = feed.subscribe(packets.append)  # a DESCRIBE: the stream must be described, from one keyframe
        assert feed.wants_frame(100.0)
        feed.offer(frame(2, 100.0))
        assert feed.wait_for(lambda f: f.frames_encoded == 1, 10)
        assert packets[0].keyframe and not feed.active
        assert not feed.wants_frame(100.1) and not feed.wants_frame(200.0)  # primed: nothing until a PLAY
        media.request_keyframe()  # the consumer could not use it (not running yet): one more
        assert feed.wants_frame(200.0)
        feed.offer(frame(3, 200.0))
        assert feed.wait_for(lambda f: f.frames_encoded == 2, 10)
        assert not feed.wants_frame(300.0)
        media.want(True)
        assert feed.active and feed.wants_frame(300.0)
        feed.offer(frame(4, 300.0))
        assert not feed.wants_frame(300.05)  # due again 0.1 s later, at 10 frames/s
        assert feed.wants_frame(300.1)
        assert feed.wait_for(lambda f: f.frames_encoded == 3, 10)
        assert packets[-1].keyframe  # the first client's picture starts at once
        media.want(False)
        assert not feed.wants_frame(400.0)
        media.close()
        media.close()  # twice is fine
        assert not feed.wants_frame(500.0) and feed.subscribed == 0
        assert feed.stats().frames_encoded == 3
    finally:
        feed.stop()
    assert feed.frame_size((320, 240)) == (320, 240)
    assert H264Feed("libx264", RtspSettings(size=(200, 100)), (640, 360), OverlaySettings()).frame_size(
        (320, 240)) == (200, 100)


def test_two_consumers_share_one_encode_and_each_starts_at_a_keyframe() -> None:
    """The RTSP media and, say, a recorder: each frame is encoded once for both, a consumer that joins
    a running encoder starts at a keyframe it asked for (not a new encoder), and one leaving does not
    stop the other."""
    feed = H264Feed("libx264", RtspSettings(enabled=True, fps=10, keyframe_interval=10), None, OverlaySettings())
    first: list[Any] = []
    second: list[Any] = []
    feed.start()
    try:
        one = feed.subscribe(first.append)
        one.want(True)
        for n in range(5):
            feed.offer(frame(n, 100.0 + n))
            assert feed.wait_for(lambda f, n=n: f.frames_encoded == n + 1, 10)
        two = feed.subscribe(second.append)  # mid-way through a ten-second group of pictures
        two.want(True)
        for n in range(5, 10):
            feed.offer(frame(n, 100.0 + n))
            assert feed.wait_for(lambda f, n=n: f.frames_encoded == n + 1, 10)
        assert feed.frames_encoded == 10 and len(first) == 10  # one encode each frame, for both
        assert second and second[0].keyframe and len(second) == 5  # from the keyframe it asked for on
        assert [p.keyframe for p in first] == [True, False, False, False, False, True, False, False, False, False]
        one.close()  # the first leaves: the second goes on, with the same encoder
        feed.offer(frame(10, 110.0))
        assert feed.wait_for(lambda f: f.frames_encoded == 11, 10)
        assert len(second) == 6 and not second[-1].keyframe
        assert feed.stats().subscriptions == 1
    finally:
        feed.stop()


def test_an_encoder_that_will_not_open_is_not_retried_at_every_frame() -> None:
    feed = H264Feed("h264_v4l2m2m", RtspSettings(enabled=True, fps=10), None, OverlaySettings())  # no /dev/video11
    feed.start()
    try:
        media = feed.subscribe(lambda packet: None)
        media.want(True)
        feed.offer(frame(1, 100.0))
        assert feed.wait_for(lambda f: f.errors == 1, 10)
        for n in range(2, 5):
            feed.offer(frame(n, 100.0 + n))
            assert feed.wait_for(lambda f: f.idle, 10)
        assert (feed.errors, feed.frames_encoded) == (1, 0)
        media.close()
        feed.subscribe(lambda packet: None)  # the next start from nothing tries again
        feed.offer(frame(9, 200.0))
        assert feed.wait_for(lambda f: f.errors == 2, 10)
    finally:
        feed.stop()


def test_a_late_end_of_an_old_media_does_not_stop_the_new_one() -> None:
    feed = H264Feed("libx264", RtspSettings(enabled=True), None, OverlaySettings())
    old = feed.subscribe(lambda packet: None)
    new = feed.subscribe(lambda packet: None)
    new.want(True)
    old.close()
    assert feed.active and feed.subscribed == 1
    new.close()
    assert not feed.active and feed.subscribed == 0


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


@pytest.mark.parametrize("profile", ["baseline", "main", "high"])
def test_the_hardware_encoder_takes_the_products_options_and_gets_as_far_as_the_device(profile: str) -> None:
    """On a Pi 4 / Zero 2 W ``auto`` opens h264_v4l2m2m with these settings. Here it has no device, so
    FFmpeg must fail at the device lookup, past option parsing: an option it cannot parse (as the
    text "main" once was) fails before the device is even looked for, on a Pi too."""
    from appliance.h264.encoder import encoder_options

    settings = RtspSettings(enabled=True, profile=profile)
    assert set(encoder_options("h264_v4l2m2m", settings)) == {"profile"}  # nothing only libx264 knows
    with pytest.raises(EncoderUnavailable) as failure:
        H264Encoder("h264_v4l2m2m", (640, 360), settings)
    said = str(failure.value)
    assert "Could not find a valid device" in said, said
    assert "Unable to parse" not in said and "Error setting option" not in said, said


def test_the_encoder_thread_survives_any_exception_and_says_what_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance.h264 import encoder as h264

    real = h264.cv2.cvtColor
    failures = [3]

    def conversion(*args: Any, **kwargs: Any) -> Any:
        if failures[0] > 0:
            failures[0] -= 1
            raise ValueError("the colour conversion broke")
        return real(*args, **kwargs)

    monkeypatch.setattr(h264.cv2, "cvtColor", conversion)
    feed = H264Feed("libx264", RtspSettings(enabled=True, fps=10), None, OverlaySettings())
    packets: list[Any] = []
    feed.start()
    try:
        feed.subscribe(packets.append).want(True)
        for n in range(8):
            feed.offer(frame(n, 100.0 + n))
            assert feed.wait_for(lambda f: f.idle, 10)
        assert feed.wait_for(lambda f: f.frames_encoded == 5, 10), feed.stats()
        stats = feed.stats()
        assert stats.errors == 3 and stats.last_error == "ValueError: the colour conversion broke"
        assert packets[0].keyframe  # a fresh encoder after the failures
        assert feed.health() is None
    finally:
        feed.stop()


def test_a_dead_encoder_thread_is_reported_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    feed = H264Feed("libx264", RtspSettings(enabled=True, fps=10), None, OverlaySettings())

    def broken() -> None:
        raise RuntimeError("a bug outside the per-frame work")

    monkeypatch.setattr(feed, "_next", broken)
    feed.start()
    try:
        assert feed.wait_for(lambda f: f.died is not None, 10)
        assert feed.health() == "the H.264 encoder thread died: RuntimeError: a bug outside the per-frame work"
    finally:
        feed.stop()


# --- the loose ends: start-up, connections, logins, shutdown, leaks --------------------------------


def raw_request(port: int, text: str, sock: socket.socket | None = None) -> str:
    """One RTSP request on a socket of our own; the answer's text."""
    own = sock is None
    sock = sock or socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(text.encode())
        return sock.recv(8192).decode(errors="replace")
    finally:
        if own:
            sock.close()


@pytest.mark.rtsp
@pytest.mark.parametrize("switch_to", ["on", "off"])
def test_a_camera_switched_while_rtsp_starts_is_followed(tmp_path: Path, switch_to: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The switch lands between the server's start and its first word of the camera's state: the
    server must end up with the new state, not the one read before it started."""
    from appliance.rtsp.server import RtspServer

    app = Appliance(make_config(tmp_path, rtsp=rtsp_section()))
    if switch_to == "off":  # on before the RTSP server starts: restored, and waited for
        monkeypatch.setattr(app.controller, "restore", lambda: app.controller.on())
    real_start = RtspServer.start

    def start_while_switching(server: RtspServer) -> None:
        real_start(server)
        (app.controller.on if switch_to == "on" else app.controller.off)()
        app.controller.flush()  # the listener has heard the change before start() goes on

    monkeypatch.setattr(RtspServer, "start", start_while_switching)
    app.start()
    try:
        if switch_to == "on":
            probe_frames(url(app, login=None), "tcp", frames=3)  # not a 503 from a stale "off"
        else:
            assert "503" in refused(url(app, login=None))  # not sessions without frames from a stale "on"
    finally:
        app.stop()


@pytest.mark.rtsp
def test_a_describe_alone_starts_no_encoder_and_its_connection_is_closed(start_appliance: Start) -> None:
    """Nothing else wants H.264 here (Motion-JPEG clips): a DESCRIBE costs one encoded frame."""
    app = start_rtsp(start_appliance, login=False, rtsp={"request_timeout": 2}, events={"clip": {"format": "mjpeg"}})
    assert app.rtsp is not None
    port, feed = app.rtsp.server.port or 0, app.rtsp.feed
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        answer = raw_request(port, f"DESCRIBE {url(app, login=None)} RTSP/1.0\r\nCSeq: 1\r\n\r\n", sock)
        assert answer.startswith("RTSP/1.0 200") and "m=video" in answer, answer
        captured = app.pipeline.stats().frames_captured
        assert app.pipeline.wait_for_frames(captured + 20, 10)
        # The stream was described from one keyframe (or a few, while the media was starting): no more.
        encoded = feed.frames_encoded
        assert encoded <= 3 and not feed.active and rtsp_status(app)["encoding"] is False
        assert app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + 20, 10)
        assert feed.frames_encoded == encoded
        # No session set up within the request timeout: the server closes the connection.
        sock.settimeout(15)
        assert sock.recv(1) == b""
    assert app.rtsp.server.wait_for(lambda stats: stats.connections == 0, 5)
    assert feed.wait_for(lambda f: f.subscribed == 0, 10)  # the media it built ended with it
    assert "200" in raw_request(port, "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n")  # still serving


def connect_all(source: tuple[str, int], target: tuple[str, int], count: int, within: float) -> list[socket.socket]:
    """``count`` TCP connections from ``source`` to ``target``, opened at once (non-blocking); those the
    kernel completed within ``within`` seconds. They send nothing."""
    import selectors

    selector = selectors.DefaultSelector()
    pending: list[socket.socket] = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(source)
        sock.setblocking(False)
        sock.connect_ex(target)
        selector.register(sock, selectors.EVENT_WRITE)
        pending.append(sock)
    connected: list[socket.socket] = []
    deadline = time.monotonic() + within
    while selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
            sock = key.fileobj  # type: ignore[assignment]
            selector.unregister(sock)
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                connected.append(sock)
            else:
                sock.close()
    for sock in pending:
        if sock not in connected:
            sock.close()
    selector.close()
    return connected


def open_files(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


@pytest.mark.rtsp
def test_a_flood_of_idle_connections_is_capped_and_times_out_while_everything_serves(tmp_path: Path) -> None:
    """1,100 connections from one address that never send a request, against the appliance in its own
    process held to 1,024 open files (systemd's default): at most the per-address cap stay open,
    none after the request timeout, and HTTP, MJPEG and RTSP from another address serve meanwhile."""
    import resource

    import yaml

    from tests.broker import free_port

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))  # the flood's own sockets, here
    http_port, rtsp_port = free_port(), free_port()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "camera": {"backend": "synthetic", "size": "320x240", "fps": 10}, "state_dir": str(tmp_path / "state"),
        "server": {"host": "127.0.0.1", "port": http_port},
        "rtsp": {"enabled": True, "port": rtsp_port, "size": "256x144", "fps": FPS, "request_timeout": 3,
                 "max_connections_per_client": 8}}))
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)))
    flood: list[socket.socket] = []
    log: list[str] = []
    logged = threading.Condition()

    def drain() -> None:  # the appliance's log, read as it comes (a full pipe would block it)
        assert proc.stdout is not None
        for line in proc.stdout:
            with logged:
                log.append(line)
                logged.notify_all()

    try:
        wait_until_serving(proc)
        threading.Thread(target=drain, daemon=True).start()
        base = f"http://127.0.0.1:{http_port}"
        assert requests.put(f"{base}/api/camera", json={"on": True}, timeout=20).json()["state"] == "on"
        probe_frames(f"rtsp://127.0.0.1:{rtsp_port}/live", "tcp", frames=3)  # what the stream keeps, made
        before = open_files(proc.pid)
        flood.extend(connect_all(("127.0.0.2", 0), ("127.0.0.1", rtsp_port), 1100, within=20))
        status = requests.get(f"{base}/api/status", timeout=10).json()["rtsp"]
        # Connections beyond the cap are closed as they are accepted (those the kernel still queues or
        # dropped cost the appliance no file).
        assert len(flood) >= 500, len(flood)
        assert status["connections"] <= 8 and status["refused_connections"] >= 100, status
        assert open_files(proc.pid) <= before + 2 * 8 + 2  # a socket and its thread's wake-up fd each
        # Everything else serves, from another address.
        with requests.get(f"{base}/stream.mjpg", stream=True, timeout=10) as response:
            next(iter_mjpeg(response))
        probe_frames(f"rtsp://127.0.0.1:{rtsp_port}/live", "tcp", frames=3)
        # Past the request timeout the flood's connections that sent nothing are closed too. (Some of
        # the flood's handshakes the kernel completes late, from its full accept queue: those come in
        # later and are timed out in their turn.) Each such closing is logged and the test wakes at
        # each; the honest probe's own closing is not logged, so the count is also read again each second.
        def closed() -> int:
            return sum("no session after" in line for line in log)

        deadline = time.monotonic() + 45
        while True:
            with logged:
                seen = closed()
            status = requests.get(f"{base}/api/status", timeout=10).json()["rtsp"]
            assert status["connections"] <= 8, status
            if status["connections"] == 0:
                break
            assert time.monotonic() < deadline, (status, log[-20:])
            with logged:
                logged.wait_for(lambda seen=seen: closed() > seen, min(1.0, max(0.0, deadline - time.monotonic())))
        assert open_files(proc.pid) <= before + 2
    finally:
        for sock in flood:
            sock.close()
        proc.terminate()
        proc.wait(10)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.rtsp
def test_one_client_whose_password_is_being_checked_holds_up_no_other(start_appliance: Start) -> None:
    app = start_rtsp(start_appliance)
    assert app.rtsp is not None
    login = app.rtsp.server._login
    assert login is not None
    entered, release = threading.Event(), threading.Event()
    real_check = login.check

    def check(username: str, password: str) -> bool:
        if password == "slow":
            entered.set()
            release.wait(20)  # a check as slow as scrypt on a busy Pi, and then some
        return real_check(username, password)

    login.check = check  # type: ignore[method-assign]
    slow = threading.Thread(target=lambda: answers.append(raw_request(
        app.rtsp.server.port or 0,  # type: ignore[union-attr]
        f"DESCRIBE {url(app, login=None)} RTSP/1.0\r\nCSeq: 1\r\nAuthorization: Basic "
        f"{base64.b64encode(f'{USER}:slow'.encode()).decode()}\r\n\r\n")))
    answers: list[str] = []
    try:
        slow.start()
        assert entered.wait(10)
        started = time.monotonic()
        probe_frames(url(app), "tcp", frames=3)  # another client, with its own (first, scrypt) check
        assert time.monotonic() - started < 8, "a client waited for another's password check"
        assert not answers  # the slow one is still being checked
    finally:
        release.set()
        slow.join(20)
    assert answers and answers[0].startswith("RTSP/1.0 401"), answers


@pytest.mark.rtsp
def test_one_failure_limit_per_address_counts_http_and_rtsp_together(start_appliance: Start) -> None:
    app = start_appliance(rtsp=rtsp_section(), server={
        "auth": {"username": USER, "password_hash": hash_password(PASSWORD), "max_failures": 3}})
    app.controller.on()
    for _ in range(2):
        assert requests.get(f"{app.url}/api/status", auth=(USER, "wrong"), timeout=5).status_code == 401
    assert "401" in refused(url(app, login=f"{USER}:wrong"))  # the third, on the other port
    # Three failures from this address: HTTP refuses even the right password (429), and so does RTSP.
    assert requests.get(f"{app.url}/api/status", auth=(USER, PASSWORD), timeout=5).status_code == 429
    assert "401" in refused(url(app))


@pytest.mark.rtsp
def test_shutdown_ends_within_five_seconds_with_the_rtsp_loop_and_the_encoder_stuck(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance.h264 import encoder as h264

    stuck = threading.Event()
    release = threading.Event()
    real_encode = h264.H264Encoder.encode

    def encode(self: Any, *args: Any, **kwargs: Any) -> Any:
        if stuck.is_set():
            release.wait(30)  # a hardware encoder that never returns
        return real_encode(self, *args, **kwargs)

    monkeypatch.setattr(h264.H264Encoder, "encode", encode)
    app = Appliance(make_config(tmp_path, rtsp=rtsp_section()))
    app.start()
    try:
        app.controller.on()
        reader = ffmpeg_reader(url(app, login=None), "tcp")
        assert app.rtsp is not None and app.rtsp.server.wait_for(lambda stats: stats.playing == 1, 15)
        stuck.set()
        frames = app.rtsp.feed.frames_encoded
        assert app.rtsp.feed.wait_for(lambda f: f.frames_encoded > frames or not f.idle, 10)
        app.rtsp.server._attach(lambda *_: release.wait(30) and False)  # the loop stuck too
    finally:
        started = time.monotonic()
        app.stop()
        stopped = time.monotonic() - started
        release.set()
    reader.terminate()
    reader.wait(15)
    assert stopped < 5, stopped


def native_threads() -> int:
    """Threads of this process, GStreamer's and GLib's included (``threading`` knows only Python's)."""
    return len(list(Path("/proc/self/task").iterdir()))


@pytest.mark.rtsp
def test_rtsp_clients_cycled_twenty_times_leave_threads_and_files_where_they_were(start_appliance: Start) -> None:
    """RTSP alone on the encode (Motion-JPEG clips): when its clients go, so does every subscription."""
    app = start_rtsp(start_appliance, login=False, events={"clip": {"format": "mjpeg"}})
    assert app.rtsp is not None
    server = app.rtsp.server

    def cycle(transport: str) -> None:
        assert ffmpeg_reader(url(app, login=None), transport, frames=5).wait(30) == 0
        assert server.wait_for(lambda stats: stats.connections == 0 and stats.sessions == 0, 15), server.stats()
        assert app.rtsp.feed.wait_for(lambda f: f.subscribed == 0, 15)  # type: ignore[union-attr]

    cycle("tcp")
    cycle("udp")  # GStreamer's pools have made what they keep
    gc.collect()  # what earlier tests left for the collector is not this test's to count
    threads, files = native_threads(), open_files(os.getpid())
    for n in range(20):
        cycle("udp" if n % 2 else "tcp")
    # GLib's thread pool may keep a few idle threads for a while; it never keeps one per cycle.
    assert native_threads() <= threads + 2, (threads, native_threads())
    assert open_files(os.getpid()) <= files, (files, open_files(os.getpid()))


@pytest.mark.rtsp
def test_a_dead_encoder_thread_turns_healthz_bad(start_appliance: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    app = start_rtsp(start_appliance, login=False)
    assert app.rtsp is not None
    assert requests.get(f"{app.url}/healthz", timeout=5).status_code == 200
    feed = app.rtsp.feed
    feed.stop()
    monkeypatch.setattr(feed, "_next", lambda: (_ for _ in ()).throw(RuntimeError("broken")))
    feed.start()
    assert feed.wait_for(lambda f: f.died is not None, 10)
    answer = requests.get(f"{app.url}/healthz", timeout=5)
    assert answer.status_code == 503 and "H.264 encoder thread died" in answer.json()["error"], answer.text
    assert rtsp_status(app)["health"].startswith("the H.264 encoder thread died")
    assert not app.healthy()


def run_as_a_pi_4(tmp_path: Path, rtsp: dict[str, Any]) -> tuple[subprocess.Popen[str], int, int]:
    """The appliance in its own process on this machine made to look like a Pi 4 / Zero 2 W: a tmpfs
    over /sys/class in a private mount namespace, with video11 named as the Pi's H.264 codec. The
    product's own settings; ``auto`` goes down the hardware branch as on the board."""
    import yaml

    from tests.broker import free_port

    port, rtsp_port = free_port(), free_port()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "camera": {"backend": "synthetic", "size": "320x240", "fps": 10}, "state_dir": str(tmp_path / "state"),
        "server": {"host": "127.0.0.1", "port": port},
        "rtsp": {"enabled": True, "port": rtsp_port, **rtsp}}))
    board = ("mount -t tmpfs sysclass /sys/class && mkdir -p /sys/class/video4linux/video11 && "
             "echo bcm2835-codec-encode > /sys/class/video4linux/video11/name && "
             f'exec "{sys.executable}" -m appliance --config "{config}"')
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", board],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, port, rtsp_port


@pytest.mark.rtsp
@pytest.mark.root
def test_on_a_pi_4_auto_tries_the_hardware_encoder_and_falls_back_to_libx264_saying_why(tmp_path: Path) -> None:
    proc, port, rtsp_port = run_as_a_pi_4(tmp_path, {})
    try:
        output = wait_until_serving(proc)
        base = f"http://127.0.0.1:{port}"
        status = requests.get(f"{base}/api/status", timeout=10).json()["rtsp"]
        assert status["enabled"] and status["encoder"] == "libx264", status
        # It chose the hardware encoder, opened it with the product's options, and FFmpeg got as far
        # as looking for the device (none here); an option it could not parse would say so instead.
        fallback = status["encoder_fallback"]
        assert "h264_v4l2m2m" in fallback and "Could not find a valid device" in fallback, fallback
        assert requests.put(f"{base}/api/camera", json={"on": True}, timeout=20).json()["state"] == "on"
        seen = probe_frames(f"rtsp://127.0.0.1:{rtsp_port}/live", "tcp", frames=3)
        assert seen["streams"][0]["codec_name"] == "h264"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert "the hardware encoder did not open, so libx264 encodes" in output, output[-3000:]  # logged, too


@pytest.mark.rtsp
@pytest.mark.root
def test_on_a_pi_4_the_hardware_encoder_asked_for_by_name_is_off_with_the_reason(tmp_path: Path) -> None:
    proc, port, _ = run_as_a_pi_4(tmp_path, {"encoder": "h264_v4l2m2m"})
    try:
        wait_until_serving(proc)
        status = requests.get(f"http://127.0.0.1:{port}/api/status", timeout=10).json()["rtsp"]
        assert not status["enabled"] and "Could not find a valid device" in status["reason"], status
    finally:
        proc.terminate()
        proc.wait(10)
