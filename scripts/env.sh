# Source to get the visuomotor environment: the virtual environment and the
# colcon workspace overlay (messages, nodes, sim, models).
#   source scripts/env.sh
_vm_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
_vm_venv="${VENV:-$_vm_root/.venv}"
# shellcheck disable=SC1091
. "$_vm_venv/bin/activate"
if [ "${VISUOMOTOR_SKIP_ROS_PIP:-0}" != 1 ]; then
  export AMENT_PREFIX_PATH="$_vm_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
fi
# shellcheck disable=SC1091
. "$_vm_root/ros2_ws/install/setup.sh"
export VISUOMOTOR_ROOT="$_vm_root"
unset _vm_root _vm_venv
