"""Which model answers a call: the `model` field resolved to a backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from tokenmill.errors import ModelNotFoundError
from tokenmill.gateway.backend import Backend
from tokenmill.gateway.call import GENERATION_KINDS, Call


@dataclass(frozen=True)
class Route:
    """The model a call goes to."""

    model: str
    """The name responses report."""
    version: str
    backend: Backend
    deployment: Any = None
    """The registry's Deployment, when a registry routed the call (in-flight counting)."""


class Router(Protocol):
    def route(self, call: Call) -> Route:
        """The route for `call`; ModelNotFoundError (404) for a name nobody serves."""

    def names(self) -> list[str]:
        """Every name a client may send as `model`."""

    def backend_for(self, model: str) -> Backend:
        """The backend serving `model` (a fallback target); ModelNotFoundError if none."""


class SingleModelRouter:
    """One served model, version "1": `model` must be omitted or name it."""

    def __init__(self, model: str, backend: Backend, version: str = "1"):
        self._route = Route(model, version, backend)

    def route(self, call: Call) -> Route:
        if call.kind not in GENERATION_KINDS:
            raise ModelNotFoundError(
                f"This server serves one generative model, {self._route.model!r}, and no "
                f"model for {call.kind!r} calls: start it with --models FILE listing one "
                "(see docs/registry.md)."
            )
        requested = call.body.model
        if requested is not None and requested != self._route.model:
            raise ModelNotFoundError(
                f"The model {requested!r} does not exist on this server; it serves "
                f"{self._route.model!r} (see GET /v1/models)."
            )
        return self._route

    def names(self) -> list[str]:
        return [self._route.model]

    def backend_for(self, model: str) -> Backend:
        if model != self._route.model:
            raise ModelNotFoundError(f"No served model is called {model!r}.")
        return self._route.backend
