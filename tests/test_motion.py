"""The motion detector and event hysteresis, on synthetic numpy frames with injected times."""

from __future__ import annotations

from typing import Any

import numpy as np
import requests

from appliance.config import MotionSettings
from appliance.motion.detector import MotionDetector
from appliance.motion.events import MotionEventTracker, MotionResult


def scene(square_at: int | None, size: int = 40) -> np.ndarray:
    image = np.full((480, 640, 3), 60, np.uint8)
    image[:, ::40] = 90  # texture, so the background is not flat
    if square_at is not None:
        image[200:200 + size, square_at:square_at + size] = (220, 200, 180)
    return image


def warmed(settings: MotionSettings | None = None) -> MotionDetector:
    detector = MotionDetector(settings or MotionSettings(warmup_frames=5))
    for _ in range(10):
        assert not detector.detect(scene(None)).motion
    return detector


def test_warm_up_reports_no_motion() -> None:
    detector = MotionDetector(MotionSettings(warmup_frames=5))
    results = [detector.detect(scene(100 + 30 * i)) for i in range(5)]
    assert all(r.warming_up and not r.motion for r in results)


def test_still_scene_has_no_motion() -> None:
    detector = warmed()
    assert not any(detector.detect(scene(None)).motion for _ in range(20))


def test_moving_square_is_boxed_in_full_frame_coordinates() -> None:
    detector = warmed()
    result = detector.detect(scene(300, size=60))
    assert result.motion
    box = result.box
    assert box is not None
    # The box is around the square (in 640-px coordinates, though detection ran at 400 px).
    assert box.x <= 305 and box.x + box.w >= 355
    assert box.y <= 205 and box.y + box.h >= 255
    assert box.w < 140 and box.h < 140
    assert 0 < result.area < 0.05
    assert 0 < result.score <= 1


def test_grey_input_is_used_instead_of_the_colour_frame() -> None:
    settings = MotionSettings(warmup_frames=2)
    detector = MotionDetector(settings)
    still = scene(None)
    grey_still = still[::2, ::2, 0].copy()  # a lores-like grey image of the same scene
    for _ in range(4):
        detector.detect(still, grey_still)
    moved = scene(300, size=60)
    result = detector.detect(still, moved[::2, ::2, 0].copy())  # only the grey image shows the square
    assert result.motion
    assert result.box is not None and 290 <= result.box.x <= 310


def test_minimum_area_ignores_small_changes() -> None:
    detector = warmed(MotionSettings(warmup_frames=5, min_area=0.01))
    assert not detector.detect(scene(300, size=20)).motion
    detector = warmed(MotionSettings(warmup_frames=5, min_area=0.0))
    assert detector.detect(scene(300, size=20)).motion


def test_background_absorbs_an_object_that_stops() -> None:
    detector = warmed()
    parked = scene(300, size=60)
    results = [detector.detect(parked, elapsed=0.2).motion for _ in range(150)]  # 30 s at 5 fps
    assert results[0] and not results[-1]
    settled = results.index(False) * 0.2
    assert 5 <= settled <= 25  # slowly: a passer-by is not absorbed while it moves, a parked car is


MOTION = MotionResult(motion=True, area=0.1, score=0.5)
STILL = MotionResult(motion=False)


def test_event_needs_consecutive_frames_and_ends_after_the_gap() -> None:
    tracker = MotionEventTracker(start_frames=3, event_gap=2.0)
    assert tracker.update(MOTION, 0.0) is None
    assert tracker.update(STILL, 0.1) is None  # streak broken
    assert tracker.update(MOTION, 0.2) is None
    assert tracker.update(MOTION, 0.3) is None
    start = tracker.update(MOTION, 0.4)
    assert start is not None and start.kind == "start" and start.event.started_at == 0.4
    assert tracker.update(STILL, 1.0) is None
    assert tracker.update(MOTION, 2.0) is None  # motion within the gap keeps the same event
    assert tracker.update(STILL, 3.9) is None
    end = tracker.update(STILL, 4.0)
    assert end is not None and end.kind == "end"
    assert end.event.id == start.event.id and end.event.ended_at == 4.0
    assert end.event.frames == 2


