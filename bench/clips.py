"""What recording event clips costs: the appliance's CPU, and the bytes a minute of event takes on disk.

Runs the whole appliance in this process with nobody watching, on a camera whose content is known,
four ways per camera: a still scene and a scene in motion, each with clips off and on. Per row it
prints the process's CPU in cores (from its own CPU clock, so the server, the capture thread and the
event writer are all counted), the stream and clip encodes per second, and, in motion, the clip's
bytes per minute of event. The difference between "clips on" and "clips off" is what recording costs:
in a still scene only the pre-roll ring (a resize and the overlay at the clip's rate, no encode), in
motion the clip's encodes and writes.

Cameras: the demo camera at 1280x720 (clips at 640x360) and, when DATASET_DIR is given, CDnet 2014's
highway sequence (real traffic, 320x240, looped; see the README for its citation).

Each configuration runs ``--passes`` times, interleaved, and the lowest CPU is kept: the machine is
shared, and noise only ever adds.

    python bench/clips.py [DATASET_DIR] [--seconds 8] [--passes 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance.camera_backends.base import CameraBackend, CameraError, Frame  # noqa: E402
from appliance.camera_backends.synthetic import SyntheticCamera  # noqa: E402
from appliance.config import AppConfig  # noqa: E402
from appliance.runtime import Appliance  # noqa: E402
from tests.helpers import FramePacer  # noqa: E402


class SequenceCamera(CameraBackend):
    """Frames from a folder of JPEGs, looped, at the camera's rate; ``still`` repeats the first."""

    name = "sequence"

    def __init__(self, frames: list[Any], fps: float, still: bool) -> None:
        self._frames = frames[:1] if still else frames
        self._pacer = FramePacer(fps)
        self._index = 0

    def open(self) -> None:
        self._pacer.open()

    def read(self, timeout: float) -> Frame:
        if not self._pacer.wait():
            raise CameraError("closed")
        image = self.picture(self._frames[self._index % len(self._frames)])
        self._index += 1
        return Frame(image=image, timestamp=time.time())

    def picture(self, frame: Any) -> np.ndarray:
        """The camera's own copy of a frame of the sequence (a subclass may decode or scale it)."""
        return frame.copy()

    def close(self) -> None:
        self._pacer.close()


def load_highway(dataset: Path) -> list[np.ndarray]:
    frames = []
    for number in range(470, 1701):  # the scored part of the sequence: traffic all the way
        image = cv2.imread(str(dataset / "input" / f"in{number:06d}.jpg"), cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"{dataset} does not hold CDnet's highway frames (input/in{number:06d}.jpg)")
        frames.append(image)
    return frames


def config(state: Path, size: str, fps: float, clips: bool, moving: bool) -> AppConfig:
    synthetic = {"objects": 3, "motion_period": 10.0, "motion_duration": 10.0 if moving else 0.0}
    return AppConfig.model_validate({
        "camera": {"backend": "synthetic", "size": size, "fps": fps, "synthetic": synthetic},
        "server": {"host": "127.0.0.1", "port": 0},
        "events": {"clip": {"enabled": clips}},
        "state_dir": str(state),
        "log_level": "WARNING",
    })


def run(cfg: AppConfig, backend: CameraBackend | None, moving: bool, seconds: float) -> dict[str, float]:
    """One configuration: start, let it settle (and, in motion, an event begin), then measure."""
    app = Appliance(cfg, backend=backend)
    app.start()
    try:
        requests.put(app.url + "/api/camera", json={"on": True}, timeout=30).raise_for_status()
        settle = time.monotonic() + 30
        while time.monotonic() < settle:  # warm-up, and in motion the event (so its clip) under way
            app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + int(cfg.camera.fps), timeout=5)
            if not moving or app.pipeline.stats().motion_active:
                break
        if moving and not app.pipeline.stats().motion_active:
            raise SystemExit("no motion event started: the bench's scene does not move")
        before = _sample(app)
        app.pipeline.wait_for_frames(before["frames"] + int(seconds * cfg.camera.fps), timeout=seconds * 3)
        after = _sample(app)
    finally:
        app.stop()
    wall = after["wall"] - before["wall"]
    return {"cores": (after["cpu"] - before["cpu"]) / wall,
            "encodes": (after["encoded"] - before["encoded"]) / wall,
            "clip_encodes": (after["clip_encoded"] - before["clip_encoded"]) / wall,
            "bytes_per_minute": (after["bytes"] - before["bytes"]) / wall * 60,
            "dropped": after["dropped"]}


def _sample(app: Appliance) -> dict[str, float]:
    stats = app.pipeline.stats()
    counters = app.recorder.counters()
    return {"wall": time.monotonic(), "cpu": time.process_time(), "frames": stats.frames_captured,
            "encoded": stats.frames_encoded, "clip_encoded": counters["frames_encoded"],
            "dropped": counters["frames_dropped"], "bytes": app.events.total_bytes()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", nargs="?", type=Path, help="CDnet 2014 baseline/highway folder")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--passes", type=int, default=2)
    args = parser.parse_args()
    cameras: list[tuple[str, str, float, Any]] = [("demo camera 1280x720 @15", "1280x720", 15.0, None)]
    if args.dataset:
        highway = load_highway(args.dataset)
        cameras.append(("CDnet highway 320x240 @15", "320x240", 15.0, highway))
    clip = AppConfig().events.clip
    print(f"clips at {clip.fps:g} fps, at most {clip.size[0]}x{clip.size[1]}, JPEG quality {clip.quality}, "
          f"pre-roll {clip.pre_seconds:g} s; nobody watching; best of {args.passes} passes of {args.seconds:g} s")
    print(f"{'camera':28} {'scene':7} {'clips':5} {'cores':>7} {'encodes/s':>9} {'clip enc/s':>10} "
          f"{'MB per min of event':>19}")
    for name, size, fps, frames in cameras:
        best: dict[tuple[bool, bool], dict[str, float]] = {}
        for _ in range(args.passes):
            for moving in (False, True):
                for clips in (False, True):
                    with tempfile.TemporaryDirectory() as state:
                        cfg = config(Path(state), size, fps, clips, moving)
                        backend = None if frames is None else SequenceCamera(frames, fps, still=not moving)
                        if backend is None:
                            backend = SyntheticCamera(cfg.camera)
                        result = run(cfg, backend, moving, args.seconds)
                    key = (moving, clips)
                    if key not in best or result["cores"] < best[key]["cores"]:
                        best[key] = result
        for moving in (False, True):
            for clips in (False, True):
                r = best[(moving, clips)]
                mb = f"{r['bytes_per_minute'] / 1e6:19.1f}" if moving and clips else f"{'':19}"
                print(f"{name:28} {'motion' if moving else 'still':7} {'on' if clips else 'off':5} "
                      f"{r['cores']:7.3f} {r['encodes']:9.1f} {r['clip_encodes']:10.1f} {mb}"
                      + (f"  ({int(r['dropped'])} clip frames dropped)" if r["dropped"] else ""))
            added = best[(moving, True)]["cores"] - best[(moving, False)]["cores"]
            print(f"{'':28} {'motion' if moving else 'still':7} recording adds {added:+.3f} cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
