"""The model registry: several names, several versions each, and the router over them.

A deployment is one NAME@VERSION: its spec, its loaded model and its state
(loading -> ready -> draining -> unloaded, or failed). The registry resolves a call's
`model` to one deployment, once, at routing time; the whole call then stays with it:

- `NAME`: NAME's ready, non-shadow versions split the traffic by weight. The split is
  sticky: hash(API key name, or the body's `user` without a key, and NAME) falls in
  [0, 100) against the cumulative weights, so one client keeps seeing one version.
- `NAME@VERSION` pins a version; `NAME@stable` is the version with the most traffic,
  `NAME@canary` the newest other version with traffic.
- omitted: the first registered name serving the call's task.

Loading, admin changes and persistence are in `registry_admin.py`; this module only
routes and counts.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tokenmill.errors import InvalidRequestError, ModelNotFoundError, ServiceUnavailableError
from tokenmill.gateway.call import Call
from tokenmill.gateway.models_file import ModelSpec
from tokenmill.gateway.router import Route

VERSION_HEADER = "x-tokenmill-model-version"
KIND_TASKS = {
    "chat": ("generate",),
    "completion": ("generate",),
    "embed": ("embed",),
    "classify": ("classify", "generate"),
    "ner": ("ner",),
}
"""The tasks whose models may answer each kind of call."""
ENDPOINTS = {
    "generate": "/v1/chat/completions or /v1/completions",
    "embed": "/v1/embeddings",
    "classify": "/v1/classify",
    "ner": "/v1/ner",
}


@dataclass
class LoadedModel:
    """What a loader returns: the backend that serves calls, and how to let it go."""

    backend: Any
    """A gateway Backend (generate) or TaskBackend (embed, classify, ner)."""
    weight_bytes: int
    close: Callable[[], Any]
    """Stops it; may return an awaitable (an engine's drain)."""
    info: dict[str, Any] = field(default_factory=dict)
    """Shown on its /v1/models card (precision, max_model_len)."""


@dataclass
class ShadowStats:
    """How a shadow version's answers compared with the live ones; mutated by the
    shadow policy only."""

    compared: int = 0
    greedy_compared: int = 0
    exact_matches: int = 0
    length_ratio_sum: float = 0.0
    failures: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "compared": self.compared,
            "greedy_compared": self.greedy_compared,
            "exact_match_rate": (
                self.exact_matches / self.greedy_compared if self.greedy_compared else None
            ),
            "mean_length_ratio": self.length_ratio_sum / self.compared if self.compared else None,
            "failures": self.failures,
        }


@dataclass
class Deployment:
    """One NAME@VERSION and its state. The registry mutates it; readers copy out."""

    spec: ModelSpec
    created: int = field(default_factory=lambda: int(time.time()))
    status: str = "loading"
    """loading | ready | draining | failed."""
    model: LoadedModel | None = None
    error: str | None = None
    inflight: int = 0
    """Calls routed here that have not finished."""
    served: int = 0
    """Calls routed here since it loaded (a per-version counter for metrics)."""
    shadow_stats: ShadowStats = field(default_factory=ShadowStats)
    loading_task: Any = None
    """The asyncio task loading it, while it loads."""

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def live(self) -> bool:
        """Takes a share of NAME's traffic now."""
        return self.status == "ready" and not self.spec.shadow and self.spec.traffic > 0


