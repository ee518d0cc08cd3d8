"""An SSD detector in TFLite on ai-edge-litert: picture in, labelled boxes out.

The model is Google Coral's SSD-MobileNet-V2 COCO, quantised to 8 bits with its post-processing built
in (6.2 MB, ``install``): one invoke gives boxes, classes, scores and a count. ai-edge-litert is the
TFLite runtime Google keeps on PyPI (aarch64 wheels for Raspberry Pi OS's Pythons; OpenCV cannot read
the model). Any SSD-style TFLite model with a ``1xHxWx3`` uint8 input and those four outputs works,
with its own labels file.

Everything that can be wrong with a model shows at ``load``, before the camera starts: a missing file
or runtime, a file that is not a TFLite model, a model that is not shaped like an SSD, an operator the
runtime lacks (an Edge TPU build). One invoke on a blank picture proves it runs. The TFLite runtime
does not check a file fully before it trusts it: a damaged one can abort the whole process. So a file
that is not the pinned model (its SHA-256 differs) is first loaded in a child process
(``load_checked``); only if the child loads and runs it does the appliance load it itself.
"""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from appliance.camera_backends.yuv import I420, size_of
from appliance.detection.install import MODEL_SHA256
from appliance.detection.objects import Detection
from appliance.motion.events import Box

INSTALL_COMMAND = "python -m appliance install-model"
CHILD_TIMEOUT = 120.0
"""s the child may take to load a model and run it once (a Pi Zero 2 W takes a few)."""
CHILD = """
import sys
from pathlib import Path
from appliance.detection.model import ModelError, SsdModel
try:
    SsdModel(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
except ModelError as exc:
    print(exc, file=sys.stderr)
    sys.exit(3)
"""
EDGE_MARGIN = 0.01
"""A box within this fraction of a crop's inner edge is cut by the crop: its object is partly outside."""


class ModelError(Exception):
    """The model cannot be used; the message says what is missing or wrong and how to put it right."""


def read_labels(path: Path) -> dict[int, str]:
    """Labels by class id: ``id name`` lines (Coral's files, ids may skip), or one name a line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(f"cannot read the labels file {path}: {exc.strerror or exc} (install it with "
                         f"`{INSTALL_COMMAND}` or set detection.labels)") from None
    labels: dict[int, str] = {}
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    numbered = all(re.match(r"^\d+\s+\S", line) for line in lines)
    for index, line in enumerate(lines):
        if numbered:
            number, name = line.split(maxsplit=1)
            labels[int(number)] = name.strip().lower()
        else:
            labels[index] = line.lower()
    if not labels:
        raise ModelError(f"the labels file {path} names no labels")
    return labels


@dataclass(frozen=True)
class Region:
    """The part of the frame given to the model, in the frame's pixels."""

    x: int
    y: int
    w: int
    h: int

    def touches_inside(self, box: Box, size: tuple[int, int]) -> bool:
        """Whether ``box`` reaches an edge of this region that is not an edge of the frame."""
        margin = EDGE_MARGIN * max(self.w, self.h)
        width, height = size
        return ((self.x > 0 and box.x <= self.x + margin) or (self.y > 0 and box.y <= self.y + margin)
                or (self.x + self.w < width and box.x + box.w >= self.x + self.w - margin)
                or (self.y + self.h < height and box.y + box.h >= self.y + self.h - margin))


