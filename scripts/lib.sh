# Shared by run.sh and test.sh: apt packages when missing, and the project's virtualenv.
# shellcheck shell=bash

need_apt() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "need root (or sudo) to install: ${missing[*]}" >&2; return 1; }
    sudo="sudo"
  fi
  echo "installing system packages: ${missing[*]}"
  $sudo apt-get -o DPkg::Lock::Timeout=120 update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=120 install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
}

# The project's venv, always of Debian's own Python (`/usr/bin/python3`) and with its system site
# packages: apt's GStreamer bindings (python3-gi, python3-gst-1.0) serve the RTSP stream, and on
# Raspberry Pi OS apt also brings picamera2, libcamera and lgpio. pip installs
# the locked versions into the venv, where they come first. A venv made another way (another Python,
# no system site packages) is made again.
RTSP_APT=(python3-gi python3-gst-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base
          gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)
make_venv() {
  local python="${PYTHON:-/usr/bin/python3}"
  if [ -x .venv/bin/python ] && ! { grep -qx "include-system-site-packages = true" .venv/pyvenv.cfg \
       && grep -qx "home = $(dirname "$python")" .venv/pyvenv.cfg; }; then
    echo "making .venv again (of $python, with system site packages)"
    rm -rf .venv
  fi
  [ -x .venv/bin/python ] || "$python" -m venv --system-site-packages .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
}
