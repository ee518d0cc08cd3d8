"""JPEG encode cost per frame: cv2.imencode against simplejpeg, from BGR and from YUV420 planes.

Frames come from the demo camera at each size; each encoder runs the same frames in one process,
interleaved in rounds so a noisy neighbour hurts them alike. Compare within a row, as ratios.

    python bench/encoders.py [--sizes 640x360 1280x720] [--rounds 5] [--frames 100] [--quality 80]
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

from appliance.camera_backends.synthetic import SyntheticCamera
from appliance.capture.encoder import opencv_encoder, simplejpeg_encoder
from appliance.config import CameraSettings


def yuv420_planes(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The I420 planes of a BGR frame, as the Pi camera's YUV420 main stream would deliver them."""
    h, w = image.shape[:2]
    yuv = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)
    return yuv[:h], yuv[h:h + h // 4].reshape(h // 2, w // 2), yuv[h + h // 4:].reshape(h // 2, w // 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["640x360", "1280x720"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--quality", type=int, default=80)
    args = parser.parse_args()
    import simplejpeg

    print(f"{'size':>9} {'cv2.imencode BGR':>17} {'simplejpeg BGR':>15} {'simplejpeg YUV420':>18}   ms per frame")
    for size in args.sizes:
        camera = SyntheticCamera(CameraSettings(size=size, fps=30, synthetic={"objects": 3}), paced=False)
        camera.open()
        frames = [camera.read(1.0).image for _ in range(10)]
        planes = [yuv420_planes(frame) for frame in frames]
        bgr_cv2, bgr_simplejpeg = opencv_encoder(args.quality), simplejpeg_encoder(args.quality)
        runs: dict[str, tuple[Callable[..., object], list[tuple[object, ...]]]] = {
            "cv2": (bgr_cv2, [(frame,) for frame in frames]),
            "simplejpeg BGR": (bgr_simplejpeg, [(frame,) for frame in frames]),
            "simplejpeg YUV": (lambda y, u, v: simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality=args.quality),
                               planes),
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, (encode, inputs) in runs.items():
                started = time.perf_counter()
                for i in range(args.frames):
                    encode(*inputs[i % len(inputs)])
                times[name].append(1000 * (time.perf_counter() - started) / args.frames)
        best = {name: statistics.median(values) for name, values in times.items()}
        print(f"{size:>9} {best['cv2']:>17.3f} {best['simplejpeg BGR']:>15.3f} {best['simplejpeg YUV']:>18.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
