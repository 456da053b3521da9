"""The Kafka worker's commit rule: a partition commits only up to its first unfinished
message, whatever order messages finish in."""

from __future__ import annotations

from tokenmill.kafka.offsets import OffsetTracker

P = ("in", 0)
Q = ("in", 1)


def test_commit_point_waits_for_the_earliest_unfinished_message():
    t = OffsetTracker()
    for offset in (10, 11, 12):
        t.read(P, offset)
    assert t.in_flight == 3
    assert t.done(P, 12) is None  # 10 and 11 still run: committing 13 would lose them
    assert t.done(P, 11) is None
    assert t.commit_points() == {}
    assert t.done(P, 10) == 13
    assert t.commit_points() == {P: 13}
    t.committed(P, 13)
    assert t.in_flight == 0 and t.commit_points() == {}


def test_partial_progress_and_partitions_are_independent():
    t = OffsetTracker()
    for offset in (0, 1, 2):
        t.read(P, offset)
    t.read(Q, 5)
    assert t.done(P, 0) == 1
    assert t.done(Q, 5) == 6
    assert t.done(P, 2) is None
    assert t.commit_points() == {P: 1, Q: 6}
    t.committed(P, 1)
    assert t.in_flight == 3  # P's 1 and 2, Q's 5 (done, not committed)
    assert t.done(P, 1) == 3


def test_a_revoked_partition_is_forgotten():
    t = OffsetTracker()
    t.read(P, 0)
    t.forget([P])
    assert t.in_flight == 0
    assert t.done(P, 0) is None  # finished after the rebalance: another worker's now
    t.committed(P, 1)  # no error
