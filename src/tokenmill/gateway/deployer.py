"""The deployer: puts ModelSpecs into the registry and takes them out, safely.

It loads versions (in the background for the admin API), keeps loading within the
memory budget, drains a version before unloading it, and saves every change to the
state file so a restart serves what was served. The registry it fills routes calls.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
from collections.abc import Awaitable, Callable

from tokenmill.errors import InvalidRequestError, TokenmillError
from tokenmill.gateway.models_file import ModelSpec, write_state
from tokenmill.gateway.registry import Deployment, LoadedModel, Registry

logger = logging.getLogger(__name__)

Loader = Callable[[ModelSpec], Awaitable[LoadedModel]]


class ConflictError(TokenmillError):
    """The change cannot be made in the registry's present state (HTTP 409)."""

    status_code = 409
    error_type = "invalid_request_error"
    default_code = "conflict"


class Deployer:
    """Owns the registry's deployments' lifecycles. Methods run on the event loop."""

    def __init__(
        self,
        loader: Loader,
        estimate: Callable[[ModelSpec], int] | None = None,
        memory_budget_bytes: int | None = None,
        drain_timeout_s: float = 600.0,
        initial: list[ModelSpec] | None = None,
        adopt_engine: Callable[[object], LoadedModel] | None = None,
        state_path: str | None = None,
        frozen: str | None = None,
    ):
        self.state_path = state_path
        """Where every change is saved (None: not saved)."""
        self.frozen = frozen
        """Why the admin API may not change this registry (None: it may): under --ray
        each replica runs its own copy, and a change would reach only one of them."""
        self._previous_stable: dict[str, str] = {}
        """NAME -> the version promote replaced, for rollback."""
        self.registry = Registry()
        self.initial = list(initial or [])
        """The models file's specs; the first is the engine the server loaded itself."""
        self._adopt_engine = adopt_engine
        self._loader = loader
        self._estimate = estimate or (lambda spec: 0)
        self.memory_budget_bytes = memory_budget_bytes
        self.drain_timeout_s = drain_timeout_s
        self._tasks: set[asyncio.Task] = set()

    # -- loading ---------------------------------------------------------------------------

    async def start(self, engine) -> None:
        """Adopts the server's engine as the first spec, then loads the others one by one
        (in the file's order). Raises the first load's error: the server fails to start
        rather than serve part of its models file."""
        first, *rest = self.initial
        assert self._adopt_engine is not None
        self.adopt(first, self._adopt_engine(engine))
        for spec in rest:
            await self.load(spec)

    def adopt(self, spec: ModelSpec, model: LoadedModel) -> Deployment:
        """Registers a model loaded elsewhere (the server's first engine) as ready."""
        deployment = Deployment(spec, status="ready", model=model)
        self.registry.add(deployment)
        return deployment

    async def load(self, spec: ModelSpec) -> Deployment:
        """Loads `spec` and waits until it is ready. Raises ConflictError (409) when it
        exists already or would exceed the memory budget, or the loader's error (the
        deployment is then kept as failed, its error on its card)."""
        deployment = self.begin_load(spec)
        await self._finish(deployment)
        if deployment.status == "failed":
            raise TokenmillError(f"{spec.key} failed to load: {deployment.error}")
        return deployment

    def begin_load(self, spec: ModelSpec, rebalance: bool = False) -> Deployment:
        """Registers `spec` as loading and loads it in the background; with `rebalance`
        (the admin API) its siblings' shares shrink in proportion to make room for its
        traffic, which it takes once ready. Raises
        ConflictError at once (nothing registered) for a duplicate or an over-budget
        load, and for a task other than its name's."""
        existing = self.registry.versions(spec.name)
        if any(d.spec.version == spec.version and d.status != "failed" for d in existing):
            raise ConflictError(f"{spec.key} exists already; unload it first or pick a version.")
        if existing and existing[0].spec.task != spec.task:
            raise ConflictError(
                f"{spec.name!r} serves the {existing[0].spec.task!r} task; {spec.key} would "
                f"serve {spec.task!r}. Use another name."
            )
        self._check_budget(spec)
        for stale in existing:
            if stale.spec.version == spec.version:
                self.registry.remove(stale)
        deployment = Deployment(spec)
        self.registry.add(deployment)
        if rebalance and any(not d.spec.shadow for d in existing) and not spec.shadow:
            self._rebalance(deployment, spec)
        elif rebalance and not spec.shadow and spec.traffic != 100.0:
            self.registry.remove(deployment)
            raise InvalidRequestError(
                f"{spec.key} would be {spec.name!r}'s only version: its traffic must be 100.",
                param="traffic",
            )
        self.save()
        task = asyncio.ensure_future(self._finish(deployment))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        deployment.loading_task = task
        return deployment

    async def _finish(self, deployment: Deployment) -> None:
        task = deployment.loading_task
        if task is not None and task is not asyncio.current_task():
            await asyncio.shield(task)
            return
        try:
            deployment.model = await self._loader(deployment.spec)
        except Exception as exc:  # noqa: BLE001 - reported on the card and in the log
            logger.error("could not load %s: %s", deployment.key, exc)
            deployment.status = "failed"
            deployment.error = str(exc)
            return
        deployment.status = "ready"
        self.save()
        logger.info("%s ready (%.0f MiB)", deployment.key, deployment.model.weight_bytes / 2**20)

    def loaded_bytes(self) -> int:
        return sum(
            d.model.weight_bytes if d.model else self._estimate(d.spec)
            for d in self.registry.deployments()
            if d.status in ("ready", "loading", "draining")
        )

    def _check_budget(self, spec: ModelSpec) -> None:
        budget = self.memory_budget_bytes
        if budget is None:
            return
        need = self._estimate(spec)
        used = self.loaded_bytes()
        if used + need <= budget:
            return
        loaded = ", ".join(
            f"{d.key} {(d.model.weight_bytes if d.model else self._estimate(d.spec)) / 2**30:.2f}"
            " GiB"
            for d in self.registry.deployments()
            if d.status in ("ready", "loading", "draining")
        )
        raise ConflictError(
            f"Loading {spec.key} needs about {need / 2**30:.2f} GiB, but {used / 2**30:.2f} of "
            f"the {budget / 2**30:.2f} GiB memory budget are taken ({loaded or 'nothing'}). "
            "Unload a version first (DELETE /admin/models/NAME@VERSION) or raise "
            "--memory-budget-gib.",
            code="memory_budget_exceeded",
        )

    # -- unloading -------------------------------------------------------------------------

    async def unload(self, deployment: Deployment) -> None:
        """`begin_unload`, then `finish_unload`."""
        self.begin_unload(deployment)
        await self.finish_unload(deployment)

    def begin_unload(self, deployment: Deployment) -> None:
        """Stops routing to it (its share goes to its siblings) and marks it draining.
        ConflictError when it is its name's last version taking traffic."""
        siblings = [
            d
            for d in self.registry.versions(deployment.spec.name)
            if d is not deployment and not d.spec.shadow and d.status == "ready"
        ]
        if deployment.spec.traffic > 0 and not siblings:
            raise ConflictError(
                f"{deployment.key} is the last version of {deployment.spec.name!r} taking "
                "traffic; load another version first."
            )
        if deployment.spec.traffic > 0:
            self._rebalance(deployment, dataclasses.replace(deployment.spec, traffic=0.0))
        deployment.status = "draining"
        self.save()

    async def finish_unload(self, deployment: Deployment) -> None:
        """Waits for a draining version's in-flight calls (at most drain_timeout_s), then
        frees it and removes it from the registry."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout_s
        while deployment.inflight > 0 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if deployment.model is not None:
            await _maybe_await(deployment.model.close())
        self.registry.remove(deployment)
        logger.info("%s unloaded", deployment.key)
        self.save()

    # -- traffic -------------------------------------------------------------------------

    def set_traffic(self, deployment: Deployment, traffic: float | None, shadow: bool | None):
        """Sets a version's traffic share (its siblings are rescaled to fill the rest in
        proportion) and/or its shadow flag; saves the state. InvalidRequestError for a
        change that leaves the name's shares not adding up to 100."""
        spec = deployment.spec
        if shadow is not None and shadow != spec.shadow:
            spec = dataclasses.replace(spec, shadow=shadow, traffic=0.0)
        if traffic is not None:
            if spec.shadow and traffic:
                raise InvalidRequestError(
                    f"{spec.key} is a shadow version: it gets a copy of the traffic, not a "
                    "share. Send shadow=false with the traffic.",
                    param="traffic",
                )
            if not 0.0 <= traffic <= 100.0:
                raise InvalidRequestError("traffic must be in [0, 100].", param="traffic")
            spec = dataclasses.replace(spec, traffic=float(traffic))
        self._rebalance(deployment, spec)
        self.save()

    def promote(self, name: str) -> Deployment:
        """The canary takes all of NAME's traffic; the old stable stays loaded at 0 for
        rollback. ConflictError when NAME has no canary."""
        canary, stable = self.registry.canary(name), self.registry.stable(name)
        if canary is None:
            raise ConflictError(f"{name!r} has no canary to promote (see GET /v1/models).")
        if stable is not None:
            self._previous_stable[name] = stable.spec.version
        self._rebalance(canary, dataclasses.replace(canary.spec, traffic=100.0))
        self.save()
        return canary

    def rollback(self, name: str) -> Deployment:
        """The version before the last promote (or, without one, the stable version)
        takes all of NAME's traffic back; the others stay loaded at 0."""
        versions = {d.spec.version: d for d in self.registry.versions(name)}
        if not versions:
            raise ConflictError(f"No served model is called {name!r}.")
        target = versions.get(self._previous_stable.get(name, ""))
        if target is None or target.status != "ready":
            target = self.registry.stable(name)
        if target is None:
            raise ConflictError(f"{name!r} has no ready version to roll back to.")
        self._previous_stable.pop(name, None)
        self._rebalance(target, dataclasses.replace(target.spec, traffic=100.0))
        self.save()
        return target

    def _rebalance(self, changed: Deployment, spec: ModelSpec) -> None:
        """Gives `changed` its new spec and scales its non-shadow siblings so the shares
        add up to 100 (equally when they had none)."""
        siblings = [
            d for d in self.registry.versions(spec.name) if d is not changed and not d.spec.shadow
        ]
        rest = 100.0 - (0.0 if spec.shadow else spec.traffic)
        if not siblings and not spec.shadow and rest > 1e-9:
            raise InvalidRequestError(
                f"{spec.key} is {spec.name!r}'s only version: its traffic must stay 100.",
                param="traffic",
            )
        total = sum(d.spec.traffic for d in siblings)
        for d in siblings:
            share = d.spec.traffic / total * rest if total > 0 else rest / len(siblings)
            d.spec = dataclasses.replace(d.spec, traffic=share)
        changed.spec = spec

    def save(self) -> None:
        """Writes every deployment's spec (not the failed or draining ones) to the state
        file, so a restart serves what is served now."""
        if self.state_path is None:
            return
        specs = [d.spec for d in self.registry.deployments() if d.status in ("ready", "loading")]
        write_state(self.state_path, specs)

    async def close(self) -> None:
        """Unloads everything (server shutdown); the loads still running are cancelled."""
        for task in list(self._tasks):
            task.cancel()
        for deployment in self.registry.deployments():
            if deployment.model is not None:
                try:
                    await _maybe_await(deployment.model.close())
                except Exception:
                    logger.exception("closing %s failed", deployment.key)


async def _maybe_await(value) -> None:
    if inspect.isawaitable(value):
        await value
