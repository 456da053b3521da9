"""Handing freed heap memory back to the system.

glibc keeps what a program frees in its arenas for reuse; after a one-off burst of
allocations (loading a model, tokenizing a huge text) that memory stays resident
although nothing uses it. `trim` returns it. Anywhere but glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import sys


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 - musl has no malloc_trim
    except (OSError, AttributeError):
        return None
    return libc


def trim() -> None:
    """Give the heap's free memory back to the system (glibc's malloc_trim(0))."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
