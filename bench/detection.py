"""Object detection: what it costs and what it finds, on real footage, at the appliance's defaults.

    python bench/detection.py [--highway DIR] [--footage DIR] [--models DIR] [--live-seconds S]

Needs the model (``python -m appliance install-model``; ``--models`` names another folder), Debian's
``opencv-doc`` videos (``--footage``, default ``/usr/share/doc/opencv-doc/examples/data``) and CDnet
2014's ``baseline/highway`` (``--highway``, default ``../shared/data/cdnet2014-highway``): Y. Wang,
P.-M. Jodoin, F. Porikli, J. Konrad, Y. Benezeth, P. Ishwar, "CDnet 2014: An Expanded Change Detection
Benchmark Dataset", IEEE CVPR Workshops, 2014. Everything is read where it is, never copied.

1. **Cost**: the model's time per detection (median, thread CPU and wall, one thread), on the motion
   square and on the whole frame; the share of a core that makes at ``detection.fps``.
2. **Quality**, replayed offline with the appliance's own parts and gating (``MotionDetector`` at
   ``motion.fps``, events, the model at ``detection.fps`` only while motion is seen, ``ObjectTracker``),
   frame by frame at each clip's own rate, so figures do not depend on this machine's speed:
   - ``vtest.avi`` (people walking past a parked van and car): person objects that alerted, against
     the person objects an every-frame, whole-frame pass finds (there is no hand-made ground truth:
     that pass is the reference); vehicle alerts (the parked ones must raise none);
   - CDnet highway: car objects that alerted, and at each detection the share of ground-truth
     vehicles (connected moving areas of at least 0.2 % of the frame) that a car box covers;
   - ``tree.avi`` (68 frames, looped to 30 s) and the light-change clips of ``bench/motion_quality.py``
     (a lamp, a night-mode switch, an exposure ramp, noise and flicker): object alerts (must be none).
3. **Live**: the appliance itself on ``vtest.avi`` for ``--live-seconds``: the detector thread's share
   of a core (its CPU time from ``/proc``), and resident memory with detection off and on (each in a
   fresh process).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance.config import DEFAULT_LABELS, DEFAULT_MODEL, AppConfig, DetectionSettings  # noqa: E402
from appliance.detection.model import SsdModel, region_for  # noqa: E402
from appliance.detection.objects import ObjectTracker  # noqa: E402
from appliance.motion.detector import MotionDetector  # noqa: E402
from appliance.motion.events import Box, MotionEventTracker  # noqa: E402
from bench.motion_quality import background_of, clips, load  # noqa: E402

VEHICLES = ("car", "truck", "bus")


def read_video(path: Path, limit: int | None = None) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while limit is None or len(frames) < limit:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


@dataclass
class Replay:
    """What one clip made of the appliance's detection, replayed at the clip's own rate."""

    alerts: dict[str, int]  # objects that alerted, per label
    detections: int
    covered: list[float]  # highway only: per detection, the share of ground-truth vehicles covered


def replay(frames: list[np.ndarray], fps: float, model: SsdModel, settings: DetectionSettings,
           every_frame: bool = False, truth: list[np.ndarray] | None = None) -> Replay:
    """The pipeline's gating and the detector's thread, frame by frame; ``every_frame``: the reference
    pass (the model on every frame, the whole frame, no motion gating)."""
    config = AppConfig()
    motion = MotionDetector(config.motion)
    events = MotionEventTracker(config.motion.start_frames, config.motion.event_gap)
    tracker = ObjectTracker(settings.objects, settings.stationary_seconds, settings.lost_seconds)
    min_score = min(rule.min_score for rule in settings.objects.values())
    alerts: dict[str, int] = {}
    covered: list[float] = []
    next_motion = next_detection = 0.0
    result = None
    detections = 0
    for index, frame in enumerate(frames):
        now = index / fps
        if now >= next_motion:
            next_motion += 1 / config.motion.fps
            result = motion.detect(frame, None, 1 / config.motion.fps)
            events.update(result, now)
        active = result is not None and (result.motion or events.current is not None)
        if not every_frame and not (active and now >= next_detection):
            tracker.expire(now)
            continue
        next_detection = max(next_detection + 1 / settings.fps, now)
        size = (frame.shape[1], frame.shape[0])
        region = region_for(result.boxes if (result and settings.region == "motion" and not every_frame) else (),
                            size, max(model.input_size))
        found = model.detect(frame, region, min_score)
        detections += 1
        for kind, obj in tracker.update(found, size, now, None):
            if kind == "alert":
                alerts[obj.label] = alerts.get(obj.label, 0) + 1
        if truth is not None:
            covered.extend(_covered(truth[index], [d.box for d in found if d.label in VEHICLES]))
    return Replay(alerts, detections, covered)


def _covered(gt: np.ndarray, boxes: Iterable[Box]) -> list[float]:
    """For one frame with ground truth: 1.0 per moving area a vehicle box holds the centre of, else 0.0."""
    count, _, stats, centres = cv2.connectedComponentsWithStats((gt == 255).astype(np.uint8))
    minimum = 0.002 * gt.size
    hits = []
    for label in range(1, count):
        if stats[label, cv2.CC_STAT_AREA] < minimum:
            continue
        cx, cy = centres[label]
        hits.append(1.0 if any(b.x <= cx <= b.x + b.w and b.y <= cy <= b.y + b.h for b in boxes) else 0.0)
    return hits


def _in_corner(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``frame`` at the bottom right of a still grey picture of ``size``."""
    width, height = size
    canvas = np.full((height, width, 3), 96, np.uint8)
    canvas[height - frame.shape[0]:, width - frame.shape[1]:] = frame
    return canvas


