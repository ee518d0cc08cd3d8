#!/usr/bin/env bash
# Install the appliance into .venv and start it on port 8000 (demo camera when none is attached).
# Extra arguments go to `python -m appliance`, e.g. `scripts/run.sh --camera opencv --device 0`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
# GStreamer's RTSP server comes from apt (the stream is off unless rtsp.enabled; docs/rtsp.md).
need_apt python3 python3-venv python3-pip "${RTSP_APT[@]}"
if [ -e /etc/rpi-issue ]; then
  # Raspberry Pi OS: the camera stack and GPIO come from apt; OpenCV and numpy from the lock (PyPI).
  need_apt python3-picamera2 python3-lgpio
  lock=requirements/runtime-pi.txt
else
  lock=requirements/runtime.txt
fi
make_venv
# Exact versions with hashes (bash scripts/lock.sh makes the locks from pyproject.toml).
.venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r "$lock"
# With no arguments and no camera attached, say so and show the demo camera instead (the appliance
# itself never falls back to it: a real installation with a loose cable must report the fault).
if [ $# -eq 0 ] && [ -z "${APPLIANCE_CAMERA__BACKEND:-}" ] && ! .venv/bin/python -m appliance detect-camera >/dev/null; then
  echo "no camera found: starting the demo camera (pass --camera ... to choose one)"
  set -- --camera synthetic
fi
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"  # as the systemd unit: see deploy/appliance.service
exec .venv/bin/python -m appliance "$@"
