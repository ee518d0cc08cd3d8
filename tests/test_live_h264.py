"""The page's H.264 view (``/stream.mp4``) over the real server on loopback: what a browser receives.

Clients are plain HTTP readers that parse the boxes as they arrive (what the page's fetch reader
sees), PyAV decoding what they got, ffprobe reading the stream over HTTP, raw sockets that stop
reading, and ffmpeg as an RTSP client beside them. The page itself in Chromium is in test_browser.
"""

from __future__ import annotations

import io
import itertools
import json
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from appliance.passwords import hash_password
from appliance.runtime import Appliance
from tests.helpers import iter_mjpeg

pytestmark = [pytest.mark.mse]

Start = Callable[..., Appliance]
FPS = 15
TICKS = 90_000


def start_view(start: Start, camera: dict[str, Any] | None = None, rtsp: dict[str, Any] | None = None,
               **sections: Any) -> Appliance:
    """An appliance whose page view is H.264 at FPS (the test camera runs at 20: thinned, as on a Pi)."""
    app = start(camera={"size": "320x240", **(camera or {})}, rtsp={"fps": FPS, **(rtsp or {})},
                events={"clip": {"format": "mjpeg"}}, **sections)  # nothing else asks for H.264
    assert app.h264_viewers is not None, app.h264_view_off
    app.controller.on()
    return app


@dataclass(frozen=True)
class Box:
    kind: str
    data: bytes  # the whole box, header included
    arrived: float  # wall clock


def boxes(response: requests.Response) -> Iterator[Box]:
    """The top-level boxes of a live MP4 response, each as soon as it is whole (``read1``: what has
    arrived, without waiting for a full buffer, as a browser's stream reader gets it)."""
    buffer = b""
    while chunk := response.raw.read1(65536):
        buffer += chunk
        while len(buffer) >= 8:
            size, kind = struct.unpack(">I4s", buffer[:8])
            if len(buffer) < size:
                break
            yield Box(kind.decode("latin-1"), buffer[:size], time.time())
            buffer = buffer[size:]


@dataclass(frozen=True)
class Fragment:
    decode: int  # ticks of 90 kHz from the stream's epoch
    keyframe: bool
    arrived: float
    data: bytes  # moof + mdat


def fragment_of(moof: Box, mdat: Box) -> Fragment:
    at = moof.data.index(b"tfdt") + 8  # version and flags, then 64 bits of decode time
    decode = struct.unpack(">Q", moof.data[at:at + 8])[0]
    trun = moof.data.index(b"trun") - 4
    flags = struct.unpack(">I", moof.data[trun + 24:trun + 28])[0]  # the one sample's flags
    return Fragment(decode, not flags & 0x00010000, mdat.arrived, moof.data + mdat.data)


@dataclass
class Watch:
    """What one viewer received: its headers, init segment(s) and fragments."""

    status: int
    headers: dict[str, str]
    init: list[bytes]
    fragments: list[Fragment]
    ended: bool  # the server ended the response

    @property
    def epoch(self) -> float:
        return float(self.headers["X-Media-Epoch"])

    def mp4(self) -> bytes:
        return self.init[0] + b"".join(fragment.data for fragment in self.fragments)

    def rate(self) -> float:
        """Fragments a second of arrival, past the first (which may wait for the encoder to start)."""
        times = [fragment.arrived for fragment in self.fragments[1:]]
        return (len(times) - 1) / (times[-1] - times[0])


def watch(app: Appliance, seconds: float = 3.0, fragments: int | None = None, auth: Any = None,
          headers: dict[str, str] | None = None, until: threading.Event | None = None) -> Watch:
    """Read ``/stream.mp4`` for ``seconds`` (or ``fragments``, or until the server ends it)."""
    with requests.get(f"{app.url}/stream.mp4", stream=True, timeout=10, auth=auth, headers=headers) as response:
        seen = Watch(response.status_code, dict(response.headers), [], [], ended=False)
        if response.status_code != 200:
            return seen
        deadline = time.monotonic() + seconds
        pending: Box | None = None
        ftyp = b""
        for box in boxes(response):
            if box.kind == "ftyp":
                ftyp = box.data
            elif box.kind == "moov":
                seen.init.append(ftyp + box.data)
            elif box.kind == "moof":
                pending = box
            elif box.kind == "mdat" and pending is not None:
                seen.fragments.append(fragment_of(pending, box))
            if (fragments is not None and len(seen.fragments) >= fragments) or time.monotonic() > deadline \
                    or (until is not None and until.is_set()):
                return seen
        seen.ended = True
        return seen


