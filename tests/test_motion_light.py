"""Light is not motion: generated clips (no dataset needed) through the detector and the event tracker.

A textured 320x240 scene with sensor noise, analysed at 5 frames/s as on the device. A global
brightness step, a switch to night (IR) mode and an auto-exposure ramp raise no event; a
person-sized figure walking in after each of them does. Zones cut areas out or restrict detection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

from appliance.config import MotionSettings, Zone
from appliance.motion.detector import MotionDetector, zone_mask
from appliance.motion.events import MotionEventTracker

FPS = 5


def backdrop(seed: int = 3) -> np.ndarray:
    """A garden-like scene: smooth shading, blocks of colour and fine texture."""
    rng = np.random.default_rng(seed)
    h, w = 240, 320
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    image = np.empty((h, w, 3), np.float32)
    image[...] = (60 + 0.2 * xx + 0.1 * yy)[..., None]
    for _ in range(25):
        x, y = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 30))
        image[y:y + int(rng.integers(8, 30)), x:x + int(rng.integers(8, 40))] = rng.integers(30, 200, 3)
    image += rng.normal(0, 6, image.shape).astype(np.float32)  # texture, fixed
    return np.clip(image, 0, 255)


def person(image: np.ndarray, x: int) -> np.ndarray:
    """A figure about a fifth of the frame high at column ``x``."""
    out = image.copy()
    out[150:200, x:x + 16] = (40, 50, 70)
    out[138:150, x + 3:x + 13] = (120, 140, 170)
    return out


def shot(image: np.ndarray, rng: np.random.Generator, sigma: float = 2.5) -> np.ndarray:
    return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)


def ir(image: np.ndarray) -> np.ndarray:
    """Night mode: grey, foliage bright, contrast stretched."""
    luma = image @ np.array([0.2, 0.7, 0.1], np.float32)
    return np.clip(1.35 * luma + 25, 0, 255)[..., None].repeat(3, axis=2)


def events(frames: Iterator[np.ndarray], settings: MotionSettings | None = None) -> list[int]:
    """Indexes of the frames where an event started."""
    settings = settings or MotionSettings()
    detector = MotionDetector(settings)
    tracker = MotionEventTracker(start_frames=settings.start_frames, event_gap=settings.event_gap)
    started = []
    for index, frame in enumerate(frames):
        change = tracker.update(detector.detect(frame, elapsed=1 / FPS), index / FPS)
        if change is not None and change.kind == "start":
            started.append(index)
    return started


Change = Callable[[np.ndarray, float], np.ndarray]  # (scene, seconds since the change began) -> frame

CHANGES: dict[str, Change] = {
    "brightness step": lambda scene, t: scene * 1.6,
    "lights off": lambda scene, t: scene * 0.45,
    "night (IR) mode": lambda scene, t: ir(scene),
    "exposure ramp": lambda scene, t: scene * (1.0 + 0.6 * min(t / 3.0, 1.0)),
}


def clip(change: Change, walk_in: bool) -> Iterator[np.ndarray]:
    """4 s of the still scene, the change at 4 s, held for 8 s; then, if asked, a figure walks in."""
    rng = np.random.default_rng(11)
    scene = backdrop()
    for index in range(int(12 * FPS)):
        t = index / FPS
        yield shot(scene if t < 4 else change(scene, t - 4), rng)
    if walk_in:
        changed = change(scene, 8.0)
        for step in range(int(4 * FPS)):
            yield shot(person(changed, 10 + 12 * step), rng)


@pytest.mark.parametrize("name", list(CHANGES))
def test_a_light_change_is_not_an_event(name: str) -> None:
    assert events(clip(CHANGES[name], walk_in=False)) == []


@pytest.mark.parametrize("name", list(CHANGES))
def test_a_person_walking_in_after_a_light_change_is_an_event(name: str) -> None:
    started = events(clip(CHANGES[name], walk_in=True))
    assert len(started) == 1 and started[0] >= 12 * FPS, started  # after the change, on the figure


def walk(zones: list[Zone]) -> list[int]:
    rng = np.random.default_rng(5)
    scene = backdrop()
    frames = [shot(scene, rng) for _ in range(int(3 * FPS))]
    frames += [shot(person(scene, 10 + 6 * step), rng) for step in range(int(4 * FPS))]  # the left half
    return events(iter(frames), MotionSettings(zones=zones))


LEFT_HALF = [(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)]
RIGHT_HALF = [(0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)]


def test_zones_exclude_and_include() -> None:
    assert walk([]) != []
    assert walk([Zone(name="path", mode="exclude", points=LEFT_HALF)]) == []
    assert walk([Zone(name="beds", mode="include", points=RIGHT_HALF)]) == []
    assert walk([Zone(name="path", mode="include", points=LEFT_HALF)]) != []
    assert walk([Zone(name="beds", mode="exclude", points=RIGHT_HALF)]) != []


def test_zone_mask_is_in_fractions_of_any_frame_size() -> None:
    zones = [Zone(mode="exclude", points=[(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)])]
    for size in ((320, 240), (64, 48)):
        mask = zone_mask(zones, size)
        assert mask is not None and mask.shape == (size[1], size[0])
        assert mask[:, : size[0] // 2 - 1].max() == 0 and mask[:, size[0] // 2 + 1:].min() == 255
    assert zone_mask([], (320, 240)) is None


def test_zone_points_must_lie_inside_the_frame() -> None:
    with pytest.raises(ValueError, match="outside the frame"):
        Zone(points=[(0.0, 0.0), (1.5, 0.0), (0.0, 1.0)])
    with pytest.raises(ValueError):
        Zone(points=[(0.0, 0.0), (1.0, 0.0)])  # two points are not an area


def test_something_that_moves_through_and_leaves_leaves_no_ghost() -> None:
    """A large object crossing whole cells of the light grid, then gone: the motion ends within a
    second (a covered cell once kept the light gain it had while covered, and stayed "moving")."""
    rng = np.random.default_rng(5)
    scene = backdrop()
    settings = MotionSettings(background_weight=0.3)
    detector = MotionDetector(settings)
    moving = []
    for index in range(8 * FPS):
        frame = scene.copy()
        if 2 * FPS <= index < 4 * FPS:  # a van, half the frame high, drives across for two seconds
            x = (index - 2 * FPS) * 20
            frame[60:200, x:x + 120] = (30, 30, 200)
        moving.append(detector.detect(shot(frame, rng), elapsed=1 / FPS).motion)
    assert any(moving[2 * FPS:4 * FPS])
    assert not any(moving[5 * FPS:]), [i for i, m in enumerate(moving) if m]
