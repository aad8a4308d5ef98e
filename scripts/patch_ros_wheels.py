"""Point the ROS 2 pip wheels' exported CMake targets at this machine's paths.

The ``ros-jazzy-*`` wheels are built in a manylinux container and their exported
CMake targets (``share/*/cmake/*Export.cmake``) name that container's Python and
numpy include directories. CMake refuses targets whose include directories do
not exist, so ``colcon build`` of any interfaces package fails at configure time
until those paths are rewritten to the virtual environment's own. The rewrite is
idempotent: a patched file no longer contains the foreign prefix.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

FOREIGN_PYTHON_INCLUDE = "/opt/python/cp311-cp311/include/python3.11"
FOREIGN_NUMPY_INCLUDE = "/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include"


def local_paths() -> dict[str, str]:
    """Map each foreign include directory to the one of the running interpreter."""
    import numpy

    return {
        FOREIGN_NUMPY_INCLUDE: numpy.get_include(),
        FOREIGN_PYTHON_INCLUDE: sysconfig.get_paths()["include"],
    }


def patch_prefix(prefix: Path) -> int:
    """Rewrite every exported CMake file under ``prefix/share``; return how many changed."""
    replacements = local_paths()
    changed = 0
    for cmake_file in (prefix / "share").glob("*/cmake/*.cmake"):
        text = cmake_file.read_text()
        if "/opt/python/cp311-cp311" not in text:
            continue
        for foreign, local in replacements.items():
            text = text.replace(foreign, local)
        cmake_file.write_text(text)
        changed += 1
    return changed


def main() -> int:
    prefix = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(sys.prefix)
    changed = patch_prefix(prefix)
    print(f"patched {changed} exported CMake file(s) under {prefix / 'share'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
