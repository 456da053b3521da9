"""The peak resident memory of a process tree while something runs."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from tokenmill.bench import proc

if TYPE_CHECKING:
    from typing_extensions import Self

INTERVAL_S = 0.2


class PeakRss:
    """A context manager that samples the RSS of `pid`'s process tree every `interval_s`
    on a background thread; `peak` holds the largest sum seen (bytes), including one
    sample on entry and one on exit."""

    def __init__(self, pid: int, interval_s: float = INTERVAL_S) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        self.peak = max(self.peak, proc.tree_rss_bytes(self.pid))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> Self:
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
