"""How well motion detection finds what moves, and how quiet it stays when only the light changes.

    python bench/motion_quality.py DATASET_DIR [--settings JSON]

DATASET_DIR is CDnet 2014's ``baseline/highway`` sequence (``../shared/data/cdnet2014-highway``):
Y. Wang, P.-M. Jodoin, F. Porikli, J. Konrad, Y. Benezeth, P. Ishwar, "CDnet 2014: An Expanded Change
Detection Benchmark Dataset", IEEE CVPR Workshops, 2014 (changedetection.net). Its frames are read from
there and never copied.

Four detectors run on the same frames, in one run: the appliance's (``appliance.motion.detector``), the one it
had before light matching (release 0.2.0, to show what the change cost and bought), the demo's
original loop (grey, blur 7, running average 0.1, threshold 25, dilate twice, contours over 500 px at
640x480), and OpenCV's MOG2 (its shadows count as background). Each feeds the appliance's own event
tracker (``start_frames``, ``event_gap``). Every frame is analysed (30 frames/s); the appliance's
detector is also run on the clips at ``motion.fps``, as it runs on the device.

On the labelled sequence, per detector:

- **frame recall**: of the scored frames where ground truth moves on at least 0.2 % of the frame, the
  fraction where the detector reports motion;
- **box IoU**: the mean, over those frames, of the overlap of the box around everything the detector
  found with the box around the ground truth's moving pixels (a missed frame counts 0);
- **pixel precision, recall, F-measure** of the detector's mask under CDnet's rules (inside
  ``ROI.bmp``, frames of ``temporalROI.txt``; shadow counts as background, 85 and 170 are not scored);
- **CPU ms per frame** (thread CPU time of the detector alone, the best of five passes taken in turn
  with the other detectors') and the **events** the tracker raised.

Then the same detectors on motion-free clips made from the sequence's background (the per-pixel
median of frames spread over it): sensor noise with mains flicker, a lamp switched on and off (bright
near it, fading across the scene), a switch to night (IR) mode and back, and an auto-exposure ramp up
and down. Every event there is a false alarm.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance.config import MotionSettings  # noqa: E402
from appliance.motion.detector import MotionDetector  # noqa: E402
from appliance.motion.events import Box, MotionEventTracker, MotionResult  # noqa: E402

FPS = 30.0
MOVING_FRACTION = 0.002  # ground truth "moves" on a frame when at least this fraction of it is 255


class Detector(Protocol):
    name: str

    def step(self, image: np.ndarray) -> tuple[MotionResult, np.ndarray | None]:
        """One frame in; the result (boxes in frame pixels) and the motion mask (any size, or None)."""


class ApplianceDetector:
    def __init__(self, settings: MotionSettings, name: str = "appliance", every: int = 1) -> None:
        self.name = name
        self.every = every  # analyse every n-th frame (the device runs at motion.fps)
        self.detector = MotionDetector(settings)

    def step(self, image: np.ndarray) -> tuple[MotionResult, np.ndarray | None]:
        result = self.detector.detect(image, None, self.every / FPS)
        return result, self.detector.mask


def _boxes(mask: np.ndarray, min_pixels: float) -> list[tuple[int, int, int, int]]:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [cv2.boundingRect(c) for c in contours if cv2.contourArea(c) >= min_pixels]


def _result(rects: list[tuple[int, int, int, int]], area: float) -> MotionResult:
    boxes = tuple(Box(*rect) for rect in rects)
    return MotionResult(motion=bool(boxes), boxes=boxes, area=area, score=0.5 if boxes else 0.0)


class PreviousDetector:
    """The appliance's detector before light matching (release 0.2.0), kept to compare against: grey
    400 px wide, blur 21, running average 0.1, threshold 25, erode once and dilate twice."""

    name = "appliance 0.2.0"

    def __init__(self, min_area: float) -> None:
        self.background: np.ndarray | None = None
        self.frames = 0
        self.min_area = min_area
        self.kernel = np.ones((3, 3), np.uint8)

    def step(self, image: np.ndarray) -> tuple[MotionResult, np.ndarray | None]:
        h, w = image.shape[:2]
        small = image if w <= 400 else cv2.resize(image, (400, round(h * 400 / w)), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (21, 21), 0)
        if self.background is None:
            self.background = small.astype(np.float32)
            return MotionResult(False), None
        delta = cv2.absdiff(small, cv2.convertScaleAbs(self.background))
        cv2.accumulateWeighted(small, self.background, 0.1)
        self.frames += 1
        mask = cv2.threshold(delta, 25, 255, cv2.THRESH_BINARY)[1]
        mask = cv2.dilate(cv2.erode(mask, self.kernel), self.kernel, iterations=2)
        area = cv2.countNonZero(mask) / mask.size
        if self.frames <= 10 or area < self.min_area or area == 0:
            return MotionResult(False, area=area), mask
        return _result(_boxes(mask, max(1.0, self.min_area * mask.size / 4)) or [cv2.boundingRect(mask)], area), mask


class DemoLoop:
    """The Django demo's loop, as ``bench/demo_original.py`` runs it."""

    name = "demo's loop"

    def __init__(self) -> None:
        self.background: np.ndarray | None = None

    def step(self, image: np.ndarray) -> tuple[MotionResult, np.ndarray | None]:
        gray = cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (7, 7), 0)
        if self.background is None:
            self.background = gray.astype(np.float32)
            return MotionResult(False), None
        cv2.accumulateWeighted(gray, self.background, 0.1)
        delta = cv2.absdiff(gray, cv2.convertScaleAbs(self.background))
        mask = cv2.dilate(cv2.threshold(delta, 25, 255, cv2.THRESH_BINARY)[1], None, iterations=2)
        scale = image.shape[0] * image.shape[1] / (640 * 480)
        return _result(_boxes(mask, 500 * scale), cv2.countNonZero(mask) / mask.size), mask


