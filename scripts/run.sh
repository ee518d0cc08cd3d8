#!/usr/bin/env bash
# Install the appliance into .venv and start it on port 8000 (demo camera when none is attached).
# Extra arguments go to `python -m appliance`, e.g. `scripts/run.sh --camera opencv --device 0`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_apt python3 python3-venv python3-pip
make_venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
exec .venv/bin/python -m appliance "$@"
