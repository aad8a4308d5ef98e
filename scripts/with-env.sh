#!/usr/bin/env bash
# Run a command inside the visuomotor environment (venv + colcon overlay).
set -eo pipefail
# shellcheck disable=SC1091
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh"
exec "$@"
