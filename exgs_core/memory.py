"""Memory the process frees goes back to the system (glibc), for the command line and the worker.

glibc serves large allocations with mmap and returns them on free, but it raises that threshold to the size of
each mmapped block freed (up to 32 MB), after which blocks of a few MB come from its heap and stay resident
when freed: on a 1.5M-Gaussian compress, working in 1-10 MB chunks, resident memory stood about 100 bytes per
Gaussian above what was in use (docs/results.md, "Scale"). A fixed threshold keeps them mmapped.
Not called on import: a library does not change the allocator of the process that imports it (Blender).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD = 1 << 20  # allocations of 1 MB and more are mmapped, and unmapped when freed


def return_freed_memory() -> bool:
    """Fix glibc's mmap threshold at 1 MB; False where there is no glibc (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False