def test_an_event_that_lasts_too_long_ends_and_the_next_starts_at_once() -> None:
    tracker = MotionEventTracker(start_frames=2, event_gap=2.0, max_seconds=10.0)
    assert tracker.update(MOTION, 0.0) is None
    first = tracker.update(MOTION, 1.0)
    assert first is not None and first.kind == "start"
    changes = [tracker.update(MOTION, t) for t in (5.0, 10.9, 11.0, 11.5, 12.0)]
    assert changes[:2] == [None, None]
    end = changes[2]
    assert end is not None and end.kind == "end" and end.event.id == first.event.id and end.event.ended_at == 11.0
    start = changes[3]  # motion goes on: the next event starts with the next frame, no new streak needed
    assert start is not None and start.kind == "start" and start.event.id != first.event.id
    assert changes[4] is None


def test_event_keeps_the_peak_and_finish_ends_it() -> None:
    tracker = MotionEventTracker(start_frames=1, event_gap=5.0)
    tracker.update(MotionResult(motion=True, area=0.1, score=0.2), 0.0)
    tracker.update(MotionResult(motion=True, area=0.3, score=0.6), 0.1)
    tracker.update(MotionResult(motion=True, area=0.2, score=0.4), 0.2)
    end = tracker.finish(0.5)
    assert end is not None
    assert end.event.peak_area == 0.3 and end.event.peak_score == 0.6
    assert tracker.finish(0.6) is None


def test_motion_is_analysed_at_its_own_rate_not_the_cameras(start_appliance: Any) -> None:
    app = start_appliance(camera={"fps": 40}, motion={"fps": 8})
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    before = app.pipeline.stats()
    assert app.pipeline.wait_for_frames(before.frames_captured + 50, timeout=10)  # 1.25 s of camera time
    after = app.pipeline.stats()
    captured = after.frames_captured - before.frames_captured
    analysed = after.frames_analysed - before.frames_analysed
    assert 8 <= analysed <= 12, (captured, analysed)  # 8 per second, whatever the 40 the camera delivers
    assert requests.get(app.url + "/api/status", timeout=5).json()["frames_analysed"] >= after.frames_analysed


def test_events_still_start_and_end_at_a_lower_analysis_rate(start_appliance: Any) -> None:
    app = start_appliance(camera={"fps": 40, "synthetic": {"objects": 3, "motion_period": 1.5,
                                                            "motion_duration": 0.6}},
                          motion={"fps": 15, "warmup_frames": 3, "event_gap": 0.2, "background_weight": 1.0})
    heard: list[str] = []
    app.controller.add_motion_listener(lambda change, jpeg: heard.append(change.kind))
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    assert app.pipeline.wait_for_frames(60, timeout=15)  # one motion period
    assert app.controller.flush()
    assert heard[:2] == ["start", "end"], heard
    app.recorder.flush()
    events, _ = app.events.list()
    assert events and events[0]["box"] is not None


def test_the_background_forgets_at_the_same_speed_in_seconds_at_any_analysis_rate() -> None:
    """A parked object stops being motion after the same time, analysed 30 or 5 times a second."""
    settled = {}
    for fps in (30, 5):
        detector = MotionDetector(MotionSettings(warmup_frames=0))
        for _ in range(5):
            detector.detect(scene(None), elapsed=1 / fps)
        parked = scene(300, size=60)
        frames = 0
        while detector.detect(parked, elapsed=1 / fps).motion:
            frames += 1
            assert frames < 1000
        settled[fps] = frames / fps  # seconds until the object became background
    assert abs(settled[30] - settled[5]) <= 0.1 * settled[30] + 0.2, settled
