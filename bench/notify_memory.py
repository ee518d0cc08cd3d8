"""What notifications cost in resident memory: the appliance with no target, and with targets.

    python bench/notify_memory.py [--seconds 10]

Each case runs the appliance in a fresh process (the demo camera, on, ``MALLOC_ARENA_MAX=2`` as the
unit sets it) and prints its VmRSS after ``--seconds``. The targets are a ``json://`` web hook and a
``mailto://`` server on loopback ports nothing listens on: what is measured is Apprise loaded with its
plugins and a sender thread per target, idle (nothing moves, so nothing is sent).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys, threading
from appliance.config import AppConfig
from appliance.runtime import Appliance
targets = json.loads(sys.argv[2])
config = AppConfig.model_validate({"camera": {"backend": "synthetic", "synthetic": {"objects": 0}},
    "server": {"host": "127.0.0.1", "port": 0}, "state_dir": sys.argv[1], "notify": {"targets": targets}})
app = Appliance(config)
app.start()
app.controller.on()
threading.Event().wait(float(sys.argv[3]))
rss = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS"))
threads = threading.active_count()
app.stop()
print(json.dumps({"rss_mib": round(rss / 1024, 1), "threads": threads}))
"""


def run(targets: list[dict[str, object]], seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as state:
        done = subprocess.run([sys.executable, "-c", CHILD, state, json.dumps(targets), str(seconds)], cwd=ROOT,
                              capture_output=True, text=True, check=True, timeout=seconds + 60,
                              env={**os.environ, "MALLOC_ARENA_MAX": "2"})
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    none = run([], args.seconds)
    two = run([{"name": "hook", "url": "json://127.0.0.1:9/hook"},
               {"name": "mail", "url": "mailto://cam:secret@127.0.0.1:9?mode=insecure"
                                      "&from=cam@example.com&to=me@example.com&smtp=127.0.0.1"}],
              args.seconds)
    print(f"no targets:  {none['rss_mib']} MiB, {none['threads']} threads")
    print(f"two targets: {two['rss_mib']} MiB, {two['threads']} threads "
          f"(+{two['rss_mib'] - none['rss_mib']:.1f} MiB, +{two['threads'] - none['threads']} threads)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
