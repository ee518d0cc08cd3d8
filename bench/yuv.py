"""What a delivered 720p frame costs the capture thread on the Pi camera's path, stage by stage: the
old BGR path (buffer made BGR, overlay on BGR, JPEG from BGR, H.264 input made from BGR) against the
YUV path (buffer copied into I420 planes, overlay on the planes, JPEG from the planes, H.264 input a
range table over the planes). Motion is analysed on the lores Y plane in both (the Pi gives it free).

Frames are CDnet 2014's highway scene (real traffic) scaled to 1280x720 and laid out as the camera's
buffers: YUV420 as a Pi's ISP gives them (``--layout NV12``: as libcamera's virtual camera does). Both paths run
the same frames in one process, interleaved in rounds so a noisy neighbour hurts them alike; compare
the two columns of a row as a ratio. Each stage is timed twice: in CPU time, the process's, so the
work OpenCV's own worker threads do (and their spinning after a parallel call) counts, which is
what a frame costs a Pi; and in wall time, which a second idle core makes look cheaper for the
parallel conversions of the BGR path. Means are per frame the camera delivers, at the defaults: the
H.264 encoder takes every frame (the MP4 event clips' pre-roll), motion runs at its own rate, and the
overlay and JPEG only while someone watches. The last rows add the stages up for a camera nobody
watches (events recording), one a viewer watches, and one with MJPEG alone.

    python bench/yuv.py ../shared/data/cdnet2014-highway [--rounds 5] [--frames 60] [--layout YUV420|NV12]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.camera_backends.pi_camera import lores_size
from appliance.camera_backends.yuv import I420, from_bgr, from_buffer
from appliance.capture.encoder import choose_encoder, planes_encoder
from appliance.capture.overlay import draw_overlay
from appliance.config import CameraSettings, MotionSettings, OverlaySettings
from appliance.motion.detector import MotionDetector

SIZE = (1280, 720)
OLD_CONVERSION = {"YUV420": cv2.COLOR_YUV2BGR_I420, "NV12": cv2.COLOR_YUV2BGR_NV12}
"""How the Pi backend made each frame BGR before the YUV path (``to_bgr``, now for RGB formats only)."""
QUALITY = 80


def camera_buffer(image: np.ndarray, layout: str) -> np.ndarray:
    """The camera's buffer for a BGR frame (full range, sYCC): the Y plane, then U and V one after the
    other (``YUV420``, a Pi's ISP) or interleaved (``NV12``, libcamera's virtual camera)."""
    picture = from_bgr(image)
    width, height = SIZE
    buffer = np.empty(height * width * 3 // 2, np.uint8)
    buffer[:height * width] = picture.y.reshape(-1)
    if layout == "YUV420":
        buffer[height * width:] = picture.data.reshape(-1)[height * width:]
    else:
        pairs = buffer[height * width:].reshape(height // 2, width // 2, 2)
        pairs[..., 0], pairs[..., 1] = picture.u, picture.v
    return buffer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="CDnet 2014 baseline/highway folder")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--layout", choices=("YUV420", "NV12"), default="YUV420")
    args = parser.parse_args()
    names = sorted((args.dataset / "input").glob("in*.jpg"))[400:400 + args.frames]
    if not names:
        raise SystemExit(f"{args.dataset} does not hold CDnet's highway frames (input/in*.jpg)")
    buffers = [camera_buffer(cv2.resize(cv2.imread(str(name)), SIZE, interpolation=cv2.INTER_CUBIC), args.layout)
               for name in names]
    motion = MotionSettings()
    camera_fps = CameraSettings().fps
    every = max(1, round(camera_fps / motion.fps))  # motion runs at its own rate: one frame in ``every``
    lores = lores_size(SIZE)
    grays = [cv2.resize(buffer[:SIZE[0] * SIZE[1]].reshape(SIZE[1], SIZE[0]), lores, interpolation=cv2.INTER_AREA)
             for buffer in buffers]
    overlay = OverlaySettings()
    encoder_name, bgr_jpeg = choose_encoder("auto", QUALITY, SIZE)  # the old path's pick: the fastest from BGR
    planes_jpeg = planes_encoder("auto", QUALITY, bgr_jpeg)
    stamp = time.time()

    def bgr_stages() -> dict[str, Callable[[int], object]]:
        made: list[np.ndarray] = [np.empty(0)]
        detector = MotionDetector(motion)

        def capture(i: int) -> None:  # as the backend did before: the whole buffer made BGR at once
            made[0] = cv2.cvtColor(buffers[i].reshape(SIZE[1] * 3 // 2, SIZE[0]), OLD_CONVERSION[args.layout])

        return {"copy out of the buffer": capture,
                "motion (lores Y)": lambda i: i % every == 0 and detector.detect(made[0], grays[i]),
                "H.264 input (yuv420p)": lambda i: cv2.cvtColor(made[0].copy(), cv2.COLOR_BGR2YUV_I420),
                "overlay": lambda i: draw_overlay(made[0], stamp, None, overlay),
                "JPEG": lambda i: bgr_jpeg(made[0])}

    def yuv_stages() -> dict[str, Callable[[int], object]]:
        made: list[I420] = [I420.blank(*SIZE)]
        detector = MotionDetector(motion)

        def capture(i: int) -> None:  # into one picture reused frame after frame, as the Pi backend does
            made[0] = from_buffer(buffers[i], args.layout, SIZE, SIZE[0], full_range=True, into=made[0])

        return {"copy out of the buffer": capture,
                "motion (lores Y)": lambda i: i % every == 0 and detector.detect(made[0].y, grays[i]),
                "H.264 input (yuv420p)": lambda i: made[0].copy().video(),
                "overlay": lambda i: draw_overlay(made[0], stamp, None, overlay),
                "JPEG": lambda i: planes_jpeg(made[0])}

    paths = {"BGR": bgr_stages(), "YUV": yuv_stages()}
    clocks = {"CPU": time.process_time, "wall": time.perf_counter}
    times = {clock: {path: {stage: [] for stage in stages} for path, stages in paths.items()}
             for clock in clocks}  # type: dict[str, dict[str, dict[str, list[float]]]]
    for _ in range(args.rounds):
        for path, stages in paths.items():
            for i in range(len(buffers)):
                for stage, run in stages.items():
                    began = {clock: read() for clock, read in clocks.items()}
                    run(i)
                    for clock, read in clocks.items():
                        times[clock][path][stage].append(read() - began[clock])
    print(f"{len(buffers)} frames of CDnet highway at {SIZE[0]}x{SIZE[1]} in {args.layout} buffers, {args.rounds} "
          f"rounds, JPEG quality {QUALITY} (the BGR path's encoder: {encoder_name}), motion on one frame in "
          f"{every} (camera {camera_fps:g} fps, motion {motion.fps:g}); mean ms per delivered frame")
    rows = {**{stage: (stage,) for stage in paths["BGR"]},
            "a viewer watching": tuple(paths["BGR"]),
            "nobody watching": ("copy out of the buffer", "motion (lores Y)", "H.264 input (yuv420p)"),
            "MJPEG only (no H.264)": ("copy out of the buffer", "motion (lores Y)", "overlay", "JPEG")}
    print(f"{'':<24} {'CPU time':^28} {'wall time':^28}")
    print(f"{'stage':<24}" + f" {'BGR path':>9} {'YUV path':>9} {'BGR/YUV':>8}" * 2)
    for row, stages in rows.items():
        line = f"{row:<24}"
        for clock in clocks:
            sums = {path: sum(statistics.fmean(times[clock][path][stage]) * 1000 for stage in stages)
                    for path in paths}
            line += f" {sums['BGR']:>9.2f} {sums['YUV']:>9.2f} {sums['BGR'] / sums['YUV']:>7.2f}x"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
