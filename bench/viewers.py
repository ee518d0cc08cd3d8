"""What the appliance costs per viewer, against the limit its own stages set and the demo it replaced.

Runs the real appliance as a subprocess (demo camera, 30 fps), attaches viewers from **another
process** (raw HTTP/1.0 sockets read by one selector loop, which cost the same whichever server they
read from), and prints per row: the server's CPU in cores (from /proc), frames per second each viewer
got, encodes, captures and motion analyses per second, and the server's memory. Then:

- each stage's cost measured in isolation, in this process, with the appliance's own code: capture
  (the demo camera), the clip pre-roll, a clip frame's encode, motion, overlay, JPEG encode, and
  sending one part to one socket;
- the **limit** for each row: the sum of those stage costs times the rates the row really needed
  (captures, pre-roll frames, clip encodes, analyses, encodes, parts sent), and the ratio of the
  measured CPU to it. The demo's objects move 6 s of every 20 (set here, so figures stay comparable),
  so rows include motion events and their clips being recorded, as a garden camera's would;
- the same viewers on the **demo's original approach** (bench/demo_original.py), as a peer.

Compare within one run, as ratios: the machine is shared and absolute figures drift.

    python bench/viewers.py [--size 640x360] [--fps 30] [--seconds 5] [--viewers 0 1 4 16]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.broker import free_port  # noqa: E402
from tests.helpers import cpu_seconds  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def viewers_process(port: int, count: int, path: str, connected: Any, go: Any, seconds: float, out: Any) -> None:
    """In a child process: ``count`` raw viewers on one selector; parts each got during the window."""
    selector = selectors.DefaultSelector()
    counts = [0] * count
    tails = [b""] * count
    socks = []
    for index in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, index)
        socks.append(sock)
    connected.set()
    counting_until: float | None = None
    while counting_until is None or (remaining := counting_until - time.monotonic()) > 0:
        if counting_until is None and go.is_set():
            counting_until = time.monotonic() + seconds  # what arrived before the window is read, not counted
            remaining = seconds
        for key, _ in selector.select(remaining if counting_until is not None else 0.05):
            index = key.data
            try:
                data = key.fileobj.recv(1 << 20)  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            if not data:
                selector.unregister(key.fileobj)
                continue
            chunk = tails[index] + data
            if counting_until is not None:
                counts[index] += chunk.count(b"--frame\r\n")
            tails[index] = chunk[-9:]  # a boundary split across two reads is counted once
    for sock in socks:
        sock.close()
    out.put(counts)


def measure(pid: int, port: int, viewers: int, seconds: float, path: str = "/stream.mjpg",
            status: Callable[[], dict[str, Any]] | None = None) -> dict[str, float]:
    """One row: CPU of ``pid`` and frames per viewer over ``seconds`` with ``viewers`` attached."""
    context = multiprocessing.get_context("fork")
    connected, go, out = context.Event(), context.Event(), context.Queue()
    child = None
    if viewers:
        child = context.Process(target=viewers_process, args=(port, viewers, path, connected, go, seconds, out))
        child.start()
        connected.wait(30)
    threading.Event().wait(1.0)  # settle: connections made, first frames sent (a bench, not a test)
    before = status() if status else {}
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    go.set()
    if child is not None:
        counts = out.get(timeout=seconds + 30)
        child.join(10)
    else:
        counts = []
        threading.Event().wait(seconds)
    elapsed = time.monotonic() - t0
    cpu = (cpu_seconds(pid) - cpu0) / elapsed
    after = status() if status else {}
    row = {"viewers": viewers, "cores": cpu, "fps": sum(counts) / len(counts) / seconds if counts else 0.0,
           "sent": sum(counts) / seconds, "rss": rss_mib(pid)}
    for key in ("frames_encoded", "frames_captured", "frames_analysed"):
        row[key] = (after.get(key, 0) - before.get(key, 0)) / elapsed if status else 0.0
    for key, name in (("frames_taken", "clip_taken"), ("frames_encoded", "clip_encoded")):
        counts = [body.get("clips", {}).get(key, 0) for body in (before, after)]
        row[name] = (counts[1] - counts[0]) / elapsed if status else 0.0
    return row


def stage_costs(size: str, fps: float, viewers: int, seconds: float = 4.0) -> dict[str, float]:
    """Seconds of CPU per call of each stage, measured without the server at the pace the server runs them.

    One thread runs the smallest pipeline that could do the job with the appliance's own code: every
    1/fps it captures a demo frame, analyses every (fps / motion.fps)-th one, draws the overlay and
    encodes, then writes the part to ``viewers`` sockets. Each stage is timed on its own. It runs at
    the camera's pace, not in a tight loop: a stage that wakes 30 times a second pays for cold caches
    on every call, and so does any server. Hot-loop figures are printed next to these for reference.
    """
    from appliance.camera_backends.synthetic import SyntheticCamera
    from appliance.capture.clips import ClipTap
    from appliance.capture.encoder import choose_encoder
    from appliance.capture.overlay import draw_overlay
    from appliance.config import AppConfig
    from appliance.motion.detector import MotionDetector

    config = AppConfig.model_validate({"camera": {"size": size, "fps": fps, "synthetic": {"objects": 3}}})
    camera = SyntheticCamera(config.camera, paced=False)
    camera.open()
    detector = MotionDetector(config.motion)
    encoder_name, encode = choose_encoder(config.stream.encoder, config.camera.jpeg_quality, config.camera.size)
    jpeg = encode(camera.read(1.0).image)
    part = (f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
    pairs = [socket.socketpair() for _ in range(max(1, viewers))]
    drains = []
    for _, receiver in pairs:
        drain = threading.Thread(target=lambda r=receiver: [None for _ in iter(lambda: r.recv(1 << 20), b"")],
                                 daemon=True)
        drain.start()
        drains.append(drain)
    spent = {"capture": 0.0, "clip": 0.0, "clip_encode": 0.0, "motion": 0.0, "overlay": 0.0, "encode": 0.0,
             "send": 0.0}

    class NoSink:  # the pre-roll alone: nothing moves in the benchmark's rows that would need more
        def clip_begin(self, *_: Any) -> None: ...
        def clip_frame(self, *_: Any) -> None: ...
        def clip_end(self, *_: Any) -> None: ...

    tap = ClipTap(config.events.clip, config.overlay, NoSink())
    calls = dict.fromkeys(spent, 0)
    every = max(1, round(fps / config.motion.fps))

    def timed(stage: str, work: Callable[[], Any], count: int = 1) -> Any:
        started = time.thread_time()
        value = work()
        spent[stage] += time.thread_time() - started
        calls[stage] += count
        return value

    def pipeline(paced: bool, frames: int) -> None:
        for key in spent:
            spent[key], calls[key] = 0.0, 0
        tick = threading.Event()
        result = None
        due = time.monotonic()
        for index in range(frames):
            if paced:
                due += 1 / fps
                tick.wait(max(0.0, due - time.monotonic()))
            frame = timed("capture", lambda: camera.read(1.0))
            taken = tap.frames_taken  # the pre-roll takes a frame at the clip's rate (before the overlay)
            timed("clip", lambda f=frame, r=result, i=index: tap.offer(f, r, (), i / fps, True), count=0)
            calls["clip"] += tap.frames_taken - taken
            if tap.frames_taken > taken:  # as if recording: what the event writer does with a clip frame
                timed("clip_encode", lambda: encode(tap.last_taken()))
            if index % every == 0:
                result = timed("motion", lambda f=frame: detector.detect(f.image, None, every / fps))
            timed("overlay", lambda f=frame, r=result: draw_overlay(f.image, f.timestamp, r, config.overlay))
            timed("encode", lambda f=frame: encode(f.image))
            timed("send", lambda: [sender.sendall(part) for sender, _ in pairs], count=len(pairs))

    pipeline(paced=False, frames=int(fps))  # warm up: the background and the encoder settle
    pipeline(paced=False, frames=int(fps * 2))
    hot = {f"{name}_hot": spent[name] / max(1, calls[name]) for name in spent}
    pipeline(paced=True, frames=int(fps * seconds))
    costs = {name: spent[name] / max(1, calls[name]) for name in spent} | hot
    for sender, _ in pairs:
        sender.close()
    for drain in drains:
        drain.join(5)
    for _, receiver in pairs:
        receiver.close()
    costs["jpeg_kib"] = len(jpeg) / 1024
    costs["encoder"] = encoder_name  # type: ignore[assignment]
    return costs


def limit(row: dict[str, float], costs: dict[str, float]) -> float:
    """Cores the row needs at least: each stage's cost times the rate the row really used."""
    return (row["frames_captured"] * costs["capture"] + row["frames_analysed"] * costs["motion"]
            + row["clip_taken"] * costs["clip"] + row["clip_encoded"] * costs["clip_encode"]
            + row["frames_encoded"] * (costs["overlay"] + costs["encode"]) + row["sent"] * costs["send"])