def decoded(mp4: bytes) -> list[Any]:
    import av

    with av.open(io.BytesIO(mp4)) as container:
        return list(container.decode(video=0))


def test_a_viewer_gets_the_init_segment_then_a_fragment_per_frame_from_a_keyframe(start_appliance: Start) -> None:
    app = start_view(start_appliance)
    status: dict[str, Any] = {}

    def peek() -> None:  # while the viewer watches, the status counts it beside MJPEG and RTSP
        assert app.h264_viewers is not None
        app.h264_viewers.wait_for(lambda v: v.viewers == 1, 5)
        status.update(requests.get(f"{app.url}/api/status", timeout=5).json())

    peeker = threading.Thread(target=peek)
    peeker.start()
    seen = watch(app, seconds=4)
    peeker.join(10)
    assert seen.status == 200 and seen.headers["Content-Type"] == "video/mp4"
    assert "no-store" in seen.headers["Cache-Control"]
    assert len(seen.init) == 1 and seen.fragments[0].keyframe
    assert abs(seen.rate() - FPS) < FPS * 0.1, seen.rate()
    # Media time is capture time: epoch + decode time is when the frame was taken, just before it came.
    for fragment in seen.fragments:
        age = fragment.arrived - (seen.epoch + fragment.decode / TICKS)
        assert 0 <= age < 0.5, age
    frames = decoded(seen.mp4())
    assert len(frames) == len(seen.fragments) and (frames[0].width, frames[0].height) == (320, 240)
    assert status["h264_viewers"] == 1 and status["viewers"] == 0
    assert status["live_h264"]["viewers"] == 1 and status["live_h264"]["enabled"] is True


def test_ffprobe_reads_the_live_view_over_http(start_appliance: Start) -> None:
    app = start_view(start_appliance, rtsp={"profile": "high", "size": "256x144"})
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries",
         "stream=codec_name,width,height:frame=pts_time,key_frame", "-read_intervals", "%+#20", "-of", "json",
         f"{app.url}/stream.mp4"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    probed = json.loads(result.stdout)
    assert probed["streams"][0] | {"codec_name": "h264", "width": 256, "height": 144} == probed["streams"][0]
    frames = probed["frames"]
    assert len(frames) == 20 and frames[0]["key_frame"] == 1
    times = [float(frame["pts_time"]) for frame in frames]
    assert abs((len(times) - 1) / (times[-1] - times[0]) - FPS) < 1.0


def test_a_viewer_joining_a_running_stream_starts_at_once_not_at_the_next_keyframe(start_appliance: Start) -> None:
    app = start_view(start_appliance, rtsp={"keyframe_interval": 10.0})
    assert app.h264 is not None
    stop = threading.Event()
    first = threading.Thread(target=watch, args=(app, 30), kwargs={"until": stop})
    first.start()
    try:
        encoded = app.h264.frames_encoded
        assert app.h264.wait_for(lambda f: f.frames_encoded >= encoded + 20, 10)  # well into its group
        started = time.time()
        joined = watch(app, fragments=3)
        assert joined.fragments[0].keyframe
        assert joined.fragments[0].arrived - started < 1.0  # the interval is 10 s: the join asked for one
        assert len(decoded(joined.mp4())) == 3
    finally:
        stop.set()
        first.join(10)