class Mog2:
    """OpenCV's Gaussian-mixture background subtractor with its defaults; shadows are background."""

    name = "OpenCV MOG2"

    def __init__(self, min_area: float) -> None:
        self.subtractor = cv2.createBackgroundSubtractorMOG2(detectShadows=True)
        self.min_area = min_area
        self.kernel = np.ones((3, 3), np.uint8)

    def step(self, image: np.ndarray) -> tuple[MotionResult, np.ndarray | None]:
        foreground = self.subtractor.apply(image)
        mask = cv2.morphologyEx((foreground == 255).astype(np.uint8) * 255, cv2.MORPH_OPEN, self.kernel)
        area = cv2.countNonZero(mask) / mask.size
        if area < self.min_area:
            return MotionResult(False, area=area), mask
        return _result(_boxes(mask, max(1.0, self.min_area * mask.size / 4)), area), mask


# --- the labelled sequence ---------------------------------------------------------------------------


@dataclass
class Sequence:
    frames: list[np.ndarray]
    truth: list[np.ndarray]
    roi: np.ndarray
    first: int  # index into frames of the first scored frame
    last: int


def load(dataset: Path) -> Sequence:
    first, last = (int(v) for v in (dataset / "temporalROI.txt").read_text().split()[:2])
    frames, truth = [], []
    for number in range(1, last + 1):
        frame = cv2.imread(str(dataset / "input" / f"in{number:06d}.jpg"), cv2.IMREAD_COLOR)
        gt = cv2.imread(str(dataset / "groundtruth" / f"gt{number:06d}.png"), cv2.IMREAD_GRAYSCALE)
        if frame is None or gt is None:
            raise SystemExit(f"{dataset}: frame {number} is missing or unreadable")
        frames.append(frame)
        truth.append(gt)
    roi = cv2.imread(str(dataset / "ROI.bmp"), cv2.IMREAD_GRAYSCALE)
    if roi is None:
        raise SystemExit(f"{dataset}: ROI.bmp is missing")
    return Sequence(frames, truth, roi > 0, first - 1, last - 1)


