"""The KV cache's pages are committed at start unless `prefault` is off (issue 14: a
soak's resident memory climbed by most of the cache as blocks were first touched).

Residency is read with mincore(2) on each layer's tensor, so these tests run on Linux.
Each tensor is larger than glibc's largest mmap threshold (32 MiB), so it is a fresh
anonymous mapping whose pages are resident only once written.
"""

from __future__ import annotations

import ctypes
import mmap
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from tokenmill.config import CacheConfig
from tokenmill.engine.model_runner import ModelRunner

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="mincore(2) is Linux's")

_ARCH = SimpleNamespace(num_layers=2, num_kv_heads=4, head_dim=64)
_BLOCK = 16
_BLOCKS = 1280
"""(2, 1280 * 16, 4, 64) float32 is 40 MiB a layer."""


def resident_fraction(t: torch.Tensor) -> float:
    """Share of the pages under `t`'s storage that are in memory."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    page = mmap.PAGESIZE
    start = t.data_ptr() // page * page
    end = t.data_ptr() + t.numel() * t.element_size()
    pages = -(-(end - start) // page)
    vec = ctypes.create_string_buffer(pages)
    if libc.mincore(start, pages * page, vec) != 0:
        raise OSError(ctypes.get_errno(), "mincore failed")
    return sum(b & 1 for b in vec.raw) / pages


def make_runner(prefault: bool) -> ModelRunner:
    cache = CacheConfig(block_size=_BLOCK, num_blocks=_BLOCKS, prefault=prefault)
    return ModelRunner(None, _ARCH, torch.float32, cache, max_model_len=64)


def test_prefault_commits_every_page_of_the_cache_at_start():
    runner = make_runner(prefault=True)
    assert len(runner.kv_caches) == 2
    for kv in runner.kv_caches:
        assert kv.numel() * kv.element_size() == 40 * 2**20
        assert resident_fraction(kv) == 1.0
        assert not kv.any()  # zeroed, not just touched


def _lazy_cache_check() -> None:
    runner = make_runner(prefault=False)
    for kv in runner.kv_caches:
        assert resident_fraction(kv) < 0.05, resident_fraction(kv)
        assert not kv[:, :_BLOCK].any()  # the null block is zeroed


def test_without_prefault_only_the_null_block_is_committed():
    """The behaviour the soak measured: a fresh cache is almost entirely uncommitted,
    so resident memory grows as blocks are first written. Checked in a fresh process,
    as a server starts: in a long test process the allocator may hand out memory that
    earlier tests already made resident (CI saw 100%)."""
    code = "from tests.unit.engine.test_kv_prefault import _lazy_cache_check as f; f()"
    cmd = [sys.executable, "-c", code]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def test_prefault_is_on_by_default():
    assert CacheConfig().prefault is True