@pytest.mark.rtsp
def test_four_page_viewers_and_an_rtsp_client_are_one_encode(start_appliance: Start) -> None:
    from tests.test_rtsp import ffmpeg_reader, url

    app = start_view(start_appliance, rtsp={"enabled": True, "port": 0, "size": "256x144"})
    assert app.h264 is not None and app.rtsp is not None
    feed = app.h264
    seen: list[Watch] = []
    viewers = [threading.Thread(target=lambda: seen.append(watch(app, seconds=6))) for _ in range(4)]
    reader = ffmpeg_reader(url(app, login=None), "tcp", frames=60)
    for viewer in viewers:
        viewer.start()
    assert feed.wait_for(lambda f: f.subscribed == 2, 10)  # the RTSP media and the page's viewers: one each
    assert app.h264_viewers is not None and app.h264_viewers.wait_for(lambda v: v.viewers == 4, 10)
    before, started = feed.frames_encoded, time.monotonic()
    time.sleep(3)  # a measuring window while all five watch
    encoded, elapsed = feed.frames_encoded - before, time.monotonic() - started
    for viewer in viewers:
        viewer.join(20)
    assert reader.wait(60) == 0, reader.stderr.read() if reader.stderr else ""
    # Five clients at FPS from one encode: five encodes would be five times as many frames.
    assert FPS * elapsed * 0.85 <= encoded <= FPS * elapsed * 1.15 + 2, (encoded, elapsed)
    assert len(seen) == 4 and all(abs(w.rate() - FPS) < FPS * 0.1 for w in seen), [w.rate() for w in seen]
    # Everyone gone: the encode stops (the camera's frames are no longer handed over).
    assert feed.wait_for(lambda f: not f.active, 15)


def test_the_view_keeps_the_rules_of_mjpeg(start_appliance: Start) -> None:
    app = start_view(start_appliance, stream={"max_h264_viewers": 2},
                     server={"auth": {"username": "admin", "password_hash": hash_password("pw")}})
    login = ("admin", "pw")
    assert requests.get(f"{app.url}/stream.mp4", timeout=5).status_code == 401
    assert requests.get(f"{app.url}/stream.mp4", auth=login, timeout=5,
                        headers={"Host": "evil.example"}).status_code == 421
    embedded = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty",
                "Origin": "http://evil.example"}
    assert requests.get(f"{app.url}/stream.mp4", auth=login, timeout=5, headers=embedded).status_code == 403
    stop = threading.Event()
    two = [threading.Thread(target=watch, args=(app, 30), kwargs={"auth": login, "until": stop}) for _ in range(2)]
    for viewer in two:
        viewer.start()
    try:
        assert app.h264_viewers is not None and app.h264_viewers.wait_for(lambda v: v.viewers == 2, 10)
        third = requests.get(f"{app.url}/stream.mp4", auth=login, timeout=5)
        assert third.status_code == 503 and third.headers["Retry-After"] == "10"
        assert third.json() == {"error": "H.264 viewer limit of 2 reached", "max_h264_viewers": 2}
    finally:
        stop.set()
        for viewer in two:
            viewer.join(10)
    assert app.h264_viewers.wait_for(lambda v: v.viewers == 0, 10)
    assert app.h264_viewers.stats().refused == 1


def test_the_camera_going_off_ends_every_stream_and_on_again_starts_them(start_appliance: Start) -> None:
    app = start_view(start_appliance)
    seen: list[Watch] = []
    viewers = [threading.Thread(target=lambda: seen.append(watch(app, seconds=30))) for _ in range(2)]
    for viewer in viewers:
        viewer.start()
    assert app.h264_viewers is not None and app.h264_viewers.wait_for(lambda v: v.viewers == 2, 10)
    assert app.h264_viewers.wait_for(lambda v: v.stats().fragments >= 10, 10)
    off_at = time.monotonic()
    app.controller.off()
    for viewer in viewers:
        viewer.join(10)
    assert time.monotonic() - off_at < 3
    assert len(seen) == 2 and all(w.ended and w.fragments for w in seen)
    refused = requests.get(f"{app.url}/stream.mp4", timeout=5)
    assert refused.status_code == 503 and refused.json()["state"] == "off"
    app.controller.on()
    assert len(watch(app, fragments=5).fragments) == 5


