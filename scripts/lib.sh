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

# The project's venv. `make_venv --system-site-packages` where apt's Python packages must be seen (on
# Raspberry Pi OS: picamera2, lgpio and the OpenCV and numpy built with them); elsewhere a plain venv,
# so pip neither sees nor complains about whatever the system has installed. A venv made the other
# way is made again.
make_venv() {
  local python="${PYTHON:-python3}" system="false"
  [ "${1:-}" = "--system-site-packages" ] && system="true"
  if [ -x .venv/bin/python ] && ! grep -qx "include-system-site-packages = $system" .venv/pyvenv.cfg; then
    echo "making .venv again (include-system-site-packages = $system)"
    rm -rf .venv
  fi
  if [ ! -x .venv/bin/python ]; then
    if [ "$system" = "true" ]; then "$python" -m venv --system-site-packages .venv; else "$python" -m venv .venv; fi
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
}
