"""A batch's status machine, OpenAI's statuses with the moves tokenmill makes between them.

    validating -> in_progress -> finalizing -> completed
         |              |             \\-----> expired     (the completion window ran out)
         |              \\--> cancelling -> cancelled
         |--> cancelling
         \\--> failed                        (the input file as a whole is unusable)

`finalizing` is where the output and error files are assembled from the per-line
results; a batch reaches a final status only with its files in place, so a client that
sees `completed` can fetch them at once.
"""

from __future__ import annotations

import enum

from tokenmill.errors import InvalidRequestError


class BatchStatus(str, enum.Enum):
    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return not TRANSITIONS[self]

    @property
    def timestamp_field(self) -> str | None:
        """The batch object's field recording when this status was entered."""
        return None if self is BatchStatus.VALIDATING else f"{self.value}_at"


TRANSITIONS: dict[BatchStatus, frozenset[BatchStatus]] = {
    BatchStatus.VALIDATING: frozenset(
        {BatchStatus.IN_PROGRESS, BatchStatus.FAILED, BatchStatus.CANCELLING}
    ),
    BatchStatus.IN_PROGRESS: frozenset({BatchStatus.FINALIZING, BatchStatus.CANCELLING}),
    BatchStatus.FINALIZING: frozenset({BatchStatus.COMPLETED, BatchStatus.EXPIRED}),
    BatchStatus.CANCELLING: frozenset({BatchStatus.CANCELLED}),
    BatchStatus.FAILED: frozenset(),
    BatchStatus.COMPLETED: frozenset(),
    BatchStatus.EXPIRED: frozenset(),
    BatchStatus.CANCELLED: frozenset(),
}
FINAL_OUTCOMES = frozenset({BatchStatus.COMPLETED, BatchStatus.EXPIRED})
"""Where a finalizing batch may end."""


class InvalidTransition(InvalidRequestError):
    """A status change the machine does not allow (HTTP 400 where a client asked for it,
    a bug where the runner did)."""

    def __init__(self, old: BatchStatus, new: BatchStatus):
        super().__init__(
            f"A batch that is {old.value} cannot become {new.value}.", code="invalid_status"
        )
        self.old = old
        self.new = new


def check_transition(old: BatchStatus, new: BatchStatus) -> None:
    """Raises InvalidTransition unless `old -> new` is one of TRANSITIONS."""
    if new not in TRANSITIONS[old]:
        raise InvalidTransition(old, new)


def can_cancel(status: BatchStatus) -> bool:
    """Whether POST /cancel moves a batch in `status` to cancelling."""
    return BatchStatus.CANCELLING in TRANSITIONS[status]
