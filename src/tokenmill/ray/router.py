"""Prefix-aware routing through Ray Serve's request-router extension point.

Requests whose prompts start alike go to the replica that served that prefix before,
where the prefix cache already holds its KV blocks, unless that replica has
`imbalance` more requests in progress than the least loaded candidate; otherwise (and
for new prefixes) power of two choices picks the less loaded of two random replicas.
"""

from __future__ import annotations

import random
from collections import OrderedDict

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

MAX_PREFIXES = 100_000


def prefix_key(pending_request: PendingRequest | None) -> str | None:
    """The ForwardedRequest's affinity key, if the request carries one."""
    if pending_request is None or not pending_request.args:
        return None
    return getattr(pending_request.args[0], "prefix_key", None)


class PrefixAffinityRouter(RequestRouter):
    """Prefix affinity over power of two choices. Keeps, in this handle's process, which
    replica each prefix key last went to (bounded, least recently used dropped)."""

    def initialize_state(self, imbalance: int = 4, max_prefixes: int = MAX_PREFIXES) -> None:
        """Sets the routing knobs; empties the prefix table."""
        self.imbalance = imbalance
        self.max_prefixes = max_prefixes
        self.owners: OrderedDict[str, ReplicaID] = OrderedDict()
        self.affinity_hits = 0

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        """Ranks: the prefix's replica first when it is not overloaded, then two random
        candidates (Serve takes the less loaded of a rank). Does not modify the table."""
        if not candidate_replicas:
            return []
        pair = random.sample(candidate_replicas, min(2, len(candidate_replicas)))
        key = prefix_key(pending_request)
        owner_id = self.owners.get(key) if key is not None else None
        owner = next((r for r in candidate_replicas if r.replica_id == owner_id), None)
        if owner is None or self._overloaded(owner, candidate_replicas):
            return [pair]
        return [[owner], [r for r in pair if r is not owner] or pair]

    def _overloaded(self, owner: RunningReplica, candidates: list[RunningReplica]) -> bool:
        cache = self.replica_queue_len_cache
        loads = [cache.get(r.replica_id) for r in candidates]
        known = [q for q in loads if q is not None]
        mine = cache.get(owner.replica_id)
        if mine is None or not known:
            return False
        return mine - min(known) > self.imbalance

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result):
        """Records `replica_id` as the owner of the request's prefix key."""
        key = prefix_key(pending_request)
        if key is None:
            return
        if self.owners.get(key) == replica_id:
            self.affinity_hits += 1
        self.owners[key] = replica_id
        self.owners.move_to_end(key)
        while len(self.owners) > self.max_prefixes:
            self.owners.popitem(last=False)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        """Forgets the dead replica's prefixes (they go elsewhere by load)."""
        super().on_replica_actor_died(replica_id)
        for key in [k for k, v in self.owners.items() if v == replica_id]:
            del self.owners[key]