def sticky_point(who: str, name: str) -> float:
    """Where `who` falls for `name`, in [0, 100): stable across processes and restarts."""
    digest = hashlib.sha256(f"{who}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


def sticky_key(call: Call) -> str:
    """The key the split is sticky on: the API key's name, else `user`, else the call."""
    if call.caller.authenticated:
        return "key:" + call.caller.name
    user = getattr(call.body, "user", None)
    return "user:" + user if user else "call:" + call.request_id


class Registry:
    """Every deployment by name and version, in the order they were added; a Router."""

    def __init__(self) -> None:
        self._by_name: dict[str, dict[str, Deployment]] = {}

    # -- contents ------------------------------------------------------------------------

    def add(self, deployment: Deployment) -> None:
        """Registers a deployment (any status). ModelNotFoundError-free: caller checks."""
        self._by_name.setdefault(deployment.spec.name, {})[deployment.spec.version] = deployment

    def remove(self, deployment: Deployment) -> None:
        versions = self._by_name.get(deployment.spec.name, {})
        versions.pop(deployment.spec.version, None)
        if not versions:
            self._by_name.pop(deployment.spec.name, None)

    def deployments(self) -> list[Deployment]:
        return [d for versions in self._by_name.values() for d in versions.values()]

    def versions(self, name: str) -> list[Deployment]:
        return list(self._by_name.get(name, {}).values())

    def get(self, key: str) -> Deployment:
        """NAME@VERSION (or an alias) -> its deployment; ModelNotFoundError if none."""
        name, _, version = key.partition("@")
        if not version:
            raise InvalidRequestError(f"{key!r} names no version: use NAME@VERSION.")
        return self._pinned(name, version)

    def task_of(self, name: str) -> str | None:
        versions = self.versions(name)
        return versions[0].spec.task if versions else None

    # -- the Router protocol ---------------------------------------------------------------

    def route(self, call: Call) -> Route:
        """The deployment that answers `call`, with its in-flight count taken (see
        `route_to`). Raises ModelNotFoundError (404),
        InvalidRequestError (400, wrong endpoint), ServiceUnavailableError (503)."""
        requested = call.body.model
        tasks = KIND_TASKS[call.kind]
        if requested is None:
            requested = self._default_name(tasks)
        name, _, version = requested.partition("@")
        if name not in self._by_name:
            raise ModelNotFoundError(
                f"The model {requested!r} does not exist on this server; it serves "
                f"{', '.join(self.names()) or 'nothing yet'} (see GET /v1/models).",
                param="model",
            )
        task = self.task_of(name)
        if task not in tasks:
            raise InvalidRequestError(
                f"The model {name!r} serves the {task!r} task: call {ENDPOINTS[task]} with it.",
                param="model",
                code="wrong_task",
            )
        deployment = self._pinned(name, version) if version else self._split(name, call)
        if deployment.status != "ready":
            raise ServiceUnavailableError(
                f"{deployment.key} is {deployment.status}; it takes no requests now.",
                code=f"model_{deployment.status}",
                retry_after_s=2.0 if deployment.status == "loading" else None,
            )
        return self.route_to(deployment, call.kind)

    def route_to(self, deployment: Deployment, kind: str = "chat") -> Route:
        """A route to a ready deployment, its in-flight count taken; `release` gives it
        back (the registry policy does, in post_call, once per call)."""
        assert deployment.model is not None
        deployment.inflight += 1
        deployment.served += 1
        backend = deployment.model.backend
        if kind == "classify" and deployment.spec.task == "generate":
            from tokenmill.gateway.tasks import ZeroShotClassifier

            backend = ZeroShotClassifier(backend.engine, backend.timeout_s)
        return Route(deployment.key, deployment.spec.version, backend, deployment)

    @staticmethod
    def release(route: Route | None) -> None:
        if route is not None and isinstance(route.deployment, Deployment):
            route.deployment.inflight -= 1

    def names(self) -> list[str]:
        return list(self._by_name)

    def backend_for(self, model: str):
        name, _, version = model.partition("@")
        deployment = self._pinned(name, version or "stable")
        if deployment.model is None:
            raise ModelNotFoundError(f"{deployment.key} is not loaded.")
        return deployment.model.backend

    # -- resolution ------------------------------------------------------------------------

    def _default_name(self, tasks: tuple[str, ...]) -> str:
        for name in self._by_name:
            if self.task_of(name) in tasks:
                return name
        raise ModelNotFoundError(
            f"This server serves no model for the {tasks[0]!r} task; name one of "
            f"{', '.join(self.names())} in `model`.",
            param="model",
        )

    def _pinned(self, name: str, version: str) -> Deployment:
        versions = self._by_name.get(name)
        if not versions:
            raise ModelNotFoundError(f"No served model is called {name!r}.", param="model")
        if version == "stable":
            found = self.stable(name)
        elif version == "canary":
            found = self.canary(name)
        else:
            found = versions.get(version)
        if found is None:
            known = ", ".join(f"{name}@{v}" for v in versions)
            raise ModelNotFoundError(
                f"{name}@{version} does not exist on this server; it serves {known}.",
                param="model",
            )
        return found

    def stable(self, name: str) -> Deployment | None:
        """The ready, non-shadow version with the most traffic (the oldest on a tie)."""
        ready = [d for d in self.versions(name) if d.status == "ready" and not d.spec.shadow]
        return max(ready, key=lambda d: d.spec.traffic, default=None)

    def canary(self, name: str) -> Deployment | None:
        """The newest live version other than the stable one."""
        stable = self.stable(name)
        others = [d for d in self.versions(name) if d.live and d is not stable]
        return others[-1] if others else None

    def shadow_of(self, name: str) -> Deployment | None:
        """NAME's ready shadow version, if any (the newest)."""
        shadows = [d for d in self.versions(name) if d.spec.shadow and d.status == "ready"]
        return shadows[-1] if shadows else None

    def _split(self, name: str, call: Call) -> Deployment:
        live = [d for d in self.versions(name) if d.live]
        if not live:
            states = ", ".join(f"{d.key} {d.status}" for d in self.versions(name))
            raise ServiceUnavailableError(
                f"{name!r} has no version taking traffic now ({states}).",
                code="model_loading",
                retry_after_s=2.0,
            )
        total = sum(d.spec.traffic for d in live)
        point = sticky_point(sticky_key(call), name) * total / 100.0
        upto = 0.0
        for deployment in live:
            upto += deployment.spec.traffic
            if point < upto:
                return deployment
        return live[-1]
