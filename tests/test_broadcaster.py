"""The broadcaster: newest frame to every viewer, skip for the slow, end on stop, demand tracking."""

from __future__ import annotations

import threading

import pytest

from appliance.broadcaster import FrameBroadcaster, TooManyViewers


def test_viewers_get_the_newest_frame_and_skip_what_they_missed() -> None:
    b = FrameBroadcaster(max_viewers=4)
    b.start()
    gen = b.add_viewer().generation
    for i in range(5):
        b.publish(b"jpeg%d" % i)
    frame = b.wait_for_frame(gen, 0, timeout=1)
    assert frame is not None and frame.jpeg == b"jpeg4" and frame.seq == 5


def test_a_waiting_viewer_wakes_on_publish() -> None:
    b = FrameBroadcaster(max_viewers=4)
    b.start()
    gen = b.add_viewer().generation
    got: list[bytes | None] = []
    waiting = threading.Thread(target=lambda: got.append(b.wait_for_frame(gen, 0, timeout=5).jpeg))
    waiting.start()
    b.publish(b"x")
    waiting.join(5)
    assert got == [b"x"]


def test_timeout_returns_the_same_frame_again() -> None:
    b = FrameBroadcaster(max_viewers=4)
    b.start()
    gen = b.add_viewer().generation
    b.publish(b"only")
    first = b.wait_for_frame(gen, 0, timeout=1)
    again = b.wait_for_frame(gen, first.seq, timeout=0.01)
    assert again is not None and again.seq == first.seq and again.jpeg == b"only"


def test_stop_ends_waiting_viewers_and_restart_is_a_new_run() -> None:
    b = FrameBroadcaster(max_viewers=4)
    b.start()
    gen = b.add_viewer().generation
    results: list[object] = []
    waiting = threading.Thread(target=lambda: results.append(b.wait_for_frame(gen, 0, timeout=10)))
    waiting.start()
    b.stop()
    waiting.join(2)
    assert not waiting.is_alive() and results == [None]
    b.start()
    b.publish(b"new run")
    assert b.wait_for_frame(gen, 0, timeout=1) is None  # a stream of the old run stays ended


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
