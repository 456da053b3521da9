"""Which offsets the Kafka worker may commit: a message's offset is committed only once it
and every message before it in its partition have their response acknowledged.

Messages of a partition finish out of order (they run concurrently); committing past an
unfinished one would lose it in a crash. The tracker keeps, per partition, the offsets
read and not yet committed: they are the worker's in-flight window, the bound on how
many messages a crash can make it process twice.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

Partition = tuple[str, int]


@dataclass
class _Outstanding:
    done: dict[int, bool] = field(default_factory=dict)
    """Offsets read and not committed, in read (= offset) order -> response acknowledged."""


class OffsetTracker:
    """Thread-safe: the event loop marks messages read and done, the consumer's thread
    forgets partitions a rebalance took away."""

    def __init__(self) -> None:
        self._parts: dict[Partition, _Outstanding] = {}
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        """Messages read and not yet committed, over every partition."""
        with self._lock:
            return sum(len(p.done) for p in self._parts.values())

    def read(self, partition: Partition, offset: int) -> None:
        """A message was taken from `partition` (offsets arrive in increasing order)."""
        with self._lock:
            self._parts.setdefault(partition, _Outstanding()).done[offset] = False

    def done(self, partition: Partition, offset: int) -> int | None:
        """The message's response is acknowledged. Returns the partition's new commit
        point (the next offset to read after a restart) if it moved, else None. A
        partition no longer assigned (rebalanced away) is ignored."""
        with self._lock:
            part = self._parts.get(partition)
            if part is None or offset not in part.done:
                return None
            part.done[offset] = True
            first = next(iter(part.done))
            if first != offset:
                return None
            return self._commit_point(part)

    def commit_points(self) -> dict[Partition, int]:
        """Every partition's commit point where some finished messages wait for a commit."""
        with self._lock:
            points = {}
            for partition, part in self._parts.items():
                if part.done and next(iter(part.done.values())):
                    points[partition] = self._commit_point(part)
            return points

    def committed(self, partition: Partition, next_offset: int) -> None:
        """Offsets below `next_offset` are committed: they leave the window."""
        with self._lock:
            part = self._parts.get(partition)
            if part is None:
                return
            for offset in [o for o in part.done if o < next_offset]:
                del part.done[offset]

    def forget(self, partitions: list[Partition]) -> None:
        """Partitions a rebalance took away: their messages are another worker's now."""
        with self._lock:
            for partition in partitions:
                self._parts.pop(partition, None)

    @staticmethod
    def _commit_point(part: _Outstanding) -> int:
        point = None
        for offset, finished in part.done.items():
            if not finished:
                return offset
            point = offset + 1
        assert point is not None
        return point