def start(cmd: list[str], env: dict[str, str], ready: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if ready in line:
            threading.Thread(target=lambda: [None for _ in proc.stdout or ()], daemon=True).start()
            return proc
    raise RuntimeError(f"{cmd[1]} did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--fps", type=float, default=30)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--viewers", type=int, nargs="+", default=[0, 1, 4, 16])
    parser.add_argument("--no-demo", action="store_true", help="skip the demo's original approach")
    args = parser.parse_args()

    costs = stage_costs(args.size, args.fps, max(args.viewers))
    port = free_port()
    env = {**os.environ, "APPLIANCE_STATE_DIR": tempfile.mkdtemp(prefix="bench-state-"),
           "APPLIANCE_STREAM__MAX_VIEWERS": str(max(args.viewers) + 4), "MALLOC_ARENA_MAX": "2",
           "APPLIANCE_CAMERA__SYNTHETIC__MOTION_PERIOD": "20"}
    server = start([sys.executable, "-m", "appliance", "--camera", "synthetic", "--size", args.size, "--fps",
                    str(args.fps), "--host", "127.0.0.1", "--port", str(port)], env, "serving on")
    base = f"http://127.0.0.1:{port}"

    def status() -> dict[str, Any]:
        return requests.get(base + "/api/status", timeout=10).json()

    rows = []
    try:
        rows.append({**measure(server.pid, port, 0, args.seconds, status=status), "viewers": "off"})
        requests.put(base + "/api/camera", json={"on": True}, timeout=30).raise_for_status()
        for count in args.viewers:
            rows.append(measure(server.pid, port, count, args.seconds, status=status))
        encoder = status()["encoder"]
    finally:
        server.terminate()
        server.wait(10)
    peer = None
    if not args.no_demo:
        demo_port = free_port()
        demo = start([sys.executable, str(ROOT / "bench" / "demo_original.py"), "--port", str(demo_port), "--size",
                      args.size, "--fps", str(args.fps)], dict(os.environ), "serving")
        try:
            peer = measure(demo.pid, demo_port, max(args.viewers), args.seconds, path="/")
        finally:
            demo.terminate()
            demo.wait(10)

    print(f"appliance: demo camera {args.size} @ {args.fps:g} fps, motion at 5 fps, encoder {encoder}, "
          f"{args.seconds:g} s per row; viewers in another process")
    print(f"{'viewers':>7} {'cores':>6} {'fps/viewer':>10} {'encodes/s':>9} {'captured/s':>10} {'analysed/s':>10} "
          f"{'RSS MiB':>7} {'limit':>6} {'ratio':>5}")
    for row in rows:
        need = limit(row, costs)
        ratio = f"{row['cores'] / need:.2f}" if need > 0.001 else "-"
        print(f"{row['viewers']!s:>7} {row['cores']:>6.3f} {row['fps']:>10.1f} {row['frames_encoded']:>9.1f} "
              f"{row['frames_captured']:>10.1f} {row['frames_analysed']:>10.1f} {row['rss']:>7.0f} {need:>6.3f} "
              f"{ratio:>5}")
    stages = ("capture", "clip", "clip_encode", "motion", "overlay", "encode", "send")
    print("stages alone at the camera's pace, ms per call: "
          + ", ".join(f"{name} {1000 * costs[name]:.3f}" for name in stages)
          + f" (send: one {costs['jpeg_kib']:.0f} KiB part to one socket)")
    print("the same in a tight loop (caches warm):         "
          + ", ".join(f"{name} {1000 * costs[name + '_hot']:.3f}" for name in stages))
    busiest = rows[-1]
    print(f"CPU by stage at {busiest['viewers']} viewers (cores): "
          + ", ".join(f"{name} {rate * costs[name]:.3f}" for name, rate in (
              ("capture", busiest["frames_captured"]), ("clip", busiest["clip_taken"]),
              ("clip_encode", busiest["clip_encoded"]),
              ("motion", busiest["frames_analysed"]),
              ("overlay", busiest["frames_encoded"]), ("encode", busiest["frames_encoded"]),
              ("send", busiest["sent"])))
          + f"; the rest, {busiest['cores'] - limit(busiest, costs):.3f}, is the HTTP server, threads and Python")
    if peer is not None:
        print(f"the demo's original approach, {peer['viewers']} viewers: {peer['cores']:.3f} cores, "
              f"{peer['fps']:.1f} fps/viewer, RSS {peer['rss']:.0f} MiB: "
              f"{peer['cores'] / busiest['cores']:.1f}x the appliance's CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
