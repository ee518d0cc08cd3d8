"""Server CPU, per-viewer frame rate and JPEG encodes per second for 0, 1, 4 and 16 viewers.

Runs the real appliance as a subprocess (synthetic camera, 1280x720 at 30 fps by default) and
attaches viewers on loopback from this process. CPU is read from /proc for the server process only.
Compare rows as ratios within one run: the machine is shared and absolute figures drift.

    python bench/viewers.py [--size 1280x720] [--fps 30] [--seconds 6] [--viewers 0 1 4 16]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


class Viewer(threading.Thread):
    """Reads one MJPEG stream and counts parts by their Content-Length headers."""

    def __init__(self, base: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.stop = stop
        self.frames = 0
        self.ready = threading.Event()

    def run(self) -> None:
        with requests.get(self.base + "/stream.mjpg", stream=True, timeout=10) as response:
            response.raise_for_status()
            raw = response.raw
            self.ready.set()
            while not self.stop.is_set():
                line = raw.readline()
                if not line:
                    return
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                    raw.readline()
                    raw.read(length)
                    self.frames += 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=float, default=30)
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--viewers", type=int, nargs="+", default=[0, 1, 4, 16])
    args = parser.parse_args()

    port = free_port()
    state = tempfile.mkdtemp(prefix="bench-state-")
    env = {**os.environ, "APPLIANCE_STATE_DIR": state, "APPLIANCE_LOG_LEVEL": "WARNING",
           "APPLIANCE_STREAM__MAX_VIEWERS": str(max(args.viewers) + 4)}
    cmd = [sys.executable, "-m", "appliance", "--camera", "synthetic", "--size", args.size,
           "--fps", str(args.fps), "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(cmd, cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                requests.get(base + "/healthz", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)  # bench only: waiting for a subprocess to bind its port
        requests.put(base + "/api/camera", json={"on": True}, timeout=30).raise_for_status()
        time.sleep(2)  # bench only: let the motion warm-up and frame rate settle
        print(f"appliance: synthetic {args.size} @ {args.fps:g} fps, {args.seconds:g} s per row")
        print(f"{'viewers':>7} {'server CPU %':>12} {'fps/viewer':>10} {'encodes/s':>9} {'captured/s':>10}")
        for count in args.viewers:
            stop = threading.Event()
            viewers = [Viewer(base, stop) for _ in range(count)]
            for viewer in viewers:
                viewer.start()
            for viewer in viewers:
                viewer.ready.wait(10)
            time.sleep(1)  # bench only: connections settle before measuring
            before = requests.get(base + "/api/status", timeout=5).json()
            frames_before = [v.frames for v in viewers]
            cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
            time.sleep(args.seconds)
            cpu1, t1 = cpu_seconds(server.pid), time.monotonic()
            after = requests.get(base + "/api/status", timeout=5).json()
            elapsed = t1 - t0
            per_viewer = [(v.frames - f0) / elapsed for v, f0 in zip(viewers, frames_before, strict=True)]
            fps = sum(per_viewer) / len(per_viewer) if per_viewer else 0.0
            encodes = (after["frames_encoded"] - before["frames_encoded"]) / elapsed
            captured = (after["frames_captured"] - before["frames_captured"]) / elapsed
            print(f"{count:>7} {100 * (cpu1 - cpu0) / elapsed:>12.1f} {fps:>10.1f} {encodes:>9.1f} {captured:>10.1f}")
            stop.set()
            for viewer in viewers:
                viewer.join(5)
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