def _union(result: MotionResult) -> tuple[int, int, int, int] | None:
    box = result.box
    return None if box is None else (box.x, box.y, box.x + box.w, box.y + box.h)


def _iou(a: tuple[int, int, int, int] | None, b: tuple[int, int, int, int]) -> float:
    if a is None:
        return 0.0
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _events(results: Iterator[tuple[int, MotionResult]], settings: MotionSettings) -> int:
    tracker = MotionEventTracker(start_frames=settings.start_frames, event_gap=settings.event_gap,
                                 max_seconds=settings.max_event_seconds)
    started = 0
    for index, result in results:
        change = tracker.update(result, index / FPS)
        started += change is not None and change.kind == "start"
    return started


def cpu_per_frame(sequence: Sequence, makers: list[Callable[[], Detector]], passes: int = 5) -> list[float]:
    """Thread CPU seconds per frame of each detector (a fresh one per pass) over the whole sequence:
    the best of ``passes``, with the detectors' passes interleaved so that a busy spell of the shared
    machine falls on all of them alike rather than on one."""
    best = [float("inf")] * len(makers)
    for _ in range(passes):
        for index, make in enumerate(makers):
            detector = make()
            started = time.thread_time()
            for frame in sequence.frames:
                detector.step(frame)
            best[index] = min(best[index], time.thread_time() - started)
    return [seconds / len(sequence.frames) for seconds in best]


