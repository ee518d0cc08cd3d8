"""The original demo's approach, rebuilt as a benchmark peer: one global camera thread, and every
viewer running its own loop that takes the newest frame, runs motion detection (blur 7, threshold 25,
its own running average), draws the box and the time, and encodes, as fast as it can, whether the
frame is new or not. The state lives in globals, as it did. It serves the same demo camera as the
appliance, so benchmarks compare the two approaches on the same frames.

    python bench/demo_original.py --port 8001 [--size 640x360] [--fps 30]
"""

from __future__ import annotations

import argparse
import http.server
import socketserver
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.camera_backends.synthetic import SyntheticCamera
from appliance.config import CameraSettings

latest_frame: np.ndarray | None = None  # the demo's globals, kept as they were
camera_on = True


def camera_loop(camera: SyntheticCamera) -> None:
    global latest_frame
    camera.open()
    while camera_on:
        latest_frame = camera.read(5.0).image


class Viewer(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        background = None
        try:
            while True:  # the busy loop: no waiting for a new frame
                frame = latest_frame
                if frame is None:
                    continue
                image = frame.copy()
                gray = cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (7, 7), 0)
                if background is None:
                    background = gray.astype("float")
                cv2.accumulateWeighted(gray, background, 0.1)
                delta = cv2.absdiff(gray, cv2.convertScaleAbs(background))
                mask = cv2.dilate(cv2.threshold(delta, 25, 255, cv2.THRESH_BINARY)[1], None, iterations=2)
                contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                for contour in contours:
                    if cv2.contourArea(contour) > 500:
                        x, y, w, h = cv2.boundingRect(contour)
                        cv2.rectangle(image, (x, y), (x + w, y + h), (0, 255, 0), 2)
                cv2.putText(image, time.strftime("%Y-%m-%d %H:%M:%S"), (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8,
                            (255, 255, 255), 2)
                jpeg = cv2.imencode(".jpg", image)[1].tobytes()
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                 + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
        except OSError:
            return


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--fps", type=float, default=30)
    args = parser.parse_args()
    camera = SyntheticCamera(CameraSettings(size=args.size, fps=args.fps, synthetic={"objects": 3}))
    threading.Thread(target=camera_loop, args=(camera,), daemon=True).start()
    server = Server(("127.0.0.1", args.port), Viewer)
    print("serving", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
