"""Process-wide memory allocator setting for the command line's long jobs.

glibc's ``malloc`` serves blocks above a (dynamic, at most 32 MB) threshold with ``mmap`` and
hands freed memory at the top of the heap straight back to the kernel. A training step of
ONet at batch 256 allocates and frees activations of tens of MB each, so every step re-maps
them and the kernel zeroes every page again on first touch: measured on the 2-core VM,
≈ 160,000 page faults per second and half of the CPU time in the kernel. Keeping freed
memory in the process (blocks up to ``cap_bytes`` from the heap, no trimming) removes most
of those faults: 1.37× ONet training steps in ``bench/allocator.py``, ≈ 1.4–2× in the real
trainer at 2 threads. PNet and RNet training, whose activations are small, measured 10–35 %
slower with it on a quiet machine (not understood yet); ONet dominates a pipeline run, so the
command keeps it on (docs/BENCHMARKS.md).

The price is that the process keeps its peak heap until it exits, which is what a training
or evaluation run does anyway. This is a setting of the whole process, so the library never
calls it on its own: the ``mtcnnkit`` command does, once, at start-up; a program that embeds
mtcnnkit may call it too, or set ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` in
the environment.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3

DEFAULT_CAP_BYTES = 1 << 30


def keep_freed_memory(cap_bytes: int = DEFAULT_CAP_BYTES) -> bool:
    """Ask glibc to serve blocks up to ``cap_bytes`` from the heap and not to trim it.

    Returns whether the setting was applied: False (and nothing changed) on other C
    libraries (macOS, Windows, musl), where it does not apply.
    """
    if cap_bytes <= 0:
        raise ValueError(f"cap_bytes must be positive, got {cap_bytes}")
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    value = min(cap_bytes, 2**31 - 1)
    return bool(mallopt(_M_MMAP_THRESHOLD, value)) and bool(mallopt(_M_TRIM_THRESHOLD, value))
