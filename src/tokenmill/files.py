"""Files replaced whole: a crash or an error while writing leaves the old version or
the new one, never half of one. Every layer writes its files through here (the batch
store's uploads and results, the model cache, the kernels' build copies, the registry
state, checkpoints, benchmark reports)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

_serial = itertools.count()  # with the pid, a temporary name no other writer uses


def write_atomically(
    path: str | Path,
    write: Callable[[IO[bytes]], object],
    check: Callable[[Path], object] | None = None,
) -> int:
    """Writes `path` through a temporary file beside it, synced and renamed into place;
    returns its size. `check`, when given, sees the finished temporary file and may raise
    to keep the old file. If `write` or `check` raises, the temporary file is removed
    and `path` is untouched."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_serial)}.tmp")
    try:
        with open(tmp, "xb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
            size = out.tell()
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)
    return size


def write_text_atomically(
    path: str | Path, text: str, check: Callable[[Path], object] | None = None
) -> int:
    """`text` in UTF-8, written as write_atomically writes."""
    return write_atomically(path, lambda out: out.write(text.encode()), check)
