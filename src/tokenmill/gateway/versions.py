"""The registry's policy: gives each call's in-flight count back to its version.

It runs first, so its post_call sees every call that was routed, however it ended
(refused by a later policy, failed, finished, or cut by the client).
"""

from __future__ import annotations

from tokenmill.gateway.policy import CallContext, Policy
from tokenmill.gateway.registry import Registry


class VersionPolicy(Policy):
    """Releases the route a registry took for the call, exactly once."""

    name = "versions"

    def __init__(self, registry: Registry):
        self.registry = registry

    async def post_call(self, ctx: CallContext) -> None:
        if ctx.decisions.get(self.name) == "released":
            return
        ctx.decisions[self.name] = "released"
        self.registry.release(ctx.route)
