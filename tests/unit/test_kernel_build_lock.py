"""A kernel build lock left by a killed build is cleared; a live build's lock is kept."""

from __future__ import annotations

import os
import time

from tokenmill.model.kernels import _STALE_LOCK_S, _clear_stale_lock


def test_old_lock_is_removed_and_fresh_lock_kept(tmp_path):
    old, fresh = tmp_path / "old", tmp_path / "fresh"
    old.touch()
    fresh.touch()
    past = time.time() - _STALE_LOCK_S - 60
    os.utime(old, (past, past))
    _clear_stale_lock(old)
    _clear_stale_lock(fresh)
    _clear_stale_lock(tmp_path / "absent")
    assert not old.exists()
    assert fresh.exists()
