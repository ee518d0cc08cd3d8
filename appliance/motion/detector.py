"""Motion detection: a pure class, frames in, results out, no threads or I/O.

Background subtraction on a small blurred grey image, made to ignore what is not motion:

- **Light is matched before comparing.** The frame is divided into a coarse grid; in each cell the
  median ratio of frame to background (over pixels that were not moving) is the light change there,
  and the frame is divided by that smooth gain field. An exposure ramp, mains flicker, a cloud or a
  lamp that lights one side of the garden changes every pixel of a cell by about the same factor and
  disappears; a person changes some pixels of a cell, not its median.
- **The pixel threshold follows the noise.** The mean difference of still pixels is tracked, and
  the threshold is at least ``NOISE_FACTOR`` times it, so a grainy night image does not sparkle.
- **A change over most of the frame is light, not motion** (Motion's ``lightswitch``, Frigate's
  recalibration): when more than ``lightswitch`` of the watched area changes at once (a switch to
  night mode), the background is taken afresh and nothing is reported for that frame.
- **The background forgets moving things slowly.** Still pixels follow the scene at
  ``background_weight``; pixels under motion at a tenth of it, so a car does not leave a ghost,
  while something that stays (a parked car) becomes background in about 15 s at the default weight.
- **Specks are removed** (a morphological opening) before the changed area and the boxes are taken;
  **zones** (polygons in fractions of the frame) exclude areas or restrict detection to areas.

Events over these results are ``appliance.motion.events``.
"""

from __future__ import annotations

import cv2
import numpy as np

from appliance.config import MotionSettings, Zone
from appliance.motion.events import Box, MotionResult

__all__ = ["MotionDetector", "zone_mask"]

NOISE_FACTOR = 4.0
"""The pixel threshold is at least this many times the mean difference of still pixels."""
JOIN = 2
"""Pixels of dilation that join the parts of one moving body into one box, and the margin around
moving pixels that the background learns slowly."""
NOISE_EVERY = 4
"""The noise is measured on every this many analysed frames (it drifts slowly; measuring costs)."""
GRID = (8, 6)
"""Cells across and down in which the light change is measured."""
CELL_SAMPLES = 10
"""Each cell's light is the median over at most this many by this many averaged samples."""
MOVING_SLOWDOWN = 0.1
"""Pixels under motion join the background at this fraction of ``background_weight``."""
GAIN_PULL = 0.1
"""Per frame at 30 frames/s, a covered cell's light gain moves this fraction of the way to the median cell's."""
REFERENCE_FPS = 30.0
"""The rate ``background_weight`` is given at."""
LIGHT_STEP = 0.15
LIGHT_STEP_CELLS = 0.25
"""When the light in at least ``LIGHT_STEP_CELLS`` of the grid's cells differs from the background's
by more than ``LIGHT_STEP``, the light jumped: the background is taken afresh."""


def zone_mask(zones: list[Zone] | tuple[Zone, ...], size: tuple[int, int]) -> np.ndarray | None:
    """The watched area at ``size`` (w, h) as 255/0, or None when zones leave the whole frame watched.

    With any ``include`` zone only those areas are watched; ``exclude`` zones are then cut out.
    """
    if not zones:
        return None
    w, h = size
    includes = [zone for zone in zones if zone.mode == "include"]
    mask = np.zeros((h, w), np.uint8) if includes else np.full((h, w), 255, np.uint8)

    def polygon(zone: Zone) -> np.ndarray:
        return np.array([[round(x * (w - 1)), round(y * (h - 1))] for x, y in zone.points], np.int32)

    for zone in includes:
        cv2.fillPoly(mask, [polygon(zone)], 255)
    for zone in zones:
        if zone.mode == "exclude":
            cv2.fillPoly(mask, [polygon(zone)], 0)
    return mask