def region_for(motion: tuple[Box, ...], size: tuple[int, int], smallest: int) -> Region:
    """A square around the moving areas with a margin, at least ``smallest`` pixels, inside the frame;
    the whole frame when that square would cover most of it anyway (or nothing moved)."""
    width, height = size
    if not motion:
        return Region(0, 0, width, height)
    union = motion[0]
    for box in motion[1:]:
        union = union.union(box)
    side = int(max(union.w, union.h) * 1.5)
    side = max(side, smallest)
    if side * side >= 0.5 * width * height or side >= min(width, height):
        return Region(0, 0, width, height)
    side += side % 2  # even, as a 4:2:0 picture's planes are cut
    cx, cy = union.x + union.w // 2, union.y + union.h // 2
    x = min(max(0, cx - side // 2), width - side) & ~1
    y = min(max(0, cy - side // 2), height - side) & ~1
    return Region(x, y, side, side)


def load_checked(model_path: Path, labels_path: Path, threads: int = 1) -> SsdModel:
    """``SsdModel(...)``, but a file other than the pinned model is tried in a child process first, so a
    damaged one that would abort the runtime becomes a ``ModelError`` instead of a dead appliance."""
    try:
        data: bytes | None = model_path.read_bytes()
    except OSError:
        data = None  # SsdModel says what is wrong with reading it
    # The pinned model (install-model's, known to load) needs no trial in a child.
    if data is not None and hashlib.sha256(data).hexdigest() != MODEL_SHA256:
        try:
            child = subprocess.run([sys.executable, "-c", CHILD, str(model_path), str(labels_path), str(threads)],
                                   capture_output=True, text=True, timeout=CHILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise ModelError(f"{model_path} did not load within {CHILD_TIMEOUT:.0f} s") from None
        if child.returncode == 3:
            raise ModelError(child.stderr.strip().splitlines()[-1] if child.stderr.strip() else "unusable model")
        if child.returncode != 0:
            how = (f"signal {signal.Signals(-child.returncode).name}" if child.returncode < 0
                   else f"exit status {child.returncode}")
            raise ModelError(f"{model_path} crashed the TFLite runtime as it loaded ({how}): the file is damaged "
                             f"or not a model for it (install the model again with `{INSTALL_COMMAND}`)")
    return SsdModel(model_path, labels_path, threads, data)


class SsdModel:
    """A loaded, checked SSD model; ``detect`` runs it on one region of one frame (one thread at a time)."""

    def __init__(self, model_path: Path, labels_path: Path, threads: int = 1, data: bytes | None = None) -> None:
        """``data``: the file's bytes when the caller has read them already."""
        self.path = model_path
        try:
            data = model_path.read_bytes() if data is None else data
        except OSError as exc:
            raise ModelError(f"cannot read the detection model {model_path}: {exc.strerror or exc} (install it "
                             f"with `{INSTALL_COMMAND}` or set detection.model)") from None
        self.labels = read_labels(labels_path)
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise ModelError(f"the TFLite runtime is missing ({exc}): install the Python package ai-edge-litert "
                             "(it is in the locks: scripts/run.sh, or pip install ai-edge-litert)") from None
        try:
            self._interpreter: Any = Interpreter(model_content=data, num_threads=threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{model_path} is not a TFLite model this runtime can run: {first}") from None
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        shape = tuple(int(n) for n in inputs[0]["shape"]) if len(inputs) == 1 else ()
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or inputs[0]["dtype"] != np.uint8:
            raise ModelError(f"{model_path} is not an SSD model for this appliance: it takes "
                             f"{[(tuple(i['shape']), np.dtype(i['dtype']).name) for i in inputs]}, not one "
                             "1xHxWx3 uint8 picture")
        shapes = [tuple(int(n) for n in out["shape"]) for out in outputs]
        if len(outputs) != 4 or len(shapes[0]) != 3 or shapes[0][2] != 4 or shapes[3] != (1,):
            raise ModelError(f"{model_path} is not an SSD model with built-in post-processing: its outputs are "
                             f"{shapes}, not boxes (1xNx4), classes, scores and a count")
        self._input = inputs[0]["index"]
        self._outputs = [out["index"] for out in outputs]
        self.input_size = (shape[2], shape[1])  # (w, h)
        try:
            self._run(np.zeros((shape[1], shape[2], 3), np.uint8))
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{model_path} does not run on this runtime: {exc}") from None

    def _run(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        self._interpreter.set_tensor(self._input, rgb[np.newaxis])
        self._interpreter.invoke()
        boxes, classes, scores, count = (self._interpreter.get_tensor(index) for index in self._outputs)
        return boxes[0], classes[0], scores[0], int(count[0])

    def detect(self, image: np.ndarray | I420, region: Region, min_score: float) -> list[Detection]:
        """Detections scoring at least ``min_score`` in ``region`` of ``image``, in the frame's pixels;
        boxes cut by an inner edge of the region are left out (their object is partly outside it)."""
        size = size_of(image)
        boxes, classes, scores, count = self._run(model_input(image, region, self.input_size))
        found = []
        for i in range(min(count, len(scores))):
            score = float(scores[i])
            label = self.labels.get(int(classes[i]))
            if score < min_score or label is None:
                continue
            y0, x0, y1, x1 = (float(v) for v in np.clip(boxes[i], 0.0, 1.0))
            box = Box(region.x + round(x0 * region.w), region.y + round(y0 * region.h),
                      max(1, round((x1 - x0) * region.w)), max(1, round((y1 - y0) * region.h)))
            if not region.touches_inside(box, size):
                found.append(Detection(label, score, box))
        return found


def model_input(image: np.ndarray | I420, region: Region, size: tuple[int, int]) -> np.ndarray:
    """``region`` of ``image`` scaled to the model's ``size``, as RGB: for I420 the planes are cropped
    and scaled first, so only the model's few pixels are converted to colour."""
    if isinstance(image, I420):
        x, y = region.x & ~1, region.y & ~1
        w, h = region.w & ~1, region.h & ~1
        width, height = size
        small = I420.blank(width + width % 2, height + height % 2)
        for plane, target, step in ((image.y, small.y, 1), (image.u, small.u, 2), (image.v, small.v, 2)):
            crop = plane[y // step:(y + h) // step, x // step:(x + w) // step]
            cv2.resize(crop, (target.shape[1], target.shape[0]), dst=target, interpolation=cv2.INTER_AREA)
        rgb = cv2.cvtColor(small.bgr(), cv2.COLOR_BGR2RGB)
        return np.ascontiguousarray(rgb[:height, :width])
    crop = image[region.y:region.y + region.h, region.x:region.x + region.w]
    return cv2.cvtColor(cv2.resize(crop, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
