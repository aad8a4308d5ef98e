#!/usr/bin/env bash
# Set up visuomotor on a fresh Debian/Ubuntu machine with Python 3.11 and no ROS:
# a virtual environment with pinned packages (ROS 2 Jazzy pip wheels included),
# the wheels' CMake exports patched for this machine, and ros2_ws built by colcon.
# Idempotent: packages are installed only when a requirements file changed, and
# colcon rebuilds only what changed.
#
# Environment: PYTHON (interpreter, default python3.11 or python3), VENV (default
# .venv), VISUOMOTOR_SKIP_ROS_PIP=1 to use a sourced system ROS 2 instead of the
# pip wheels.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
STAMP="$VENV/.visuomotor-requirements.sha256"

log() { printf '[setup] %s\n' "$*"; }

check_toolchain() {
  "$PYTHON" - <<'PY' || { echo "visuomotor needs Python 3.11 (set PYTHON=...)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)
PY
  local missing=()
  for tool in cmake make gcc g++; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      log "installing build tools: ${missing[*]}"
      apt-get update -qq && apt-get install -y -qq cmake build-essential >/dev/null
    else
      echo "missing build tools: ${missing[*]} (apt-get install cmake build-essential)" >&2
      exit 1
    fi
  fi
}

requirement_files() {
  if [ "${VISUOMOTOR_SKIP_ROS_PIP:-0}" = 1 ]; then
    echo requirements/runtime.txt requirements/sim.txt requirements/train.txt \
      requirements/experiment.txt requirements/dev.txt
  else
    echo requirements.txt
  fi
}

install_packages() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtual environment $VENV"
    if [ "${VISUOMOTOR_SKIP_ROS_PIP:-0}" = 1 ]; then
      # A sourced system ROS 2 provides rclpy, the message packages and colcon.
      "$PYTHON" -m venv --system-site-packages "$VENV"
    else
      "$PYTHON" -m venv "$VENV"
    fi
  fi
  local files want have
  files=$(requirement_files)
  # shellcheck disable=SC2086
  want=$(cat requirements/*.txt requirements.txt | sha256sum | cut -d' ' -f1)-$(echo $files | sha256sum | cut -c1-8)
  have=$(cat "$STAMP" 2>/dev/null || true)
  if [ "$want" = "$have" ]; then
    log "packages up to date"
    return
  fi
  log "installing pinned packages ($files)"
  local args=()
  for f in $files; do args+=(-r "$f"); done
  local status=0
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q \
      -c requirements/constraints.txt "${args[@]}" > "$VENV/pip-install.log" 2>&1 || status=$?
  # A pip configuration may name local indexes that do not exist: drop those warnings.
  grep -v 'is ignored: it is neither' "$VENV/pip-install.log" || true
  [ "$status" = 0 ] || { echo "pip install failed (log: $VENV/pip-install.log)" >&2; exit 1; }
  echo "$want" > "$STAMP"
}

build_workspace() {
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
  if [ "${VISUOMOTOR_SKIP_ROS_PIP:-0}" != 1 ]; then
    python scripts/patch_ros_wheels.py "$VENV" >/dev/null
    export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
    export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  fi
  log "building ros2_ws with colcon"
  (cd ros2_ws && colcon --log-base log build --symlink-install \
      --base-paths src ../sim ../models \
      --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VENV/bin/python" \
      > log/last_build.txt 2>&1) || { cat ros2_ws/log/last_build.txt >&2; exit 1; }
  log "built $(grep -c '^Finished' ros2_ws/log/last_build.txt) packages"
}

check_toolchain
install_packages
mkdir -p ros2_ws/log
build_workspace
log "done: run commands through scripts/with-env.sh (or: source scripts/env.sh)"
