"""Bound the C heap of a process that receives camera frames of varying size.

Each received sensor_msgs/Image is a buffer of ``step * height`` bytes allocated by the
middleware and rclpy with ``malloc``. glibc serves blocks at or above its mmap threshold
with their own mapping (returned to the system on ``free``), but by default the threshold
is *dynamic*: freeing such a block raises the threshold to its size (up to 32 MiB), so
after the first frames every image buffer comes from the heap. With sizes that vary from
frame to frame and a multi-threaded executor (frames are received on one thread and freed
on another, i.e. in several malloc arenas) the heaps fragment and the resident size
creeps up; at a constant size the same blocks are reused and it stays flat.

:func:`bound_heap_growth` fixes the threshold (which turns the dynamic adjustment off),
so frame-sized buffers are always mapped and unmapped and the heaps keep only small
blocks. :func:`heap_usage` reads glibc's ``mallinfo2`` for tests and diagnostics. Both
are no-ops returning False/None where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from dataclasses import dataclass

#: Blocks of this size or more get their own mapping (glibc's default initial value).
MMAP_THRESHOLD_BYTES = 128 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt parameter number (malloc.h)

_lock = threading.Lock()
_applied: int | None = None


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "mallinfo2") else None


@dataclass(frozen=True)
class HeapUsage:
    """glibc heap figures, bytes.

    Attributes:
        heap: obtained from the system for the heaps (all arenas, ``arena``).
        free: free inside the heaps (``fordblks``): fragmentation shows here.
        mapped_blocks: blocks served by their own mapping (``hblks``).
        mapped: bytes in those mappings (``hblkhd``).
    """

    heap: int
    free: int
    mapped_blocks: int
    mapped: int


def heap_usage() -> HeapUsage | None:
    """The process's glibc heap figures now (None without glibc)."""
    libc = _libc()
    if libc is None:
        return None
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return HeapUsage(heap=info.arena, free=info.fordblks, mapped_blocks=info.hblks,
                     mapped=info.hblkhd)


def bound_heap_growth(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process (idempotent).

    Returns True when the threshold is in effect (False without glibc).
    """
    global _applied
    with _lock:
        if _applied == threshold:
            return True
        libc = _libc()
        if libc is None or libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(threshold)) != 1:
            return False
        _applied = threshold
        return True