def score(sequence: Sequence, detector: Detector, settings: MotionSettings) -> dict[str, float]:
    found = moving = 0
    ious: list[float] = []
    tp = fp = fn = 0
    results = []
    for index, frame in enumerate(sequence.frames):
        result, mask = detector.step(frame)
        results.append((index, result))
        if not sequence.first <= index <= sequence.last:
            continue
        gt = sequence.truth[index]
        positive = (gt == 255) & sequence.roi
        scored = sequence.roi & (gt != 85) & (gt != 170)
        if mask is None:
            detected = np.zeros(gt.shape, bool)
        else:
            detected = cv2.resize(mask, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
        tp += int(np.count_nonzero(detected & positive))
        fp += int(np.count_nonzero(detected & ~positive & scored))
        fn += int(np.count_nonzero(~detected & positive))
        if np.count_nonzero(positive) >= MOVING_FRACTION * gt.size:
            moving += 1
            found += result.motion
            ys, xs = np.nonzero(positive)
            ious.append(_iou(_union(result) if result.motion else None,
                             (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)))
    precision = tp / max(1, tp + fp)
    recall = tp / max(1, tp + fn)
    return {"frame_recall": found / max(1, moving), "iou": float(np.mean(ious)) if ious else 0.0,
            "precision": precision, "recall": recall,
            "f_measure": 2 * precision * recall / max(1e-9, precision + recall),
            "events": _events(iter(results), settings),
            "moving_frames": moving}


# --- motion-free clips -------------------------------------------------------------------------------


def background_of(sequence: Sequence) -> np.ndarray:
    """The empty road: the per-pixel median of frames spread over the whole sequence."""
    picked = sequence.frames[:: max(1, len(sequence.frames) // 90)]
    return np.median(np.stack(picked), axis=0).astype(np.uint8)


def clips(background: np.ndarray, seconds: float = 20.0, seed: int = 7) -> dict[str, list[np.ndarray]]:
    """Motion-free clips of ``seconds`` at 30 fps; every change in them is light or sensor, never motion."""
    rng = np.random.default_rng(seed)
    h, w = background.shape[:2]
    base = background.astype(np.float32)
    count = int(seconds * FPS)
    times = np.arange(count) / FPS
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    lamp = 1.0 + 0.25 + 0.9 * np.exp(-((xx - 0.2 * w) ** 2 + (yy - 0.25 * h) ** 2) / (2 * (0.35 * w) ** 2))
    luma_ir = background @ np.array([0.2, 0.7, 0.1], np.float32)  # B, G, R: foliage bright in IR
    ir = np.clip(1.35 * luma_ir + 25, 0, 255)[..., None].repeat(3, axis=2)

    def noisy(image: np.ndarray, sigma: float) -> np.ndarray:
        return np.clip(image + rng.normal(0, sigma, image.shape).astype(np.float32), 0, 255).astype(np.uint8)

    made: dict[str, list[np.ndarray]] = {}
    made["noise and flicker"] = [noisy(base * (1 + 0.04 * np.sin(2 * np.pi * 1.3 * t)), 3.0) for t in times]
    made["light on and off"] = [noisy(base * (lamp[..., None] if 6 <= t < 13 else 1.0), 2.0) for t in times]
    made["night (IR) mode"] = [noisy(ir if 6 <= t < 13 else base, 4.0 if 6 <= t < 13 else 2.0) for t in times]

    def exposure(t: float) -> float:
        up = np.clip((t - 5) / 3, 0, 1)
        down = np.clip((t - 12) / 3, 0, 1)
        return float(1.0 + 0.7 * up - 0.7 * down)

    made["exposure ramp"] = [noisy(base * exposure(t), 2.0) for t in times]
    return made


def clip_events(frames: list[np.ndarray], make: Callable[[], Detector], settings: MotionSettings,
                every: int = 1) -> int:
    detector = make()
    results = ((index, detector.step(frame)[0]) for index, frame in enumerate(frames) if index % every == 0)
    return _events(results, settings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="CDnet 2014 baseline/highway folder")
    parser.add_argument("--settings", default="{}", help="motion settings for the appliance's detector, as JSON")
    args = parser.parse_args()
    settings = MotionSettings.model_validate(json.loads(args.settings))
    every = max(1, round(FPS / settings.fps))
    sequence = load(args.dataset)
    makers: list[Callable[[], Detector]] = [lambda: ApplianceDetector(settings),
                                            lambda: PreviousDetector(settings.min_area), DemoLoop,
                                            lambda: Mog2(settings.min_area)]
    rows = []
    for make, cpu in zip(makers, cpu_per_frame(sequence, makers), strict=True):
        detector = make()
        rows.append((detector.name, score(sequence, detector, settings) | {"cpu_ms": 1000 * cpu}))
    generated = clips(background_of(sequence))
    false: dict[str, dict[str, int]] = {}
    for make in makers:
        name = make().name
        false[name] = {clip: clip_events(frames, make, settings) for clip, frames in generated.items()}
    at_rate = f"appliance at {settings.fps:g} fps"
    false[at_rate] = {clip: clip_events(frames, lambda: ApplianceDetector(settings, at_rate, every), settings, every)
                      for clip, frames in generated.items()}

    h, w = sequence.frames[0].shape[:2]
    print(f"CDnet 2014 baseline/highway, {w}x{h}, frames {sequence.first + 1}-{sequence.last + 1} scored, "
          f"{rows[0][1]['moving_frames']} with motion; every frame analysed")
    print(f"{'detector':<16} {'frame recall':>12} {'box IoU':>7} {'precision':>9} {'recall':>6} {'F':>5} "
          f"{'CPU ms':>6} {'events':>6}")
    for name, row in rows:
        print(f"{name:<16} {row['frame_recall']:>12.3f} {row['iou']:>7.3f} {row['precision']:>9.3f} "
              f"{row['recall']:>6.3f} {row['f_measure']:>5.3f} {row['cpu_ms']:>6.2f} {row['events']:>6}")
    names = list(generated)
    print(f"\nfalse events on motion-free clips ({len(generated[names[0]]) / FPS:g} s each)")
    print(f"{'detector':<22} " + " ".join(f"{clip:>17}" for clip in names) + f" {'total':>5}")
    for name, counts in false.items():
        print(f"{name:<22} " + " ".join(f"{counts[clip]:>17}" for clip in names) + f" {sum(counts.values()):>5}")
    ours, before = rows[0][1], rows[1][1]
    print(f"\nCPU per frame: {ours['cpu_ms'] / before['cpu_ms']:.2f}x the 0.2.0 detector's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