def cost(model: SsdModel, frames: list[np.ndarray], runs: int = 60) -> dict[str, float]:
    """Median ms per detection (thread CPU and wall) on a motion square and on the whole frame."""
    figures = {}
    for name in ("motion", "frame"):
        cpu, wall = [], []
        for index in range(runs):
            frame = frames[(index * 7) % len(frames)]
            size = (frame.shape[1], frame.shape[0])
            moving = () if name == "frame" else (Box(size[0] // 3, size[1] // 3, size[0] // 10, size[1] // 5),)
            region = region_for(moving, size, max(model.input_size))
            started_cpu, started = time.thread_time(), time.perf_counter()
            model.detect(frame, region, 0.5)
            cpu.append(time.thread_time() - started_cpu)
            wall.append(time.perf_counter() - started)
        figures[f"{name}_cpu_ms"] = round(statistics.median(cpu) * 1000, 1)
        figures[f"{name}_wall_ms"] = round(statistics.median(wall) * 1000, 1)
    return figures


LIVE = """
import json, os, sys, threading, time
from appliance.config import AppConfig
from appliance.runtime import Appliance
on, source, models, seconds = sys.argv[1] == "on", sys.argv[2], sys.argv[3], float(sys.argv[4])
config = AppConfig.model_validate({"camera": {"backend": "opencv", "device": source}, "state_dir": sys.argv[5],
    "server": {"host": "127.0.0.1", "port": 0}, "events": {"clip": {"enabled": False}},
    "detection": {"enabled": on, "model": models + "/mobilenet_ssd_v2_coco_quant_postprocess.tflite"}})
app = Appliance(config)
app.start()
app.controller.on()
threading.Event().wait(seconds)
def thread_cpu(name):
    total = 0.0
    for thread in threading.enumerate():
        if thread.name == name and thread.native_id is not None:
            fields = open(f"/proc/self/task/{thread.native_id}/stat").read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total
rss = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS"))
stats = app.detection.stats() if app.detection else None
print(json.dumps({"rss_mib": round(rss / 1024, 1), "detector_cpu_s": thread_cpu("detector"),
                  "capture_cpu_s": thread_cpu("capture"), "seconds": seconds,
                  "detections": stats.detections if stats else 0, "ms": stats.ms_mean if stats else None}))
app.stop()
"""


def live(footage: Path, models: Path, seconds: float, on: bool) -> dict[str, float]:
    import tempfile

    with tempfile.TemporaryDirectory() as state:
        result = subprocess.run([sys.executable, "-c", LIVE, "on" if on else "off", str(footage / "vtest.avi"),
                                 str(models), str(seconds), state], capture_output=True, text=True, cwd=ROOT,
                                env={**os.environ, "MALLOC_ARENA_MAX": "2"}, timeout=seconds + 120, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--highway", type=Path, default=ROOT.parent / "shared" / "data" / "cdnet2014-highway")
    parser.add_argument("--footage", type=Path, default=Path("/usr/share/doc/opencv-doc/examples/data"))
    parser.add_argument("--models", type=Path, default=Path.home() / ".cache" / "appliance-tests" / "models")
    parser.add_argument("--live-seconds", type=float, default=30.0)
    args = parser.parse_args()
    model_path = args.models / DEFAULT_MODEL
    model = SsdModel(model_path, args.models / DEFAULT_LABELS, threads=1)
    settings = DetectionSettings()
    print(f"model {DEFAULT_MODEL}, sha256 {hashlib.sha256(model_path.read_bytes()).hexdigest()}, "
          f"input {model.input_size[0]}x{model.input_size[1]}; defaults: {settings.fps:g} detections/s at most, "
          f"region {settings.region}, labels {', '.join(settings.objects)}")

    vtest = read_video(args.footage / "vtest.avi")
    spent = cost(model, vtest)
    print("\ncost per detection, one thread (median of 60, vtest 768x576):")
    print(f"  motion square: {spent['motion_cpu_ms']} ms CPU, {spent['motion_wall_ms']} ms wall; whole frame: "
          f"{spent['frame_cpu_ms']} ms CPU, {spent['frame_wall_ms']} ms wall")
    share = spent["motion_cpu_ms"] / 1000 * settings.fps
    print(f"  at {settings.fps:g}/s while motion is seen: {share:.1%} of a core here; a Pi Zero 2 W core, roughly "
          f"10x slower (FIELD-NOTES), would spend ~{min(1.0, 10 * share):.0%} of one of its four")

    wanted = {label: {} for label in ("person", *VEHICLES, "dog", "cat")}
    every = DetectionSettings(objects=wanted)
    print("\nquality, replayed at each clip's own rate (alerts are objects, not frames):")
    for region in ("motion", "frame"):
        chosen = DetectionSettings(objects=wanted, region=region)
        ours = replay(vtest, 10.0, model, chosen)
        print(f"  vtest.avi, region {region}: person objects alerted {ours.alerts.get('person', 0)}, "
              f"vehicle alerts {sum(ours.alerts.get(label, 0) for label in VEHICLES)}, other "
              f"{ {k: v for k, v in ours.alerts.items() if k not in ('person', *VEHICLES)} }, "
              f"{ours.detections} detections")
    # The same people in a 1920x1080 picture whose rest stands still (a wide view with the street in one
    # corner): squashed whole to 300x300 they are a few pixels tall; the motion square keeps them large.
    wide = [_in_corner(frame, (1920, 1080)) for frame in vtest]
    for region in ("motion", "frame"):
        ours = replay(wide, 10.0, model, DetectionSettings(objects=wanted, region=region))
        print(f"  vtest.avi in a corner of 1920x1080, region {region}: person objects alerted "
              f"{ours.alerts.get('person', 0)}, vehicle alerts {sum(ours.alerts.get(label, 0) for label in VEHICLES)}, "
              f"{ours.detections} detections")
    reference = replay(vtest, 10.0, model, every, every_frame=True)
    print(f"  vtest.avi, reference (every frame, whole frame): person objects {reference.alerts.get('person', 0)}, "
          f"vehicle alerts {sum(reference.alerts.get(label, 0) for label in VEHICLES)}, "
          f"{reference.detections} detections")
    highway = load(args.highway)
    for region in ("motion", "frame"):
        chosen = DetectionSettings(objects=wanted, region=region)
        ours = replay(highway.frames, 30.0, model, chosen, truth=highway.truth)
        share = statistics.mean(ours.covered) if ours.covered else 0.0
        print(f"  CDnet highway, region {region}: car objects alerted {ours.alerts.get('car', 0)} "
              f"(trucks {ours.alerts.get('truck', 0)}), ground-truth vehicles covered at a detection "
              f"{share:.0%} of {len(ours.covered)}, non-vehicle alerts "
              f"{sum(v for k, v in ours.alerts.items() if k not in VEHICLES)}, {ours.detections} detections")
    tree = read_video(args.footage / "tree.avi")
    looped = (tree * (1 + int(30 * 15 / max(1, len(tree)))))[: 30 * 15]
    quiet = {"tree.avi (30 s)": (looped, 15.0)}
    quiet.update({name: (frames, 30.0) for name, frames in clips(background_of(highway)).items()})
    for name, (frames, fps) in quiet.items():
        ours = replay(frames, fps, model, every)
        print(f"  {name}: object alerts {sum(ours.alerts.values())} {ours.alerts or ''}, {ours.detections} detections")

    print(f"\nlive, the appliance on vtest.avi for {args.live_seconds:g} s at the defaults (fresh process each):")
    off = live(args.footage, args.models, args.live_seconds, on=False)
    on = live(args.footage, args.models, args.live_seconds, on=True)
    print(f"  detector thread: {on['detector_cpu_s'] / on['seconds']:.1%} of a core ({on['detections']} detections, "
          f"{on['ms']} ms each); capture thread {on['capture_cpu_s'] / on['seconds']:.1%} on, "
          f"{off['capture_cpu_s'] / off['seconds']:.1%} off")
    print(f"  resident memory: {off['rss_mib']} MiB off, {on['rss_mib']} MiB on "
          f"(+{on['rss_mib'] - off['rss_mib']:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
