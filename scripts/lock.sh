#!/usr/bin/env bash
# Refresh the locks from pyproject.toml: exact versions with hashes, for every platform a Pi or a
# development machine may be (uv's universal resolution), on Python 3.11 (Debian 12, Raspberry Pi OS).
#   requirements/runtime.txt      the appliance with OpenCV and numpy from PyPI (Debian, x86), PyAV for RTSP and the
#                                 TFLite runtime for object detection
#   requirements/runtime-pi.txt   the appliance on Raspberry Pi OS (picamera2, libcamera and lgpio from apt)
#   requirements/dev.txt          runtime.txt plus the tests and linters
# Usage: bash scripts/lock.sh [--upgrade]   (then run the tests and commit the three files)
set -euo pipefail
cd "$(dirname "$0")/.."
uv=(.venv/bin/python -m uv)
.venv/bin/python -m uv --version >/dev/null 2>&1 || .venv/bin/python -m pip install -q uv
compile=("${uv[@]}" pip compile pyproject.toml --generate-hashes --universal --python-version 3.11 --quiet --native-tls
         --constraint requirements/constraints.txt --custom-compile-command "bash scripts/lock.sh" "$@")
"${compile[@]}" --extra opencv --extra rtsp --extra detect -o requirements/runtime.txt
"${compile[@]}" --extra opencv --extra rtsp --extra detect -o requirements/runtime-pi.txt
"${compile[@]}" --extra opencv --extra rtsp --extra detect --extra dev -o requirements/dev.txt
