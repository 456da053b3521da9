"""The batch status machine: OpenAI's statuses, only the moves tokenmill makes."""

from __future__ import annotations

import itertools

import pytest

from tokenmill.batch.status import (
    TRANSITIONS,
    BatchStatus,
    InvalidTransition,
    can_cancel,
    check_transition,
)

S = BatchStatus
ALLOWED = {
    (S.VALIDATING, S.IN_PROGRESS),
    (S.VALIDATING, S.FAILED),
    (S.VALIDATING, S.CANCELLING),
    (S.IN_PROGRESS, S.FINALIZING),
    (S.IN_PROGRESS, S.CANCELLING),
    (S.FINALIZING, S.COMPLETED),
    (S.FINALIZING, S.EXPIRED),
    (S.CANCELLING, S.CANCELLED),
}


def test_openai_statuses_are_exactly_the_machines():
    assert {s.value for s in S} == {
        "validating",
        "failed",
        "in_progress",
        "finalizing",
        "completed",
        "expired",
        "cancelling",
        "cancelled",
    }
    assert set(TRANSITIONS) == set(S)


@pytest.mark.parametrize("old,new", list(itertools.product(S, S)))
def test_every_pair_is_allowed_or_refused_as_declared(old, new):
    if (old, new) in ALLOWED:
        check_transition(old, new)
    else:
        with pytest.raises(InvalidTransition) as info:
            check_transition(old, new)
        assert info.value.status_code == 400
        assert info.value.code == "invalid_status"
        assert old.value in info.value.message and new.value in info.value.message


def test_final_statuses_and_their_timestamps():
    assert {s for s in S if s.is_final} == {S.FAILED, S.COMPLETED, S.EXPIRED, S.CANCELLED}
    assert S.VALIDATING.timestamp_field is None
    assert S.IN_PROGRESS.timestamp_field == "in_progress_at"
    assert S.CANCELLED.timestamp_field == "cancelled_at"


def test_only_unfinished_work_can_be_cancelled():
    assert {s for s in S if can_cancel(s)} == {S.VALIDATING, S.IN_PROGRESS}