def test_a_stalled_reader_is_dropped_while_another_keeps_its_rate(start_appliance: Start) -> None:
    app = start_view(start_appliance, camera={"size": "640x360", "synthetic": {"objects": 6}},
                     rtsp={"size": "640x360", "bitrate": 1_000_000}, server={"socket_timeout": 2})
    viewers = app.h264_viewers
    assert viewers is not None
    with socket.socket() as stalled:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", app.server.port))
        stalled.sendall(b"GET /stream.mp4 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert viewers.wait_for(lambda v: v.viewers == 1, 10)
        # From here on it reads nothing. The other viewer still gets every frame, as it comes.
        seen = watch(app, seconds=8)
        assert abs(seen.rate() - FPS) < FPS * 0.1, seen.rate()
        assert len(decoded(seen.mp4())) == len(seen.fragments)
        assert viewers.wait_for(lambda v: v.stats().dropped == 1 and v.viewers == 0, 30), viewers.stats()
        assert app.server.wait_for_connections(0, 10)  # its connection is given back, its socket closed
    stats = viewers.stats()
    assert stats.fell_behind >= 1 and stats.skipped > 0  # its outbox stayed bounded while it stalled


def test_a_slow_viewer_skips_forward_and_what_it_gets_still_plays(start_appliance: Start) -> None:
    """A viewer whose link carries less than the stream loses whole groups of pictures and goes on
    from the next keyframe with room: its picture jumps forward, it never falls further behind."""
    app = start_view(start_appliance, camera={"size": "640x360", "synthetic": {"objects": 6}},
                     rtsp={"size": "640x360", "bitrate": 1_000_000, "keyframe_interval": 0.5})
    viewers = app.h264_viewers
    assert viewers is not None
    received = b""
    with socket.socket() as slow:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        slow.connect(("127.0.0.1", app.server.port))
        slow.sendall(b"GET /stream.mp4 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        ends = time.monotonic() + 12
        while time.monotonic() < ends:  # about 30 kB a second: a fraction of the stream's rate
            received += slow.recv(3072)
            time.sleep(0.1)
    body = received.split(b"\r\n\r\n", 1)[1]
    whole, at = b"", 0
    while at + 8 <= len(body):  # the boxes that arrived whole
        size = struct.unpack(">I", body[at:at + 4])[0]
        if at + size > len(body):
            break
        whole, at = whole + body[at:at + size], at + size
    assert viewers.wait_for(lambda v: v.viewers == 0, 10)
    stats = viewers.stats()
    assert stats.fell_behind >= 1 and stats.skipped > 0, stats
    frames = decoded(whole)  # every resume starts at a keyframe: it decodes without a broken picture
    assert frames
    gaps = [b.pts - a.pts for a, b in itertools.pairwise(frames)]
    assert max(gaps) > 4 * TICKS // FPS, (len(frames), stats)  # it skipped forward


def test_an_h264_viewer_needs_under_a_quarter_of_the_bytes_of_an_mjpeg_viewer_at_720p15(
        start_appliance: Start) -> None:
    """The demo camera at 1280x720 and 15 frames a second, every other setting the product's own."""
    app = start_appliance(camera={"size": "1280x720", "fps": 15, "synthetic": {"objects": 3}},
                          motion={"fps": 5}, stream={"h264": True})
    assert app.h264_viewers is not None
    app.controller.on()
    counted: dict[str, float] = {}

    def mjpeg() -> None:
        with requests.get(f"{app.url}/stream.mjpg", stream=True, timeout=10) as response:
            parts = iter_mjpeg(response)
            next(parts)
            started, total, frames = time.monotonic(), 0, 0
            for _headers, jpeg in parts:
                total, frames = total + len(jpeg), frames + 1
                if time.monotonic() - started > 6:
                    break
            counted["mjpeg"] = total / (time.monotonic() - started)
            counted["mjpeg_fps"] = frames / (time.monotonic() - started)

    other = threading.Thread(target=mjpeg)
    other.start()
    seen = watch(app, seconds=7)
    other.join(15)
    span = seen.fragments[-1].arrived - seen.fragments[1].arrived
    h264 = sum(len(fragment.data) for fragment in seen.fragments[2:]) / span
    assert counted["mjpeg_fps"] > 13 and abs(seen.rate() - 15) < 1.5
    assert h264 <= counted["mjpeg"] / 4, (h264, counted)
