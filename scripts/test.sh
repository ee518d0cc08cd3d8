#!/usr/bin/env bash
# Install everything the tests need (system packages as root, Python packages into .venv), lint, test.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k mqtt`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_apt python3 python3-venv python3-pip mosquitto mosquitto-clients chromium ffmpeg \
  debootstrap systemd-container ca-certificates openssl gcc libc6-dev libfuse2 qemu-user-static binfmt-support \
  "${RTSP_APT[@]}"
make_venv
.venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements/dev.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .  # `appliance`
.venv/bin/python -m ruff check appliance tests bench
exec .venv/bin/python -m pytest "$@"