class MotionDetector:
    """Light-matched, noise-aware background subtraction on a small blurred grey image."""

    def __init__(self, settings: MotionSettings) -> None:
        self._settings = settings
        self._kernel = np.ones((3, 3), np.uint8)
        self._zones: np.ndarray | None = None
        self._zones_for: tuple[int, int] | None = None
        self.mask: np.ndarray | None = None  # the last analysed frame's motion mask, at the small size
        self.reset()

    @property
    def settings(self) -> MotionSettings:
        return self._settings

    def configure(self, settings: MotionSettings) -> None:
        """Use new settings from the next frame on; the background is kept unless the size changes."""
        if (settings.zones, settings.width, settings.blur) != (self._settings.zones, self._settings.width,
                                                               self._settings.blur):
            self._zones_for = None
        if (settings.width, settings.blur) != (self._settings.width, self._settings.blur):
            self.reset()
        self._settings = settings

    def reset(self) -> None:
        """Forget the background (after the camera restarts, the scene may have changed)."""
        self._background: np.ndarray | None = None
        self._still: np.ndarray | None = None  # 255 where the previous frame had no motion; None: all
        self._gains: np.ndarray | None = None  # the light change per cell found in the previous frame
        self._noise: float | None = None
        self._frames = 0

    def _small_gray(self, image: np.ndarray, gray: np.ndarray | None) -> np.ndarray:
        width = self._settings.width
        source = gray if gray is not None else image
        h, w = source.shape[:2]
        if w > width:
            source = cv2.resize(source, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
        if source.ndim == 3:
            source = cv2.cvtColor(source, cv2.COLOR_BGR2GRAY)
        if self._settings.blur > 1:
            source = cv2.GaussianBlur(source, (self._settings.blur, self._settings.blur), 0)
        return source

    def _watched(self, shape: tuple[int, ...]) -> np.ndarray | None:
        size = (shape[1], shape[0])
        if self._zones_for != size:
            self._zones = zone_mask(self._settings.zones, size)
            self._zones_for = size
        return self._zones

    def detect(self, image: np.ndarray, gray: np.ndarray | None = None, elapsed: float | None = None) -> MotionResult:
        """Compare one frame with the background and fold it in.

        ``image`` is the BGR frame (its size scales the boxes); ``gray`` an optional ready grey image
        of the same scene (the Pi's lores Y plane), used instead of converting ``image``. ``elapsed``
        is the time since the previous analysis: ``background_weight`` is the weight of a frame at
        30 frames/s, scaled to it, so the background forgets at the same speed in seconds whether
        motion is analysed 5 or 30 times a second. Without it each call counts as 1/30 s.
        """
        settings = self._settings
        small = self._small_gray(image, gray)
        if self._background is None or self._background.shape != small.shape:
            self._take_background(small)
            return MotionResult(motion=False, warming_up=settings.warmup_frames > 0)
        background = cv2.convertScaleAbs(self._background)
        matched, jumped = self._match_light(small, background, elapsed)
        self._frames += 1
        if jumped >= LIGHT_STEP_CELLS:
            return self._light_changed(small)
        delta = cv2.absdiff(matched, background)
        if self._noise is None or self._frames % NOISE_EVERY == 0:  # noise drifts slowly: sample it
            noise = cv2.mean(delta, mask=self._still)[0]
            self._noise = noise if self._noise is None else 0.7 * self._noise + 0.3 * noise
        threshold = max(float(settings.threshold), NOISE_FACTOR * self._noise)
        _, raw = cv2.threshold(delta, threshold, 255, cv2.THRESH_BINARY)
        watched = self._watched(small.shape)
        if watched is not None:
            raw = cv2.bitwise_and(raw, watched)
        watched_pixels = raw.size if watched is None else max(1, cv2.countNonZero(watched))
        if cv2.countNonZero(raw) > settings.lightswitch * watched_pixels:
            return self._light_changed(small)
        mask = cv2.morphologyEx(raw, cv2.MORPH_OPEN, self._kernel)
        changed = int(cv2.countNonZero(mask))
        # Grown by JOIN pixels, the mask serves twice: it joins the parts of one body into one box,
        # and it marks what the background learns slowly (with a margin around the moving body).
        grown = cv2.dilate(mask, self._kernel, iterations=JOIN) if changed else None
        self._learn(small, grown, elapsed)
        self.mask = mask
        if self._frames <= settings.warmup_frames:
            return MotionResult(motion=False, warming_up=True)
        area = changed / mask.size
        if changed == 0 or area < settings.min_area:
            return MotionResult(motion=False, area=area)
        score = min(1.0, cv2.sumElems(cv2.bitwise_and(delta, mask))[0] / changed / 255.0)
        # Per axis: a lores grey image may not have exactly the main stream's aspect ratio.
        sx, sy = image.shape[1] / small.shape[1], image.shape[0] / small.shape[0]
        assert grown is not None  # changed > 0
        contours, _ = cv2.findContours(grown, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        min_pixels = max(4.0, settings.min_area * mask.size / 4)
        boxes = []
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            inside = mask[y:y + h, x:x + w]
            if cv2.countNonZero(inside) < min_pixels:
                continue
            boxes.append(_scaled(cv2.boundingRect(inside), x, y, sx, sy))  # tight: without the dilation
        if not boxes:  # many specks, none large: still counts as the changed area says
            boxes.append(_scaled(cv2.boundingRect(mask), 0, 0, sx, sy))
        return MotionResult(motion=True, boxes=tuple(boxes), area=area, score=score)

    def _light_changed(self, small: np.ndarray) -> MotionResult:
        """The light jumped over much of the picture (a lamp, night mode, a flash): whatever moved in
        this frame cannot be told from it, so the frame becomes the background and the next one is
        compared with it."""
        self._take_background(small)
        self.mask = None
        return MotionResult(motion=False, light_change=True)

    def _take_background(self, small: np.ndarray) -> None:
        self._background = small.astype(np.float32)
        self._still = None
        self._gains = None
        self._noise = None
        self._frames = max(self._frames, 1)

    def _match_light(self, small: np.ndarray, background: np.ndarray,
                     elapsed: float | None) -> tuple[np.ndarray, float]:
        """``small`` with the light change since the background divided out, cell by cell, and the
        fraction of cells whose light jumped by more than ``LIGHT_STEP``."""
        h, w = small.shape
        cols, rows = GRID
        cw, ch = max(1, min(CELL_SAMPLES, w // cols)), max(1, min(CELL_SAMPLES, h // rows))
        half = (cw * cols, ch * rows)
        frame = cv2.resize(small, half, interpolation=cv2.INTER_AREA).astype(np.float32) + 8.0
        ratio = (cv2.resize(background, half, interpolation=cv2.INTER_AREA).astype(np.float32) + 8.0) / frame
        if self._still is not None and self._gains is not None:
            # Where something moved last frame, its pixels say nothing about the light: they vote for
            # the gain their cell had then, drawn a little towards the frame's typical gain (the median
            # cell's) each frame. Without the pull, a cell that stays covered keeps a gain taken while it
            # was covered, the matched frame stays wrong there, and so it stays "moving": a ghost.
            moving = cv2.resize(self._still, half, interpolation=cv2.INTER_NEAREST) == 0
            pull = _per_frame(GAIN_PULL, elapsed)
            votes = self._gains + pull * (float(np.median(self._gains)) - self._gains)
            np.copyto(ratio.reshape(rows, ch, cols, cw), votes[:, None, :, None],
                      where=moving.reshape(rows, ch, cols, cw))
        # The median, not the mean: a car or a person covering less than half a cell leaves it alone.
        gains = np.median(ratio.reshape(rows, ch, cols, cw).transpose(0, 2, 1, 3).reshape(rows, cols, ch * cw),
                          axis=2)
        self._gains = gains
        change = np.abs(gains - 1.0)
        jumped = float(np.count_nonzero(change > LIGHT_STEP)) / gains.size
        if float(change.max()) < 0.05:
            return small, jumped  # the light is as it was: nothing to correct
        field = cv2.resize(np.clip(gains, 0.2, 5.0), (w, h), interpolation=cv2.INTER_LINEAR)
        return cv2.convertScaleAbs((small.astype(np.float32) + 8.0) * field - 8.0), jumped

    def _learn(self, small: np.ndarray, moving: np.ndarray | None, elapsed: float | None) -> None:
        """Fold the frame into the background: still pixels at the full weight, ``moving`` ones slowly
        (None: nothing moved, every pixel is still)."""
        assert self._background is not None
        weight = self._settings.background_weight
        if moving is None:
            cv2.accumulateWeighted(small, self._background, _per_frame(weight, elapsed))
            self._still = None
            return
        still = cv2.bitwise_not(moving)
        cv2.accumulateWeighted(small, self._background, _per_frame(weight, elapsed), mask=still)
        cv2.accumulateWeighted(small, self._background, _per_frame(weight * MOVING_SLOWDOWN, elapsed), mask=moving)
        self._still = still

def _per_frame(weight: float, elapsed: float | None) -> float:
    """``weight``, given for a frame at 30 frames/s, for a frame ``elapsed`` seconds after the last."""
    if elapsed is None or elapsed <= 0:
        return weight
    return 1.0 - (1.0 - weight) ** min(elapsed * REFERENCE_FPS, 1000.0)


def _scaled(rect: tuple[int, int, int, int], dx: int, dy: int, sx: float, sy: float) -> Box:
    x, y, w, h = rect
    return Box(int((x + dx) * sx), int((y + dy) * sy), int(np.ceil(w * sx)), int(np.ceil(h * sy)))
