"""The stream writer over real sockets: one thread, the newest frame to each viewer, nobody waits.

Each viewer is one end of a socketpair; the test reads the other end as a browser would.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest

from appliance.capture.broadcaster import FrameBroadcaster
from appliance.web.fanout import StreamFanout, part_for


class Reader:
    """The viewer's side: parses parts out of the byte stream."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def part(self, timeout: float = 5.0) -> bytes:
        """The next whole part's JPEG bytes (waits on the socket, with a timeout)."""
        self.sock.settimeout(timeout)
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end >= 0:
                head = self.buffer[:head_end].decode()
                length = int(head.rsplit("Content-Length: ", 1)[1])
                end = head_end + 4 + length + 2
                if len(self.buffer) >= end:
                    jpeg = self.buffer[head_end + 4:end - 2]
                    self.buffer = self.buffer[end:]
                    return jpeg
            data = self.sock.recv(1 << 20)
            if not data:
                raise EOFError("stream ended")
            self.buffer += data

    def ended(self, timeout: float = 5.0) -> bool:
        """Whether the stream closes within ``timeout`` (reading and dropping what still comes)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(1 << 20):
                pass
        except TimeoutError:
            return False
        return True


@pytest.fixture
def setup() -> Iterator[tuple[FrameBroadcaster, StreamFanout, list[str]]]:
    broadcaster = FrameBroadcaster(max_viewers=8)
    fanout = StreamFanout(broadcaster, keepalive=0.3, stall_timeout=0.5)
    fanout.start()
    closed: list[str] = []
    broadcaster.start()
    yield broadcaster, fanout, closed
    fanout.stop()


def attach(broadcaster: FrameBroadcaster, fanout: StreamFanout, closed: list[str], fps: float | None = None,
           name: str = "viewer", small_buffer: bool = False) -> Reader:
    server_end, client_end = socket.socketpair()
    if small_buffer:
        server_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        client_end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    fanout.attach(server_end, broadcaster.add_viewer(fps), on_close=lambda: closed.append(name))
    return Reader(client_end)


def test_every_viewer_gets_each_new_frame_once(setup: tuple[FrameBroadcaster, StreamFanout, list[str]]) -> None:
    broadcaster, fanout, closed = setup
    readers = [attach(broadcaster, fanout, closed) for _ in range(3)]
    for i in range(3):
        broadcaster.publish(b"jpeg%d" % i)
        assert [reader.part() for reader in readers] == [b"jpeg%d" % i] * 3
    assert part_for.cache_info().currsize <= 4  # one shared part per frame, not one per viewer


def test_the_frame_is_sent_again_only_as_the_keepalive(
        setup: tuple[FrameBroadcaster, StreamFanout, list[str]]) -> None:
    broadcaster, fanout, closed = setup
    reader = attach(broadcaster, fanout, closed)
    broadcaster.publish(b"only")
    assert reader.part() == b"only"
    assert reader.part(timeout=3) == b"only"  # no new frame: the keep-alive, after 0.3 s
    broadcaster.publish(b"next")
    assert reader.part() == b"next"


def test_a_slow_viewer_skips_frames_and_never_delays_the_others(
        setup: tuple[FrameBroadcaster, StreamFanout, list[str]]) -> None:
    broadcaster, fanout, closed = setup
    slow = attach(broadcaster, fanout, closed, name="slow", small_buffer=True)
    fast = attach(broadcaster, fanout, closed, name="fast")
    frames = [bytes([i]) * 200_000 for i in range(6)]  # far more than the slow socket's buffer
    for frame in frames:
        broadcaster.publish(frame)
        assert fast.part() == frame  # the fast viewer has each frame while the slow one is stuck
    got = []
    while not got or got[-1] != frames[-1]:
        got.append(slow.part())
    assert len(got) < len(frames)  # it skipped to the newest instead of queueing every frame
    assert closed == []


def test_a_viewer_that_stops_reading_is_dropped(setup: tuple[FrameBroadcaster, StreamFanout, list[str]]) -> None:
    broadcaster, fanout, closed = setup
    attach(broadcaster, fanout, closed, name="stalled", small_buffer=True)
    broadcaster.publish(b"x" * 500_000)  # never fully taken
    assert broadcaster.wait_for_viewers(0, timeout=5)  # after stall_timeout (0.5 s)
    assert closed == ["stalled"]


def test_a_viewer_that_closes_is_gone_without_waiting_for_a_frame(
        setup: tuple[FrameBroadcaster, StreamFanout, list[str]]) -> None:
    broadcaster, fanout, closed = setup
    reader = attach(broadcaster, fanout, closed)
    broadcaster.publish(b"x")
    assert reader.part() == b"x"
    reader.sock.close()
    assert broadcaster.wait_for_viewers(0, timeout=2)
    assert closed == ["viewer"]


def test_camera_off_ends_every_stream(setup: tuple[FrameBroadcaster, StreamFanout, list[str]]) -> None:
    broadcaster, fanout, closed = setup
    readers = [attach(broadcaster, fanout, closed, name=f"v{i}") for i in range(2)]
    broadcaster.publish(b"x")
    broadcaster.stop()
    assert all(reader.ended() for reader in readers)
    assert broadcaster.viewers == 0 and sorted(closed) == ["v0", "v1"]


def test_a_rate_limited_viewer_gets_at_most_its_rate(
        setup: tuple[FrameBroadcaster, StreamFanout, list[str]]) -> None:
    broadcaster, fanout, closed = setup
    slow = attach(broadcaster, fanout, closed, fps=2)
    fast = attach(broadcaster, fanout, closed)
    for i in range(20):  # 20 frames as fast as the fast viewer takes them
        broadcaster.publish(b"%d" % i)
        assert fast.part() == b"%d" % i
    first = slow.part()
    slow.sock.settimeout(0.2)
    more = b""
    with contextlib.suppress(TimeoutError):
        more = slow.sock.recv(1 << 20)
    assert first == b"0" and more == b""  # one frame, then nothing until its next turn (0.5 s)


def test_stop_closes_streams_and_refuses_late_arrivals() -> None:
    broadcaster = FrameBroadcaster(max_viewers=8)
    fanout = StreamFanout(broadcaster, keepalive=1.0, stall_timeout=1.0)
    fanout.start()
    broadcaster.start()
    closed: list[str] = []
    reader = attach(broadcaster, fanout, closed, name="early")
    fanout.stop()
    assert reader.ended()
    late = attach(broadcaster, fanout, closed, name="late")
    assert late.ended() and closed == ["early", "late"] and broadcaster.viewers == 0
