"""heap.trim hands memory that glibc's malloc keeps after a burst back to the system."""

from __future__ import annotations

import ctypes

import pytest

from tokenmill import heap

pytestmark = pytest.mark.skipif(
    heap._libc() is None, reason="malloc_trim is glibc's; elsewhere trim does nothing"
)


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_trim_returns_freed_heap_pages():
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    # 64 MB in chunks below the mmap threshold, so they come from the heap; written, so
    # they are resident. The last one stays allocated: it pins the heap's top, so free()
    # alone cannot shrink the heap and only trimming returns the pages below it.
    chunks = [libc.malloc(4096) for _ in range(16384)]
    assert all(chunks)
    for c in chunks:
        ctypes.memset(c, 1, 4096)
    for c in chunks[:-1]:
        libc.free(c)
    before = _rss_mb()
    heap.trim()
    after = _rss_mb()
    libc.free(chunks[-1])
    assert before - after > 32, f"RSS {before:.0f} -> {after:.0f} MB"
