"""What the recordings cost: bytes on disk, CPU, resident memory; MP4 from the one encode against the
Motion-JPEG clips of earlier versions.

Each configuration runs the whole appliance in a fresh child process (so its resident memory is its
own), camera on, nobody watching, at 1280x720 and 15 fps with every other setting at its default:

* ``mjpeg clips``: the earlier default: event clips as JPEG frames (10 fps, 640x360), a pre-roll
  ring of raw frames, no H.264 at all.
* ``mp4 clips``: today's default: event clips cut from the H.264 encode (1.5 Mbit/s, a keyframe a
  second), a pre-roll ring of encoded frames; the encoder runs while the camera is on.
* ``mp4 clips + continuous``: and continuous recording (60 s segments) on top.
* ``mjpeg clips, MP4's picture``: Motion-JPEG clips at the MP4's size and rate, so a second of the
  same event can be compared byte for byte.

Per row: the process's CPU in cores over the window (its own CPU clock), its resident memory at the
end (VmRSS) and its peak (VmHWM), the pre-roll's bytes, the bytes a second of event adds to its clip
(the events folder's growth while an event runs), and with continuous recording the bytes an hour
of it takes (the recordings folder's growth).

Cameras: the demo camera and, when DATASET_DIR is given, CDnet 2014's highway sequence (real
traffic, 320x240, looped, scaled to 1280x720; see the README for its citation; kept as JPEG and
decoded as read, so the bench holds no hundreds of MiB of frames). In both the scene moves all the
time, so an event runs through the whole window.

    python bench/recordings.py [DATASET_DIR] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
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

from appliance.camera_backends.synthetic import SyntheticCamera  # noqa: E402
from appliance.config import AppConfig  # noqa: E402
from appliance.runtime import Appliance  # noqa: E402
from bench.clips import SequenceCamera  # noqa: E402

MODES = {
    "mjpeg clips": {"events": {"clip": {"format": "mjpeg"}}},
    # The same picture as the MP4 clips (1280x720 at 15 fps), for the bytes of one event both ways; a
    # shorter pre-roll, as its raw frames would not fit the pre-roll's bound.
    "mjpeg clips, MP4's picture": {"events": {"clip": {"format": "mjpeg", "size": "1280x720", "fps": 15,
                                                       "pre_seconds": 1}}},
    "mp4 clips": {"events": {"clip": {"format": "mp4"}}},
    "mp4 clips + continuous": {"events": {"clip": {"format": "mp4"}}, "recording": {"continuous": {"enabled": True}}},
}
SIZE, FPS = (1280, 720), 15.0


def status_memory() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


class JpegSequence(SequenceCamera):
    """CDnet's highway frames as JPEG bytes, decoded and scaled to the camera's size as read, at its rate."""

    name = "cdnet"

    def __init__(self, dataset: Path) -> None:
        super().__init__([(dataset / "input" / f"in{n:06d}.jpg").read_bytes() for n in range(470, 1701)], FPS,
                         still=False)

    def picture(self, frame: bytes) -> np.ndarray:
        image = cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR)
        return cv2.resize(image, SIZE, interpolation=cv2.INTER_LINEAR)


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) if folder.exists() else 0


def child(mode: str, dataset: str | None, seconds: float) -> dict[str, Any]:
    """One configuration, in this (child) process: start, let the event begin, measure."""
    with tempfile.TemporaryDirectory() as state:
        cfg = AppConfig.model_validate({
            "camera": {"backend": "synthetic", "size": f"{SIZE[0]}x{SIZE[1]}", "fps": FPS,
                       "synthetic": {"objects": 3, "motion_period": 600.0, "motion_duration": 600.0}},
            "server": {"host": "127.0.0.1", "port": 0}, "state_dir": state, "log_level": "WARNING",
            **MODES[mode]})
        backend = JpegSequence(Path(dataset)) if dataset else SyntheticCamera(cfg.camera)
        app = Appliance(cfg, backend=backend)
        app.start()
        try:
            requests.put(app.url + "/api/camera", json={"on": True}, timeout=30).raise_for_status()
            deadline = time.monotonic() + 30
            while not app.pipeline.stats().motion_active and time.monotonic() < deadline:
                app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + 15, timeout=5)
            if not app.pipeline.stats().motion_active:
                raise SystemExit("no motion event started: the scene does not move")
            app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + int(5 * FPS), timeout=30)
            events, recordings = app.events.folder, cfg.recordings_folder()
            wall, cpu = time.monotonic(), time.process_time()
            event_bytes, recorded = folder_bytes(events), folder_bytes(recordings)
            app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + int(seconds * FPS),
                                         timeout=seconds * 3)
            elapsed = time.monotonic() - wall
            cores = (time.process_time() - cpu) / elapsed
            event_rate = (folder_bytes(events) - event_bytes) / elapsed
            recorded_rate = (folder_bytes(recordings) - recorded) / elapsed
            rss, peak = status_memory()
            clips = app.clip_counters()
            ring = clips.get("pre_roll_bytes")
            if ring is None:  # the raw ring holds its frames raw while nothing moves: frames x clip size x 3
                tap = app.pipeline._clips  # a bench may look inside: this figure exists nowhere else
                frame = tap._ring[-1] if tap and tap._ring else None
                ring = tap._ring.maxlen * frame.width * frame.height * 3 if frame else 0
            motion = app.pipeline.stats().motion_active
        finally:
            app.stop()
    return {"cores": cores, "rss": rss, "peak": peak, "ring": ring, "event_bytes_per_s": event_rate,
            "recorded_bytes_per_hour": recorded_rate * 3600 if "continuous" in mode else None,
            "event_ran_throughout": motion}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", nargs="?", type=Path, help="CDnet 2014 baseline/highway folder")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, str(args.dataset) if args.dataset else None, args.seconds)))
        return 0
    cameras = [("demo camera", None)] + ([("CDnet highway", args.dataset)] if args.dataset else [])
    print(f"{SIZE[0]}x{SIZE[1]} @ {FPS:g} fps, defaults otherwise; nobody watching; an event throughout; "
          f"{args.seconds:g} s each, a fresh process per row (MALLOC_ARENA_MAX=2, as the unit runs it)")
    print(f"{'camera':14} {'mode':24} {'cores':>6} {'RSS MiB':>8} {'peak MiB':>9} {'pre-roll MiB':>12} "
          f"{'clip kB/s':>9} {'continuous MB/h':>15}")
    for name, dataset in cameras:
        rows: dict[str, dict[str, Any]] = {}
        for mode in MODES:
            command = [sys.executable, __file__, *([str(dataset)] if dataset else []), "--seconds", str(args.seconds),
                       "--child", mode]
            out = subprocess.run(command, capture_output=True, text=True, timeout=args.seconds * 10 + 120,
                                 env={"MALLOC_ARENA_MAX": "2", "PATH": "/usr/bin:/bin"})
            if out.returncode != 0:
                raise SystemExit(f"{mode} failed:\n{out.stderr}")
            row = rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            hourly = row["recorded_bytes_per_hour"]
            print(f"{name:14} {mode:24} {row['cores']:6.3f} {row['rss']:8.1f} {row['peak']:9.1f} "
                  f"{row['ring'] / 2**20:12.2f} {row['event_bytes_per_s'] / 1000:9.1f} "
                  f"{'' if hourly is None else f'{hourly / 1e6:15.0f}'}")
        old, new, both = rows["mjpeg clips"], rows["mp4 clips"], rows["mp4 clips + continuous"]
        same = rows["mjpeg clips, MP4's picture"]
        mp4 = new["event_bytes_per_s"]
        print(f"{name}: a second of event as MP4 takes {mp4 / same['event_bytes_per_s']:.2f} of its bytes as "
              f"Motion-JPEG of the same picture ({mp4 / old['event_bytes_per_s']:.2f} of the earlier default's "
              f"640x360 @ 10); the pre-roll {new['ring'] / 2**20:.2f} MiB instead of "
              f"{old['ring'] / 2**20:.1f}; cores {new['cores'] / old['cores']:.2f}x with MP4 clips, "
              f"{both['cores'] / old['cores']:.2f}x with continuous recording too; "
              f"RSS {new['rss'] - old['rss']:+.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
