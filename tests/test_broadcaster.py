"""The broadcaster: newest frame to every viewer, skip for the slow, end on stop, demand tracking."""

from __future__ import annotations

import threading

import pytest

from appliance.capture.broadcaster import FrameBroadcaster, TooManyViewers


def test_current_is_the_live_run_and_its_newest_frame() -> None:
    b = FrameBroadcaster(max_viewers=4)
    assert b.current() is None
    b.start()
    first = b.current()
    assert first is not None and first.jpeg is None
    for i in range(5):
        b.publish(b"jpeg%d" % i)
    now = b.current()
    assert now is not None and now.jpeg == b"jpeg4" and now.seq == first.seq + 5
    b.stop()
    assert b.current() is None
    b.start()
    again = b.current()
    assert again is not None and again.generation == first.generation + 1 and again.jpeg is None


def test_wakers_hear_publish_start_and_stop() -> None:
    b = FrameBroadcaster(max_viewers=4)
    heard: list[str] = []
    b.add_waker(lambda: heard.append("woken"))
    b.start()
    b.publish(b"x")
    b.publish(None, still=b"still only")  # no stream frame: nobody to wake
    b.stop()
    assert heard == ["woken"] * 3


def test_viewer_limit_and_camera_off() -> None:
    b = FrameBroadcaster(max_viewers=2)
    with pytest.raises(LookupError):
        b.add_viewer()
    b.start()
    first = b.add_viewer()
    b.add_viewer()
    with pytest.raises(TooManyViewers):
        b.add_viewer()
    b.remove_viewer(first)
    b.add_viewer()


def test_demand_follows_viewers_and_snapshot_waiters() -> None:
    b = FrameBroadcaster(max_viewers=2)
    b.start()
    assert not b.wants_frames()
    seen: list[bool] = []
    taken: list[bytes | None] = []

    def take() -> None:
        taken.append(b.snapshot(timeout=5, max_age=0.1))

    snapper = threading.Thread(target=take)
    snapper.start()
    seen.append(b.wait_for_demand(timeout=5))  # the snapshot registered its demand
    b.publish(b"snap")
    snapper.join(5)
    assert seen == [True] and taken == [b"snap"]
    assert not b.wants_frames()
    b.add_viewer()
    assert b.wants_frames()


def test_snapshot_uses_a_fresh_frame_without_waiting() -> None:
    clock = [100.0]
    b = FrameBroadcaster(max_viewers=2, monotonic=lambda: clock[0])
    b.start()
    b.publish(b"fresh")
    assert b.snapshot(timeout=0, max_age=0.5) == b"fresh"
    b.stop()
    assert b.snapshot(timeout=0, max_age=0.5) is None


def test_a_stream_snapshot_asks_for_a_stream_frame_not_a_still() -> None:
    """The page's snapshot mode: while it waits, the capture thread is asked for a stream frame
    (``wants_frames``), and it gets that frame, scaled as the stream is, not the full-size still."""
    b = FrameBroadcaster(max_viewers=2)
    b.start()
    taken: list[bytes | None] = []
    waiter = threading.Thread(target=lambda: taken.append(b.stream_snapshot(timeout=5, max_age=0.1)))
    waiter.start()
    assert b.wait_for_demand(timeout=5) and b.wants_frames() and not b.wants_still()
    b.publish(b"small", b"full")
    waiter.join(5)
    assert taken == [b"small"] and not b.wants_frames() and b.viewers == 0
    assert b.stream_snapshot(timeout=0.1, max_age=10) == b"small"  # fresh: no new encode wanted
    b.stop()
    assert b.stream_snapshot(timeout=0.1, max_age=10) is None
